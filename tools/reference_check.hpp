// Naive fp64 oracle for `shortconv check`, written from the math alone (independent of src/),
// and the tolerance comparison it is judged by.
//
//   x [B, T, C] channel-last, weight [C, K], bias [C], all flat contiguous vectors of double:
//   y[b,t,c]  = bias[c] + sum_k w[c,k] * x[b, t+k-(K-1), c]      (terms with negative time dropped)
//   dx[b,i,c] = sum_k w[c,k] * dy[b, i+K-1-k, c]                  (terms with time >= T dropped)
//   dw[c,k]   = sum_{b,t} x[b, t+k-(K-1), c] * dy[b,t,c]
//   dbias[c]  = sum_{b,t} dy[b,t,c]
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace shortconv::tool {

struct RefShape {
  std::int64_t batch = 0, seqlen = 0, channels = 0, width = 0;  // B, T, C, K
};

/// y = causal_conv1d(x, w) + bias, in double.
inline void reference_forward(const RefShape& s, const std::vector<double>& x, const std::vector<double>& w,
                              const std::vector<double>& bias, std::vector<double>& y) {
  const std::int64_t B = s.batch, T = s.seqlen, C = s.channels, K = s.width;
  y.assign(static_cast<std::size_t>(B * T * C), 0.0);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t c = 0; c < C; ++c) {
        double acc = bias[c];
        for (std::int64_t k = 0; k < K; ++k) {
          const std::int64_t src = t + k - (K - 1);  // time of x that tap k reads
          if (src >= 0) acc += w[c * K + k] * x[(b * T + src) * C + c];
        }
        y[(b * T + t) * C + c] = acc;
      }
}

/// dx, dw and dbias from dy, in double.
inline void reference_backward(const RefShape& s, const std::vector<double>& x, const std::vector<double>& w,
                               const std::vector<double>& dy, std::vector<double>& dx, std::vector<double>& dw,
                               std::vector<double>& dbias) {
  const std::int64_t B = s.batch, T = s.seqlen, C = s.channels, K = s.width;
  dx.assign(static_cast<std::size_t>(B * T * C), 0.0);
  dw.assign(static_cast<std::size_t>(C * K), 0.0);
  dbias.assign(static_cast<std::size_t>(C), 0.0);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t i = 0; i < T; ++i)
      for (std::int64_t c = 0; c < C; ++c) {
        double acc = 0.0;
        for (std::int64_t k = 0; k < K; ++k) {
          const std::int64_t t = i + K - 1 - k;  // output time that x[b, i] feeds through tap k
          if (t < T) acc += w[c * K + k] * dy[(b * T + t) * C + c];
        }
        dx[(b * T + i) * C + c] = acc;
      }
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t c = 0; c < C; ++c) {
        const double g = dy[(b * T + t) * C + c];
        dbias[c] += g;
        for (std::int64_t k = 0; k < K; ++k) {
          const std::int64_t src = t + k - (K - 1);
          if (src >= 0) dw[c * K + k] += x[(b * T + src) * C + c] * g;
        }
      }
}

/// An element passes when |a - r| <= atol + rtol * |r|.
struct Tolerance {
  double atol = 0.0;
  double rtol = 0.0;
};

/// Worst element of a comparison, measured in units of the tolerance.
struct Comparison {
  double worst = 0.0;      // max over elements of |a - r| / (atol + rtol*|r|); +inf for a non-finite a
  std::int64_t index = 0;  // flat index of the worst element (the first one on ties)
  double got = 0.0;        // a at that index
  double want = 0.0;       // r at that index
  bool pass() const { return worst <= 1.0; }
};

/// Compares `got` (the library's output, widened) against the reference `want`.
inline Comparison compare(const std::vector<double>& got, const std::vector<double>& want, Tolerance tol) {
  Comparison out;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double a = got[i], r = want[i];
    // A NaN or infinite a (e.g. the poison left in an unwritten element) is the worst possible error.
    const double err = std::isfinite(a) ? std::abs(a - r) / (tol.atol + tol.rtol * std::abs(r))
                                        : std::numeric_limits<double>::infinity();
    if (i == 0 || err > out.worst) {
      out.worst = err;
      out.index = static_cast<std::int64_t>(i);
      out.got = a;
      out.want = r;
    }
  }
  return out;
}

}  // namespace shortconv::tool
