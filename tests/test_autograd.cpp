// The autograd tape on the CPU: finite-difference gradient checks of every op and of a composed
// block, gradient accumulation, errors on misuse, one-step optimizer results against a hand
// computation, and the caching allocator (no device allocation once warm, nothing left after).
//
// Finite differences in f32, and why that is enough here. The library's conv1d kernels are f32
// only, so the graph under test runs in f32 throughout; instead of an f64 path, the difference
// quotient is made accurate:
//   * The scalar is L = Σ_i y_i·R_i with R fixed random weights (or the op's own one-element
//     output; the block uses mean((y - target)²)), summed in double on the host from the f32
//     forward output y. Perturbing one input element changes only the y_i that depend on it;
//     every other y_i is recomputed bitwise identically (the kernels are deterministic), so its
//     term cancels exactly between L(θ+h) and L(θ-h). The step is the difference of the two
//     rounded perturbed inputs, not 2h.
//   * Ops linear or quadratic in each single input element (linear, conv1d without SiLU, mul,
//     add, sum, mean, mse_loss): (L(θ+h) - L(θ-h)) / 2h is exact in exact arithmetic for any h
//     (the third derivative is zero), so h = 0.5 and only rounding is left: an affected y_i is
//     off by ≲ k·2⁻²⁴·Σ|terms| (k ≤ 10 terms of size ≤ 3: ≲ 2e-6), which dividing by 2h = 1 does
//     not amplify. atol 1e-5, rtol 1e-4 (worst seen: 4e-7).
//   * With SiLU (silu, conv1d + SiLU) L is not polynomial: central differences have truncation
//     error (h²/6)·|∂³L/∂θ³|. With h = 1e-2, |d³silu/dz³| < 0.5 and a bias element feeding up
//     to 14 outputs, truncation ≲ 1.7e-5·7 ≈ 1e-4 at most; rounding ≲ 2e-6 / (2h) = 1e-4.
//     atol 1e-4, rtol 1e-3 (worst seen: 7e-6).
//   * The composed block (SiLU inside; L = mean((y - target)²) over 48 outputs, so gradients are
//     ~1e-3): truncation ≲ (1e-4/6)·|∂³L| ≈ 2e-6 with |∂³L| ≲ 0.1 here, rounding ≲ 2e-6·
//     |y - target|·2/48 / (2h) ≈ 1e-6. atol 1e-5 (1% of a typical gradient), rtol 2e-3 (worst
//     seen: 2.3e-6, on b_in, whose element feeds every token through SiLU).
// SHORTCONV_FD_VERBOSE=1 prints the worst element of every check.
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <numeric>

#include "autograd_common.hpp"

namespace shortconv::test {
namespace {

using Build = std::function<ag::Var(const std::vector<ag::Var>&)>;

// A loss other than sum(y * R): on the tape (from y and the leaves) and on the host in double
// (from y and the leaf values).
using TapeLoss = std::function<ag::Var(const ag::Var&, const std::vector<ag::Var>&)>;
using HostLoss = std::function<double(const std::vector<float>&, const std::vector<std::vector<float>>&)>;

struct FdCase {
  std::string name;
  std::vector<std::vector<std::int64_t>> shapes;
  std::vector<std::vector<float>> values;
  Build build;
  double h = 0.5;
  double atol = 1e-5;
  double rtol = 1e-4;
  std::vector<bool> requires_grad;  // default: every leaf
  TapeLoss tape_loss = {};
  HostLoss host_loss = {};
};

void check_gradients(FdCase c) {
  SCOPED_TRACE(c.name);
  if (c.requires_grad.empty()) c.requires_grad.assign(c.shapes.size(), true);
  ag::Tape tape;
  auto leaves = [&](const std::vector<std::vector<float>>& values) {
    std::vector<ag::Var> v;
    for (std::size_t i = 0; i < c.shapes.size(); ++i) v.push_back(tape.input(c.shapes[i], values[i], c.requires_grad[i]));
    return v;
  };

  // Analytic: the tape's backward of L = sum(y * R) (or of y itself when it is one element).
  std::vector<ag::Var> v = leaves(c.values);
  ag::Var y = c.build(v);
  std::vector<float> R = y.numel() == 1 ? std::vector<float>{1.0f} : uniform(y.numel(), 977, -1.0f, 1.0f);
  const ag::Var loss = c.tape_loss ? c.tape_loss(y, v) : y.numel() == 1 ? y : ag::sum(ag::mul(y, tape.input(y.shape(), R)));
  tape.backward(loss);
  std::vector<std::vector<float>> analytic(c.shapes.size());
  for (std::size_t i = 0; i < c.shapes.size(); ++i)
    if (c.requires_grad[i]) analytic[i] = v[i].grad_to_host();
  tape.reset();

  // Finite differences of the same L, summed in double on the host.
  std::vector<std::vector<float>> values = c.values;
  auto L = [&] {
    const std::vector<float> out = c.build(leaves(values)).to_host();
    tape.reset();
    if (c.host_loss) return c.host_loss(out, values);
    double s = 0.0;
    for (std::size_t i = 0; i < out.size(); ++i) s += static_cast<double>(out[i]) * R[i];
    return s;
  };
  for (std::size_t i = 0; i < c.shapes.size(); ++i) {
    if (!c.requires_grad[i]) continue;
    std::vector<float> fd(values[i].size());
    for (std::size_t j = 0; j < values[i].size(); ++j) {
      const float v0 = values[i][j];
      const float plus = static_cast<float>(v0 + c.h), minus = static_cast<float>(v0 - c.h);
      values[i][j] = plus;
      const double lp = L();
      values[i][j] = minus;
      const double lm = L();
      values[i][j] = v0;
      fd[j] = static_cast<float>((lp - lm) / (static_cast<double>(plus) - minus));
    }
    const Worst w = compare(analytic[i], fd, c.atol, c.rtol);
    if (std::getenv("SHORTCONV_FD_VERBOSE") != nullptr)  // prints the margins behind the tolerances
      std::printf("  fd %-50s leaf %zu: %s\n", c.name.c_str(), i, w.str().c_str());
    EXPECT_LE(w.ratio, 1.0) << "leaf " << i << " " << shape_str_of(c.shapes[i]) << ": analytic vs FD, " << w.str();
  }
}

std::vector<float> vals(const std::vector<std::int64_t>& shape, std::uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  return uniform(numel_of(shape), seed, lo, hi);
}

// ---- finite differences, op by op ----------------------------------------------------------

TEST(AutogradFd, Linear) {
  check_gradients({"linear with bias", {{2, 3, 5}, {4, 5}, {4}}, {vals({2, 3, 5}, 1), vals({4, 5}, 2), vals({4}, 3)},
                   [](const std::vector<ag::Var>& v) { return ag::linear(v[0], v[1], v[2]); }});
  check_gradients({"linear without bias, rank 2", {{7, 3}, {6, 3}}, {vals({7, 3}, 4), vals({6, 3}, 5)},
                   [](const std::vector<ag::Var>& v) { return ag::linear(v[0], v[1]); }});
  check_gradients({"linear y = x xᵀ (x used as input and weight)", {{4, 4}}, {vals({4, 4}, 6)},
                   [](const std::vector<ag::Var>& v) { return ag::linear(v[0], v[0]); }});
}

TEST(AutogradFd, Conv1d) {
  check_gradients({"conv1d plain", {{2, 7, 5}, {5, 3}}, {vals({2, 7, 5}, 11), vals({5, 3}, 12)},
                   [](const std::vector<ag::Var>& v) { return ag::conv1d(v[0], v[1]); }});
  check_gradients({"conv1d bias + state (linear)", {{2, 7, 5}, {5, 3}, {5}, {2, 2, 5}},
                   {vals({2, 7, 5}, 13), vals({5, 3}, 14), vals({5}, 15), vals({2, 2, 5}, 16)},
                   [](const std::vector<ag::Var>& v) {
                     return ag::conv1d(v[0], v[1], {.bias = v[2], .activation = Activation::none, .initial_state = v[3]});
                   }});
  FdCase silu_case{"conv1d bias + SiLU + state", {{2, 7, 5}, {5, 3}, {5}, {2, 2, 5}},
                   {vals({2, 7, 5}, 17), vals({5, 3}, 18), vals({5}, 19), vals({2, 2, 5}, 20)},
                   [](const std::vector<ag::Var>& v) {
                     return ag::conv1d(v[0], v[1], {.bias = v[2], .activation = Activation::silu, .initial_state = v[3]});
                   }};
  silu_case.h = 1e-2, silu_case.atol = 1e-4, silu_case.rtol = 1e-3;
  check_gradients(silu_case);
  FdCase short_case{"conv1d T < K with SiLU and state", {{3, 2, 4}, {4, 5}, {3, 4, 4}},
                    {vals({3, 2, 4}, 21), vals({4, 5}, 22), vals({3, 4, 4}, 23)},
                    [](const std::vector<ag::Var>& v) {
                      return ag::conv1d(v[0], v[1], {.bias = {}, .activation = Activation::silu, .initial_state = v[2]});
                    }};
  short_case.h = 1e-2, short_case.atol = 1e-4, short_case.rtol = 1e-3;
  check_gradients(short_case);
  // x feeds two convolutions: the second contribution to dx goes through the scratch-and-add path.
  check_gradients({"conv1d input reused", {{2, 6, 3}, {3, 2}, {3, 4}}, {vals({2, 6, 3}, 24), vals({3, 2}, 25), vals({3, 4}, 26)},
                   [](const std::vector<ag::Var>& v) { return ag::add(ag::conv1d(v[0], v[1]), ag::conv1d(v[0], v[2])); }});
}

TEST(AutogradFd, Silu) {
  FdCase c{"silu", {{3, 7}}, {vals({3, 7}, 31, -4.0f, 4.0f)},
           [](const std::vector<ag::Var>& v) { return ag::silu(v[0]); }};
  c.h = 1e-2, c.atol = 1e-4, c.rtol = 1e-3;
  check_gradients(c);
}

TEST(AutogradFd, MulAddSumMean) {
  check_gradients({"mul", {{4, 6}, {4, 6}}, {vals({4, 6}, 41), vals({4, 6}, 42)},
                   [](const std::vector<ag::Var>& v) { return ag::mul(v[0], v[1]); }});
  check_gradients({"mul(a, a)", {{4, 6}}, {vals({4, 6}, 43)}, [](const std::vector<ag::Var>& v) { return v[0] * v[0]; }});
  check_gradients({"add", {{2, 3, 4}, {2, 3, 4}}, {vals({2, 3, 4}, 44), vals({2, 3, 4}, 45)},
                   [](const std::vector<ag::Var>& v) { return v[0] + v[1]; }});
  check_gradients({"add(a, a)", {{5}}, {vals({5}, 46)}, [](const std::vector<ag::Var>& v) { return ag::add(v[0], v[0]); }});
  check_gradients({"sum", {{5, 7}}, {vals({5, 7}, 47)}, [](const std::vector<ag::Var>& v) { return ag::sum(v[0]); }});
  check_gradients({"mean", {{5, 7}}, {vals({5, 7}, 48)}, [](const std::vector<ag::Var>& v) { return ag::mean(v[0]); }});
  check_gradients({"only b requires a gradient", {{3, 3}, {3, 3}}, {vals({3, 3}, 49), vals({3, 3}, 50)},
                   [](const std::vector<ag::Var>& v) { return ag::mul(v[0], v[1]); }, 0.5, 1e-5, 1e-4, {false, true}});
}

TEST(AutogradFd, MseLoss) {
  check_gradients({"mse_loss, both sides", {{3, 8}, {3, 8}}, {vals({3, 8}, 51), vals({3, 8}, 52)},
                   [](const std::vector<ag::Var>& v) { return ag::mse_loss(v[0], v[1]); }});
  check_gradients({"mse_loss(a, a) = 0", {{6}}, {vals({6}, 53)},
                   [](const std::vector<ag::Var>& v) { return ag::mse_loss(v[0], v[0]); }});
}

TEST(AutogradFd, ComposedBlock) {
  BlockData d(2, 6, 4, 6, 3, 60);
  FdCase c{"block", d.shapes(), {}, block_output};
  for (auto* v : d.values()) c.values.push_back(*v);
  c.h = 1e-2, c.atol = 1e-5, c.rtol = 2e-3;
  c.tape_loss = [](const ag::Var& y, const std::vector<ag::Var>& v) { return ag::mse_loss(y, v[9]); };
  c.host_loss = [](const std::vector<float>& y, const std::vector<std::vector<float>>& values) {
    double s = 0.0;
    for (std::size_t i = 0; i < y.size(); ++i) s += (static_cast<double>(y[i]) - values[9][i]) * (y[i] - values[9][i]);
    return s / static_cast<double>(y.size());
  };
  check_gradients(c);
}

// ---- accumulation ----------------------------------------------------------------------------

TEST(AutogradAccumulate, VarUsedSeveralTimes) {
  ag::Tape tape;
  const std::vector<float> a0 = vals({9}, 70);
  const ag::Var a = tape.input({9}, a0, true);
  tape.backward(ag::sum(ag::add(ag::mul(a, a), a)));  // d/da Σ (a² + a) = 2a + 1
  const std::vector<float> g = a.grad_to_host();
  for (std::size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g[i], 2.0f * a0[i] + 1.0f, 1e-6f) << i;
}

TEST(AutogradAccumulate, ParameterUsedTwiceSumsBothUses) {
  const std::vector<float> w0 = vals({3, 4}, 71), x1 = vals({5, 4}, 72), x2 = vals({5, 4}, 73);
  // One parameter in two linears ...
  ag::Parameter w("w", {3, 4});
  w.copy_from_host(w0);
  ag::Tape tape;
  const ag::Var wv = tape.param(w);
  const std::size_t nodes = tape.size();
  EXPECT_EQ(tape.param(w).value().data(), wv.value().data());
  EXPECT_EQ(tape.size(), nodes) << "binding a parameter twice records it once";
  tape.backward(ag::sum(ag::add(ag::linear(tape.input({5, 4}, x1), wv), ag::linear(tape.input({5, 4}, x2), tape.param(w)))));
  const std::vector<float> both = w.grad_to_host();
  tape.reset();
  // ... against two separate parameters with the same value.
  ag::Parameter w1("w1", {3, 4}), w2("w2", {3, 4});
  w1.copy_from_host(w0);
  w2.copy_from_host(w0);
  tape.backward(ag::sum(ag::add(ag::linear(tape.input({5, 4}, x1), tape.param(w1)),
                                ag::linear(tape.input({5, 4}, x2), tape.param(w2)))));
  const std::vector<float> g1 = w1.grad_to_host(), g2 = w2.grad_to_host();
  for (std::size_t i = 0; i < both.size(); ++i) EXPECT_NEAR(both[i], g1[i] + g2[i], 1e-5f) << i;
}

TEST(AutogradAccumulate, UnreachedParameterGetsZeroGradient) {
  ag::Parameter used("used", {4}), unused("unused", {4});
  used.copy_from_host(vals({4}, 74));
  ag::Tape tape;
  // A stale gradient from an earlier graph must not survive.
  tape.backward(ag::sum(tape.param(unused)));
  EXPECT_EQ(unused.grad_to_host(), std::vector<float>(4, 1.0f));
  tape.reset();
  const ag::Var u = tape.param(unused);
  tape.backward(ag::sum(tape.param(used)));
  EXPECT_EQ(unused.grad_to_host(), std::vector<float>(4, 0.0f));
  EXPECT_EQ(used.grad_to_host(), std::vector<float>(4, 1.0f));
  EXPECT_NO_THROW(u.grad());
}

// ---- errors ----------------------------------------------------------------------------------

// EXPECT_THROW plus a check of the message.
#define EXPECT_INVALID(stmt, text)                                                   \
  do {                                                                               \
    try {                                                                            \
      stmt;                                                                          \
      ADD_FAILURE() << "no exception from " #stmt;                                   \
    } catch (const InvalidArgument& e) {                                             \
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();    \
    }                                                                                \
  } while (0)

TEST(AutogradErrors, BackwardTwiceWithoutReset) {
  ag::Tape tape;
  const ag::Var a = tape.input({3}, vals({3}, 80), true);
  const ag::Var loss = ag::sum(a);
  tape.backward(loss);
  EXPECT_INVALID(tape.backward(loss), "called twice");
  tape.reset();
  const ag::Var b = tape.input({3}, vals({3}, 81), true);
  EXPECT_NO_THROW(tape.backward(ag::sum(b)));
}

TEST(AutogradErrors, VarsOfDifferentTapes) {
  ag::Tape t1, t2;
  const ag::Var a = t1.input({3}, vals({3}, 82)), b = t2.input({3}, vals({3}, 83));
  EXPECT_INVALID(ag::add(a, b), "different tape");
  EXPECT_INVALID(ag::linear(t1.input({2, 3}, vals({2, 3}, 84)), t2.input({4, 3}, vals({4, 3}, 85))), "different tape");
  EXPECT_INVALID(t2.backward(ag::sum(t1.input({3}, vals({3}, 86), true))), "different tape");
}

TEST(AutogradErrors, StaleAndUndefinedVars) {
  ag::Tape tape;
  const ag::Var a = tape.input({3}, vals({3}, 87));
  tape.reset();
  EXPECT_INVALID(ag::silu(a), "before the last reset");
  EXPECT_INVALID(a.value(), "before the last reset");
  EXPECT_INVALID(ag::silu(ag::Var{}), "undefined");
  EXPECT_FALSE(ag::Var{}.defined());
}

TEST(AutogradErrors, ShapeMismatchesNameTheOpAndShapes) {
  ag::Tape tape;
  auto in = [&](std::vector<std::int64_t> shape) { return tape.input(shape, vals(shape, 88)); };
  EXPECT_INVALID(ag::linear(in({2, 3, 5}), in({4, 6})), "autograd::linear: weight is [4, 6] but x is [2, 3, 5]");
  EXPECT_INVALID(ag::linear(in({2, 5}), in({4, 5}), in({3})), "autograd::linear: bias is [3]");
  EXPECT_INVALID(ag::conv1d(in({2, 7, 5}), in({6, 3})), "autograd::conv1d: weight is [6, 3] but x is [2, 7, 5]");
  EXPECT_INVALID(ag::conv1d(in({7, 5}), in({5, 3})), "autograd::conv1d: x is [7, 5] but must be [B, T, C]");
  EXPECT_INVALID(ag::conv1d(in({2, 7, 5}), in({5, 3}), {.bias = in({4}), .activation = Activation::none, .initial_state = {}}),
                 "bias is [4]");
  EXPECT_INVALID(ag::conv1d(in({2, 7, 5}), in({5, 3}), {.bias = {}, .activation = Activation::none, .initial_state = in({2, 3, 5})}),
                 "initial_state is [2, 3, 5] but must be [2, 2, 5]");
  EXPECT_INVALID(ag::conv1d(in({2, 7, 5}), in({5, 1}), {.bias = {}, .activation = Activation::none, .initial_state = in({2, 1, 5})}),
                 "initial_state needs K >= 2");
  EXPECT_INVALID(ag::mul(in({2, 3}), in({3, 2})), "autograd::mul: a is [2, 3] but b is [3, 2]");
  EXPECT_INVALID(ag::add(in({4}), in({5})), "autograd::add: a is [4] but b is [5]");
  EXPECT_INVALID(ag::mse_loss(in({2, 4}), in({2, 5})), "autograd::mse_loss: a is [2, 4] but b is [2, 5]");
  EXPECT_INVALID(tape.input({2, 3}, vals({5}, 89)), "has 6 elements but 5 values");
  EXPECT_INVALID(tape.input({2, 0}, {}), "zero or negative dimension");
}

TEST(AutogradErrors, BadLoss) {
  ag::Tape tape;
  EXPECT_INVALID(tape.backward(tape.input({2, 2}, vals({4}, 90), true)), "loss is [2, 2] but must have one element");
  EXPECT_INVALID(tape.backward(ag::sum(tape.input({3}, vals({3}, 91), false))), "does not depend on any Var");
  const ag::Var unreached = tape.input({3}, vals({3}, 92), true);
  tape.backward(ag::sum(tape.input({3}, vals({3}, 93), true)));
  EXPECT_INVALID(unreached.grad(), "no gradient reached");
}

TEST(AutogradErrors, DevicesParametersAndOptimizers) {
  if (!cuda_available()) EXPECT_THROW({ ag::Tape t(Device::cuda(0)); }, Error);
  ag::Tape tape;
  ag::Parameter p("p", {2, 3});
  EXPECT_INVALID(p.copy_from_host(vals({5}, 94)), "'p' is [2, 3] (6 elements) but 5 values");
  ag::Parameter frozen("frozen", {3}, Device::cpu(), false);
  EXPECT_INVALID(frozen.grad(), "constant");
  EXPECT_INVALID(ag::AdamW({&frozen}, {}), "constant");
  EXPECT_INVALID(ag::SGD({&p, nullptr}, {}), "parameter 1 is null");
  Tensor other(DType::f32, {2, 3});
  EXPECT_INVALID(tape.view(other.view().narrow(1, 0, 2)), "contiguous");
  Tensor half(DType::f16, {4});
  EXPECT_INVALID(tape.view(half), "must be f32");
}

// ---- optimizers against a hand computation ----------------------------------------------------

// Sets p.grad() to exactly `g` through a graph: L = sum(p * g) has dL/dp = g.
void set_grad(ag::Tape& tape, ag::Parameter& p, const std::vector<float>& g) {
  tape.reset();
  tape.backward(ag::sum(ag::mul(tape.param(p), tape.input(p.value().shape(), g))));
}

TEST(AutogradOptim, SgdOneStepAndMomentum) {
  const std::vector<float> p0 = {1.0f, -2.0f, 0.5f, 3.0f}, g1 = {0.5f, 0.25f, -1.0f, 2.0f}, g2 = {-0.5f, 1.0f, 0.0f, 0.75f};
  ag::Tape tape;
  {  // plain: p - lr (g + wd p)
    ag::Parameter p("p", {4});
    p.copy_from_host(p0);
    ag::SGD opt({&p}, {.lr = 0.1f, .momentum = 0.0f, .weight_decay = 0.01f});
    set_grad(tape, p, g1);
    opt.step();
    const std::vector<float> got = p.to_host();
    for (std::size_t i = 0; i < 4; ++i) EXPECT_NEAR(got[i], p0[i] - 0.1 * (g1[i] + 0.01 * p0[i]), 1e-6) << i;
  }
  {  // momentum, two steps: v1 = g1 + wd p0; p1 = p0 - lr v1; v2 = mu v1 + g2 + wd p1; p2 = p1 - lr v2
    ag::Parameter p("p", {4});
    p.copy_from_host(p0);
    const double lr = 0.05, mu = 0.9, wd = 0.1;
    ag::SGD opt({&p}, {.lr = static_cast<float>(lr), .momentum = static_cast<float>(mu), .weight_decay = static_cast<float>(wd)});
    set_grad(tape, p, g1);
    opt.step();
    set_grad(tape, p, g2);
    opt.step();
    const std::vector<float> got = p.to_host();
    for (std::size_t i = 0; i < 4; ++i) {
      const double v1 = g1[i] + wd * p0[i], p1 = p0[i] - lr * v1;
      const double v2 = mu * v1 + g2[i] + wd * p1, p2 = p1 - lr * v2;
      EXPECT_NEAR(got[i], p2, 2e-6) << i;
    }
  }
}

TEST(AutogradOptim, AdamWTwoSteps) {
  const std::vector<float> p0 = {1.0f, -2.0f, 0.5f, 3.0f, 0.0f}, g1 = {0.5f, 0.25f, -1.0f, 2.0f, 1e-3f},
                           g2 = {-0.5f, 1.0f, 0.0f, 0.75f, -2e-3f};
  const double lr = 0.01, b1 = 0.8, b2 = 0.95, eps = 1e-6, wd = 0.1;
  ag::Parameter p("p", {5});
  p.copy_from_host(p0);
  ag::AdamW opt({&p}, {.lr = static_cast<float>(lr), .beta1 = static_cast<float>(b1), .beta2 = static_cast<float>(b2),
                       .eps = static_cast<float>(eps), .weight_decay = static_cast<float>(wd)});
  ag::Tape tape;
  set_grad(tape, p, g1);
  opt.step();
  const std::vector<float> after1 = p.to_host();
  set_grad(tape, p, g2);
  opt.step();
  EXPECT_EQ(opt.steps(), 2);
  const std::vector<float> after2 = p.to_host();
  for (std::size_t i = 0; i < 5; ++i) {
    // PyTorch's AdamW in double: decay, moments, bias-corrected step.
    double pi = p0[i], m = 0, v = 0;
    const std::vector<float>* gs[2] = {&g1, &g2};
    for (int t = 1; t <= 2; ++t) {
      const double g = (*gs[t - 1])[i];
      pi *= 1 - lr * wd;
      m = b1 * m + (1 - b1) * g;
      v = b2 * v + (1 - b2) * g * g;
      const double denom = std::sqrt(v) / std::sqrt(1 - std::pow(b2, t)) + eps;
      pi -= lr / (1 - std::pow(b1, t)) * m / denom;
      EXPECT_NEAR((t == 1 ? after1 : after2)[i], pi, 2e-6) << "element " << i << " step " << t;
    }
  }
}

// ---- allocator, determinism, profile ------------------------------------------------------------

// One training step of the block with its weights as parameters: forward, backward, AdamW, reset.
struct BlockTrainer {
  BlockData d;
  std::vector<ag::Parameter> params;
  ag::Tape tape;
  std::unique_ptr<ag::AdamW> opt;

  explicit BlockTrainer(Device device = Device::cpu(), ag::TapeOptions options = {}, Stream stream = {})
      : d(2, 40, 16, 24, 4, 99), tape(device, stream, options) {
    const auto shapes = d.shapes();
    const auto values = d.values();
    for (std::size_t i = 1; i < 9; ++i) {  // every leaf but x and target
      params.emplace_back("p" + std::to_string(i), shapes[i], device);
      params.back().copy_from_host(*values[i]);
    }
    std::vector<ag::Parameter*> ptrs;
    for (auto& p : params) ptrs.push_back(&p);
    opt = std::make_unique<ag::AdamW>(ptrs, ag::AdamWOptions{}, tape.stream());
  }

  // Records the graph and runs backward (no optimizer step, no reset).
  ag::Var forward_backward(std::uint64_t step) {
    const auto shapes = d.shapes();
    std::vector<ag::Var> v{tape.randn(shapes[0], step)};
    for (auto& p : params) v.push_back(tape.param(p));
    v.push_back(tape.input(shapes[9], d.target));
    const ag::Var loss = block_loss(v);
    tape.backward(loss);
    return loss;
  }

  float step(std::uint64_t step) {
    const float loss = forward_backward(step).item();
    opt->step();
    tape.reset();
    return loss;
  }
};

TEST(AutogradAllocator, NoDeviceAllocationAfterWarmUp) {
  BlockTrainer tr;
  tr.step(0);
  const ag::AllocatorStats warm = tr.tape.allocator_stats();
  EXPECT_GT(warm.device_allocations, 0);
  EXPECT_EQ(warm.bytes_in_use, 0) << "reset() returns every block";
  for (std::uint64_t s = 1; s <= 5; ++s) tr.step(s);
  const ag::AllocatorStats after = tr.tape.allocator_stats();
  EXPECT_EQ(after.device_allocations, warm.device_allocations) << "a warm step must be served from the free lists";
  EXPECT_EQ(after.bytes_reserved, warm.bytes_reserved);
  EXPECT_GT(after.cache_hits, warm.cache_hits);
  EXPECT_EQ(after.bytes_in_use, 0);
  tr.tape.release_cached();
  const ag::AllocatorStats released = tr.tape.allocator_stats();
  EXPECT_EQ(released.bytes_reserved, 0);
  EXPECT_EQ(released.device_frees, released.device_allocations);
  tr.step(6);  // works again after the cache was emptied
  EXPECT_GT(tr.tape.allocator_stats().device_allocations, released.device_allocations);
}

TEST(AutogradOptim, AdamWReducesTheBlockLoss) {
  // The same x every step (seed 0): AdamW with its default lr 1e-3 must lower the loss.
  BlockTrainer tr;
  const float first = tr.step(0);
  float last = first;
  for (std::uint64_t s = 1; s < 30; ++s) last = tr.step(0);
  EXPECT_LT(last, first);
}

TEST(AutogradDeterminism, BitwiseRunToRun) {
  std::vector<std::vector<float>> runs[2];
  for (auto& r : runs) {
    BlockTrainer tr;
    tr.forward_backward(7);
    for (auto& p : tr.params) r.push_back(p.grad_to_host());
  }
  for (std::size_t i = 0; i < runs[0].size(); ++i) EXPECT_EQ(runs[0][i], runs[1][i]) << "parameter " << i;
}

TEST(AutogradProfile, TimesEveryOp) {
  BlockTrainer tr(Device::cpu(), {.profile = true, .tf32 = false});
  tr.forward_backward(0);
  tr.tape.profile_section("adamw", [&] { tr.opt->step(); });
  tr.tape.reset();
  const std::vector<ag::OpTiming> t = tr.tape.profile();
  auto find = [&](const char* op, const char* phase) {
    for (const auto& e : t)
      if (e.op == op && e.phase == phase) return e.calls;
    return std::int64_t{0};
  };
  EXPECT_EQ(find("linear", "forward"), 3);
  EXPECT_EQ(find("linear", "backward"), 3);
  EXPECT_EQ(find("conv1d", "forward"), 1);
  EXPECT_EQ(find("conv1d", "backward"), 1);
  EXPECT_EQ(find("mse_loss", "forward"), 1);
  EXPECT_EQ(find("adamw", "other"), 1);
  tr.tape.clear_profile();
  EXPECT_TRUE(tr.tape.profile().empty());
}

TEST(AutogradRandn, DeterministicAndStandardNormal) {
  ag::Tape tape;
  const std::vector<float> a = tape.randn({1 << 17}, 5).to_host(), b = tape.randn({1 << 17}, 5).to_host(),
                           c = tape.randn({1 << 17}, 6).to_host();
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  double mean = 0, var = 0;
  for (float v : a) mean += v;
  mean /= static_cast<double>(a.size());
  for (float v : a) var += (v - mean) * (v - mean);
  var /= static_cast<double>(a.size());
  EXPECT_NEAR(mean, 0.0, 0.01);  // 4.5 standard errors (1 / sqrt(2^17) = 0.0028)
  EXPECT_NEAR(var, 1.0, 0.02);   // standard error of the variance: sqrt(2 / 2^17) = 0.0039
}

TEST(AutogradTape, ViewCopyValueAndItem) {
  ag::Tape tape;
  Tensor ext(DType::f32, {2, 3});
  const std::vector<float> e = vals({2, 3}, 95);
  ext.copy_from_host(e.data());
  const ag::Var v = tape.view(ext, true);
  EXPECT_EQ(v.value().data(), ext.data()) << "view does not copy";
  const ag::Var s = ag::sum(v);
  Tensor hist(DType::f32, {4});
  tape.copy_value(s, hist.view().narrow(0, 2, 1));
  float h[4];
  hist.copy_to_host(h);
  EXPECT_FLOAT_EQ(h[2], s.item());
  EXPECT_NEAR(s.item(), std::accumulate(e.begin(), e.end(), 0.0), 1e-5);
  EXPECT_INVALID(tape.copy_value(s, hist), "must be f32, contiguous");
  EXPECT_EQ(v.rank(), 2);
  EXPECT_EQ(v.size(-1), 3);
}

}  // namespace
}  // namespace shortconv::test
