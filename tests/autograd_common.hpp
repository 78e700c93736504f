// Shared by tests/test_autograd.cpp (CPU) and tests/test_autograd_cuda.cpp: host data and the
// composed block used by both suites.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "shortconv/autograd.hpp"
#include "shortconv/optim.hpp"
#include "shortconv/shortconv.hpp"

namespace shortconv::test {

namespace ag = shortconv::autograd;

inline std::int64_t numel_of(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return n;
}

inline std::string shape_str_of(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// Uniform values in [lo, hi), reproducible from `seed`.
inline std::vector<float> uniform(std::int64_t n, std::uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& e : v) e = dist(gen);
  return v;
}

/// Sizes and host values of the composed block
///   out = W_o · (silu(conv(W_in·x + b_in, w_conv, b_conv, state)) ⊙ (W_g·x)) + b_o,  loss = mse(out, target)
struct BlockData {
  std::int64_t B, T, D, C, K;
  std::vector<float> x, w_in, b_in, w_conv, b_conv, state, w_gate, w_out, b_out, target;

  BlockData(std::int64_t B_, std::int64_t T_, std::int64_t D_, std::int64_t C_, std::int64_t K_, std::uint64_t seed)
      : B(B_), T(T_), D(D_), C(C_), K(K_) {
    // Scales keep every stage O(1), so no silu saturates and the loss is well conditioned.
    const float s_in = 1.0f / std::sqrt(static_cast<float>(D)), s_out = 1.0f / std::sqrt(static_cast<float>(C));
    x = uniform(B * T * D, seed + 1);
    w_in = uniform(C * D, seed + 2, -s_in, s_in);
    b_in = uniform(C, seed + 3, -0.2f, 0.2f);
    w_conv = uniform(C * K, seed + 4, -0.6f, 0.6f);
    b_conv = uniform(C, seed + 5, -0.2f, 0.2f);
    state = uniform(B * (K - 1) * C, seed + 6);
    w_gate = uniform(C * D, seed + 7, -2 * s_in, 2 * s_in);
    w_out = uniform(D * C, seed + 8, -2 * s_out, 2 * s_out);
    b_out = uniform(D, seed + 9, -0.2f, 0.2f);
    target = uniform(B * T * D, seed + 10, -0.5f, 0.5f);
  }

  /// Leaves in this order: x, w_in, b_in, w_conv, b_conv, state, w_gate, w_out, b_out, target.
  std::vector<std::vector<std::int64_t>> shapes() const {
    return {{B, T, D}, {C, D}, {C}, {C, K}, {C}, {B, K - 1, C}, {C, D}, {D, C}, {D}, {B, T, D}};
  }
  std::vector<std::vector<float>*> values() {
    return {&x, &w_in, &b_in, &w_conv, &b_conv, &state, &w_gate, &w_out, &b_out, &target};
  }
};

/// The block's output from its leaves (ordered as BlockData::shapes()).
inline ag::Var block_output(const std::vector<ag::Var>& v) {
  const ag::Var u = ag::linear(v[0], v[1], v[2]);
  const ag::Var s = ag::conv1d(u, v[3], {.bias = v[4], .activation = Activation::silu, .initial_state = v[5]});
  const ag::Var g = ag::linear(v[0], v[6]);
  return ag::linear(ag::mul(s, g), v[7], v[8]);
}

inline ag::Var block_loss(const std::vector<ag::Var>& v) { return ag::mse_loss(block_output(v), v[9]); }

/// Worst |a - b| / (atol + rtol·|b|) over two equally long vectors, with the index.
struct Worst {
  double ratio = 0.0;
  std::size_t index = 0;
  double a = 0.0, b = 0.0;
  std::string str() const {
    std::ostringstream os;
    os << std::setprecision(9) << "worst ratio " << ratio << " at " << index << " (" << a << " vs " << b << ")";
    return os.str();
  }
};

inline Worst compare(const std::vector<float>& a, const std::vector<float>& b, double atol, double rtol) {
  Worst w;
  EXPECT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const double r = std::fabs(static_cast<double>(a[i]) - b[i]) / (atol + rtol * std::fabs(static_cast<double>(b[i])));
    if (!(r <= w.ratio)) w = {std::isnan(r) ? INFINITY : r, i, a[i], b[i]};
  }
  return w;
}

inline double max_abs(const std::vector<float>& v) {
  double m = 0.0;
  for (float e : v) m = std::max(m, static_cast<double>(std::fabs(e)));
  return m;
}

}  // namespace shortconv::test
