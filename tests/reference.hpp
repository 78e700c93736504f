// Naive fp64 oracle for the depthwise causal conv1d. Written from the math alone and independent
// of src/: plain loops over dense row-major [B, T, C] / [C, K] arrays of doubles.
// Each result also carries the sum of the absolute values of its terms, which scales the
// tolerance of a low-precision result (its rounding error is relative to that, not to |result|).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace shortconv::test {

struct RefShape {
  std::int64_t B, T, C, K;
};

struct RefResult {
  std::vector<double> value;    // the exact result of the formula on the given inputs
  std::vector<double> abs_sum;  // sum over its terms of |term|
};

/// y[b,t,c] = bias[c] + sum_k w[c,k] * x[b, t+k-(K-1), c]; terms before t = 0 are absent.
inline RefResult ref_forward(const RefShape& s, const std::vector<double>& x, const std::vector<double>& w,
                             const std::vector<double>* bias) {
  RefResult r{std::vector<double>(s.B * s.T * s.C), std::vector<double>(s.B * s.T * s.C)};
  for (std::int64_t b = 0; b < s.B; ++b)
    for (std::int64_t t = 0; t < s.T; ++t)
      for (std::int64_t c = 0; c < s.C; ++c) {
        double acc = bias ? (*bias)[c] : 0.0;
        double mag = std::fabs(acc);
        for (std::int64_t k = 0; k < s.K; ++k) {
          const std::int64_t src = t + k - (s.K - 1);
          if (src < 0) continue;
          const double term = w[c * s.K + k] * x[(b * s.T + src) * s.C + c];
          acc += term;
          mag += std::fabs(term);
        }
        r.value[(b * s.T + t) * s.C + c] = acc;
        r.abs_sum[(b * s.T + t) * s.C + c] = mag;
      }
  return r;
}

/// dx[b,i,c] = sum_k w[c,k] * dy[b, i+K-1-k, c]; terms past T are absent.
inline RefResult ref_dx(const RefShape& s, const std::vector<double>& w, const std::vector<double>& dy) {
  RefResult r{std::vector<double>(s.B * s.T * s.C), std::vector<double>(s.B * s.T * s.C)};
  for (std::int64_t b = 0; b < s.B; ++b)
    for (std::int64_t i = 0; i < s.T; ++i)
      for (std::int64_t c = 0; c < s.C; ++c) {
        double acc = 0.0, mag = 0.0;
        for (std::int64_t k = 0; k < s.K; ++k) {
          const std::int64_t t = i + s.K - 1 - k;
          if (t >= s.T) continue;
          const double term = w[c * s.K + k] * dy[(b * s.T + t) * s.C + c];
          acc += term;
          mag += std::fabs(term);
        }
        r.value[(b * s.T + i) * s.C + c] = acc;
        r.abs_sum[(b * s.T + i) * s.C + c] = mag;
      }
  return r;
}

/// dw[c,k] = sum_{b,t} x[b, t+k-(K-1), c] * dy[b,t,c].
inline RefResult ref_dw(const RefShape& s, const std::vector<double>& x, const std::vector<double>& dy) {
  RefResult r{std::vector<double>(s.C * s.K, 0.0), std::vector<double>(s.C * s.K, 0.0)};
  for (std::int64_t c = 0; c < s.C; ++c)
    for (std::int64_t k = 0; k < s.K; ++k)
      for (std::int64_t b = 0; b < s.B; ++b)
        for (std::int64_t t = 0; t < s.T; ++t) {
          const std::int64_t src = t + k - (s.K - 1);
          if (src < 0) continue;
          const double term = x[(b * s.T + src) * s.C + c] * dy[(b * s.T + t) * s.C + c];
          r.value[c * s.K + k] += term;
          r.abs_sum[c * s.K + k] += std::fabs(term);
        }
  return r;
}

/// dbias[c] = sum_{b,t} dy[b,t,c].
inline RefResult ref_dbias(const RefShape& s, const std::vector<double>& dy) {
  RefResult r{std::vector<double>(s.C, 0.0), std::vector<double>(s.C, 0.0)};
  for (std::int64_t b = 0; b < s.B; ++b)
    for (std::int64_t t = 0; t < s.T; ++t)
      for (std::int64_t c = 0; c < s.C; ++c) {
        r.value[c] += dy[(b * s.T + t) * s.C + c];
        r.abs_sum[c] += std::fabs(dy[(b * s.T + t) * s.C + c]);
      }
  return r;
}

}  // namespace shortconv::test

namespace shortconv::test {

// ---- one sequence with the sequence-model features ----------------------------------------
// x [L, C], init [K-1, C] (or empty: absent terms), w [C, K], bias [C] (or empty), silu.
// xe[q] for q in [-(K-1), L): init[q + K-1] when q < 0 (absent without init), else x[q].

struct SeqInputs {
  std::int64_t L = 0, C = 0, K = 0;
  std::vector<double> x, init, w, bias;  // init and bias may be empty
  bool silu = false;
};

struct SeqForward {
  RefResult y;                   // [L, C]
  std::vector<double> z;         // pre-activation [L, C]
  std::vector<double> z_abs;     // sum |terms| of z
  std::vector<double> final_state;  // [K-1, C]
};

inline double ref_sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }

inline SeqForward ref_seq_forward(const SeqInputs& in) {
  const std::int64_t L = in.L, C = in.C, K = in.K;
  SeqForward f{{std::vector<double>(L * C), std::vector<double>(L * C)}, std::vector<double>(L * C), std::vector<double>(L * C),
               std::vector<double>((K - 1) * C, 0.0)};
  auto xe = [&](std::int64_t q, std::int64_t c, bool& present) {
    present = q >= 0 || !in.init.empty();
    if (q >= 0) return in.x[q * C + c];
    return in.init.empty() ? 0.0 : in.init[(q + K - 1) * C + c];
  };
  for (std::int64_t p = 0; p < L; ++p)
    for (std::int64_t c = 0; c < C; ++c) {
      double z = in.bias.empty() ? 0.0 : in.bias[c];
      double mag = std::fabs(z);
      for (std::int64_t k = 0; k < K; ++k) {
        bool present = false;
        const double v = xe(p + k - (K - 1), c, present);
        if (!present) continue;
        z += in.w[c * K + k] * v;
        mag += std::fabs(in.w[c * K + k] * v);
      }
      f.z[p * C + c] = z;
      f.z_abs[p * C + c] = mag;
      // |silu'| <= 1.1: an error in z moves y by at most about as much.
      f.y.value[p * C + c] = in.silu ? z * ref_sigmoid(z) : z;
      f.y.abs_sum[p * C + c] = in.silu ? 1.1 * mag + std::fabs(f.y.value[p * C + c]) : mag;
    }
  for (std::int64_t j = 0; j < K - 1; ++j)
    for (std::int64_t c = 0; c < C; ++c) {
      bool present = false;
      const double v = xe(L - (K - 1) + j, c, present);
      f.final_state[j * C + c] = present ? v : 0.0;
    }
  return f;
}

struct SeqBackward {
  RefResult dx;     // [L, C]
  RefResult dinit;  // [K-1, C]
  RefResult dw;     // [C, K]
  RefResult db;     // [C]
};

/// Gradients of one sequence for upstream dy [L, C] and d_final_state dfs [K-1, C] (may be empty).
inline SeqBackward ref_seq_backward(const SeqInputs& in, const std::vector<double>& dy, const std::vector<double>& dfs) {
  const std::int64_t L = in.L, C = in.C, K = in.K;
  const SeqForward f = ref_seq_forward(in);
  // g = dz, with a magnitude that bounds its error from a slightly wrong z (|silu''| <= 0.5).
  std::vector<double> g(L * C), g_abs(L * C);
  for (std::int64_t i = 0; i < L * C; ++i) {
    if (in.silu) {
      const double s = ref_sigmoid(f.z[i]);
      g[i] = dy[i] * s * (1.0 + f.z[i] * (1.0 - s));
      g_abs[i] = std::fabs(g[i]) + 0.5 * std::fabs(dy[i]) * f.z_abs[i];
    } else {
      g[i] = dy[i];
      g_abs[i] = std::fabs(dy[i]);
    }
  }
  SeqBackward b{{std::vector<double>(L * C, 0.0), std::vector<double>(L * C, 0.0)},
                {std::vector<double>((K - 1) * C, 0.0), std::vector<double>((K - 1) * C, 0.0)},
                {std::vector<double>(C * K, 0.0), std::vector<double>(C * K, 0.0)},
                {std::vector<double>(C, 0.0), std::vector<double>(C, 0.0)}};
  // dxe[q] = sum_k w[k] g[q+K-1-k] for q in [-(K-1), L), plus dfs where xe feeds final_state.
  for (std::int64_t q = -(K - 1); q < L; ++q)
    for (std::int64_t c = 0; c < C; ++c) {
      double acc = 0.0, mag = 0.0;
      for (std::int64_t k = 0; k < K; ++k) {
        const std::int64_t t = q + K - 1 - k;
        if (t < 0 || t >= L) continue;
        acc += in.w[c * K + k] * g[t * C + c];
        mag += std::fabs(in.w[c * K + k]) * g_abs[t * C + c];
      }
      const std::int64_t j = q - (L - (K - 1));  // final_state row fed by xe[q]
      if (!dfs.empty() && j >= 0 && j < K - 1) {
        acc += dfs[j * C + c];
        mag += std::fabs(dfs[j * C + c]);
      }
      if (q >= 0) {
        b.dx.value[q * C + c] = acc;
        b.dx.abs_sum[q * C + c] = mag;
      } else {
        b.dinit.value[(q + K - 1) * C + c] = acc;
        b.dinit.abs_sum[(q + K - 1) * C + c] = mag;
      }
    }
  for (std::int64_t c = 0; c < C; ++c) {
    for (std::int64_t t = 0; t < L; ++t) {
      b.db.value[c] += g[t * C + c];
      b.db.abs_sum[c] += g_abs[t * C + c];
      for (std::int64_t k = 0; k < K; ++k) {
        const std::int64_t q = t + k - (K - 1);
        double v;
        if (q >= 0) {
          v = in.x[q * C + c];
        } else if (!in.init.empty()) {
          v = in.init[(q + K - 1) * C + c];
        } else {
          continue;
        }
        b.dw.value[c * K + k] += v * g[t * C + c];
        b.dw.abs_sum[c * K + k] += std::fabs(v) * g_abs[t * C + c];
      }
    }
  }
  return b;
}

}  // namespace shortconv::test
