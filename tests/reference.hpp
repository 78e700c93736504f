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
