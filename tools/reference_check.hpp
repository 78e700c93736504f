// Naive fp64 oracle for `shortconv check`, written from the math alone (independent of src/), and
// the tolerance comparison it is judged by. One call handles one sequence; the caller loops over
// batch rows, varlen sequences or decode rows. Plain loops over flat row-major spans of double.
//
//   x [L, C], weight [C, K], bias [C] (or none), init [K-1, C] (or none)
//   xe[q]     = x[q] for q in [0, L); init[q + K-1] for q in [-(K-1), 0); absent without init
//   z[t,c]    = bias[c] + sum_k w[c,k] * xe[t+k-(K-1), c]        (absent terms dropped)
//   y         = z, or silu(z) = z * sigmoid(z)
//   final[j]  = xe[L-(K-1)+j]  for j in [0, K-1)                  (0 where xe is absent)
//   g         = dz = dy, or dy * silu'(z)
//   dxe[q,c]  = sum_k w[c,k] * g[q+K-1-k, c]  (+ dfinal[q-(L-(K-1)), c] where xe[q] feeds final)
//   dx = dxe on [0, L), d_init = dxe on [-(K-1), 0)
//   dw[c,k]  += sum_t xe[t+k-(K-1), c] * g[t,c];   dbias[c] += sum_t g[t,c]
//
// Next to each value goes a magnitude: the sum of the |terms| that make it up (the bound used by
// tests/reference.hpp, mirrored here). A result computed in f32 and rounded to its dtype is off by
// a small multiple of its dtype's epsilon times that sum, whatever cancellation made |result| small.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

namespace shortconv::tool {

/// Values and the sums of |terms| behind them, same length.
struct RefValues {
  std::vector<double> value;
  std::vector<double> mag;

  RefValues() = default;
  explicit RefValues(std::size_t n) : value(n, 0.0), mag(n, 0.0) {}
};

/// One sequence and the parameters it sees.
struct RefSequence {
  std::int64_t length = 0, channels = 0, width = 0;  // L, C, K
  std::span<const double> x;       // [L, C]
  std::span<const double> init;    // [K-1, C], or empty: no terms before t = 0
  std::span<const double> weight;  // [C, K]
  std::span<const double> bias;    // [C], or empty
  bool silu = false;
};

namespace detail {
inline double sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }

// xe[q, c]; `present` is false where the term is absent (before t = 0 without init).
inline double extended(const RefSequence& s, std::int64_t q, std::int64_t c, bool& present) {
  const std::int64_t C = s.channels, K = s.width;
  present = q >= 0 || !s.init.empty();
  if (q >= 0) return s.x[q * C + c];
  return s.init.empty() ? 0.0 : s.init[(q + K - 1) * C + c];
}

// z and its magnitude at [t, c].
inline void pre_activation(const RefSequence& s, std::int64_t t, std::int64_t c, double& z, double& mag) {
  const std::int64_t K = s.width;
  z = s.bias.empty() ? 0.0 : s.bias[c];
  mag = std::abs(z);
  for (std::int64_t k = 0; k < K; ++k) {
    bool present = false;
    const double v = extended(s, t + k - (K - 1), c, present);
    if (!present) continue;
    z += s.weight[c * K + k] * v;
    mag += std::abs(s.weight[c * K + k] * v);
  }
}
}  // namespace detail

/// y [L, C] (values and magnitudes, written from flat index y_off of `y`) and, when `final_state` is not
/// empty, the sequence's final state [K-1, C] (an exact copy of inputs: magnitude 0).
inline void reference_forward(const RefSequence& s, RefValues& y, std::int64_t y_off, std::span<double> final_state) {
  const std::int64_t L = s.length, C = s.channels, K = s.width;
  for (std::int64_t t = 0; t < L; ++t)
    for (std::int64_t c = 0; c < C; ++c) {
      double z = 0.0, mag = 0.0;
      detail::pre_activation(s, t, c, z, mag);
      const std::int64_t i = y_off + t * C + c;
      y.value[i] = s.silu ? z * detail::sigmoid(z) : z;
      // |silu'| <= 1.1: an error in z moves y by at most about as much (as tests/reference.hpp).
      y.mag[i] = s.silu ? 1.1 * mag + std::abs(y.value[i]) : mag;
    }
  if (final_state.empty()) return;
  for (std::int64_t j = 0; j < K - 1; ++j)
    for (std::int64_t c = 0; c < C; ++c) {
      bool present = false;
      const double v = detail::extended(s, L - (K - 1) + j, c, present);
      final_state[j * C + c] = present ? v : 0.0;
    }
}

/// Gradients of one sequence for upstream dy [L, C] and d_final_state dfinal [K-1, C] (or empty).
/// dx goes to `dx` at dx_off; d_init [K-1, C] to `dinit` at dinit_off unless dinit is null; dw
/// [C, K] and dbias [C] are accumulated (the caller zeroes them once for all sequences).
inline void reference_backward(const RefSequence& s, std::span<const double> dy, std::span<const double> dfinal,
                               RefValues& dx, std::int64_t dx_off, RefValues* dinit, std::int64_t dinit_off,
                               RefValues& dw, RefValues& dbias) {
  const std::int64_t L = s.length, C = s.channels, K = s.width;
  // g = dz and its magnitude; with silu, an error in z moves g by at most 0.5 |dy| per unit (|silu''| <= 0.5).
  std::vector<double> g(static_cast<std::size_t>(L * C)), g_mag(static_cast<std::size_t>(L * C));
  for (std::int64_t t = 0; t < L; ++t)
    for (std::int64_t c = 0; c < C; ++c) {
      const std::int64_t i = t * C + c;
      if (!s.silu) {
        g[i] = dy[i];
        g_mag[i] = std::abs(dy[i]);
        continue;
      }
      double z = 0.0, z_mag = 0.0;
      detail::pre_activation(s, t, c, z, z_mag);
      const double sg = detail::sigmoid(z);
      g[i] = dy[i] * sg * (1.0 + z * (1.0 - sg));
      g_mag[i] = std::abs(g[i]) + 0.5 * std::abs(dy[i]) * z_mag;
    }
  for (std::int64_t q = -(K - 1); q < L; ++q) {
    if (q < 0 && dinit == nullptr) continue;
    for (std::int64_t c = 0; c < C; ++c) {
      double acc = 0.0, mag = 0.0;
      for (std::int64_t k = 0; k < K; ++k) {
        const std::int64_t t = q + K - 1 - k;  // output time that xe[q] feeds through tap k
        if (t < 0 || t >= L) continue;
        acc += s.weight[c * K + k] * g[t * C + c];
        mag += std::abs(s.weight[c * K + k]) * g_mag[t * C + c];
      }
      const std::int64_t j = q - (L - (K - 1));  // final_state row that xe[q] becomes
      if (!dfinal.empty() && j >= 0 && j < K - 1) {
        acc += dfinal[j * C + c];
        mag += std::abs(dfinal[j * C + c]);
      }
      RefValues& out = q >= 0 ? dx : *dinit;
      const std::int64_t i = q >= 0 ? dx_off + q * C + c : dinit_off + (q + K - 1) * C + c;
      out.value[i] = acc;
      out.mag[i] = mag;
    }
  }
  for (std::int64_t t = 0; t < L; ++t)
    for (std::int64_t c = 0; c < C; ++c) {
      const double gv = g[t * C + c], gm = g_mag[t * C + c];
      dbias.value[c] += gv;
      dbias.mag[c] += gm;
      for (std::int64_t k = 0; k < K; ++k) {
        bool present = false;
        const double v = detail::extended(s, t + k - (K - 1), c, present);
        if (!present) continue;
        dw.value[c * K + k] += v * gv;
        dw.mag[c * K + k] += std::abs(v) * gm;
      }
    }
}

/// An element passes when |a - r| <= atol + rtol * (sum of |terms| of r).
struct Tolerance {
  double atol = 0.0;
  double rtol = 0.0;
};

/// Worst element of a comparison, measured in units of the tolerance.
struct Comparison {
  double worst = 0.0;      // max over elements of |a - r| / (atol + rtol*mag); +inf for a non-finite a
  std::int64_t index = 0;  // flat index (into the full output) of the worst element, the first on ties
  double got = 0.0;        // a at that index
  double want = 0.0;       // r at that index
  std::int64_t count = 0;  // elements compared
  bool pass() const { return worst <= 1.0; }
};

/// Compares `got` (the library's output, widened) against the reference at the flat indices
/// `select` (every element when empty).
inline Comparison compare(const std::vector<double>& got, const RefValues& want, Tolerance tol,
                          std::span<const std::int64_t> select = {}) {
  Comparison out;
  const std::int64_t n = select.empty() ? static_cast<std::int64_t>(want.value.size())
                                        : static_cast<std::int64_t>(select.size());
  for (std::int64_t e = 0; e < n; ++e) {
    const std::int64_t i = select.empty() ? e : select[e];
    const double a = got[i], r = want.value[i];
    // A NaN or infinite a (e.g. the poison left in an unwritten element) is the worst possible error.
    const double err = std::isfinite(a) ? std::abs(a - r) / (tol.atol + tol.rtol * want.mag[i])
                                        : std::numeric_limits<double>::infinity();
    if (e == 0 || err > out.worst) {
      out.worst = err;
      out.index = i;
      out.got = a;
      out.want = r;
    }
  }
  out.count = n;
  return out;
}

}  // namespace shortconv::tool
