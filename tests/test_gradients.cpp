// Finite-difference falsifier: the analytic gradients (library and reference) against central
// differences of the scalar loss L = sum(y * g) with g random.
#include "harness.hpp"

namespace shortconv::test {
namespace {

struct FdSetup {
  RefShape s{2, 9, 5, 4};
  std::vector<double> x, w, bias, g;
};

FdSetup make_setup(std::int64_t K, std::uint64_t seed) {
  FdSetup f;
  f.s.K = K;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  auto fill = [&](std::vector<double>& v, std::size_t n) {
    v.resize(n);
    for (auto& e : v) e = static_cast<float>(dist(rng));  // values exactly representable in f32
  };
  fill(f.x, f.s.B * f.s.T * f.s.C);
  fill(f.w, f.s.C * f.s.K);
  fill(f.bias, f.s.C);
  fill(f.g, f.s.B * f.s.T * f.s.C);
  return f;
}

// L computed by the library in f32 on the CPU, accumulated in fp64 on the host.
double library_loss(const FdSetup& f) {
  const auto& s = f.s;
  Tensor x(DType::f32, {s.B, s.T, s.C}), w(DType::f32, {s.C, s.K}), b(DType::f32, {s.C}), y(DType::f32, {s.B, s.T, s.C});
  auto put = [](Tensor& t, const std::vector<double>& v) {
    for (std::size_t i = 0; i < v.size(); ++i) static_cast<float*>(t.data())[i] = static_cast<float>(v[i]);
  };
  put(x, f.x);
  put(w, f.w);
  put(b, f.bias);
  conv1d_forward(x, w, &b.view(), y);
  double loss = 0.0;
  for (std::size_t i = 0; i < f.g.size(); ++i) loss += static_cast<const float*>(y.data())[i] * f.g[i];
  return loss;
}

double reference_loss(const FdSetup& f) {
  const RefResult y = ref_forward(f.s, f.x, f.w, &f.bias);
  double loss = 0.0;
  for (std::size_t i = 0; i < f.g.size(); ++i) loss += y.value[i] * f.g[i];
  return loss;
}

// Central differences of `loss` with respect to every entry of the vector `member` selects.
template <class Loss>
std::vector<double> central_differences(FdSetup f, std::vector<double> FdSetup::*member, double h, Loss loss) {
  std::vector<double> grad((f.*member).size());
  for (std::size_t i = 0; i < grad.size(); ++i) {
    const double saved = (f.*member)[i];
    (f.*member)[i] = saved + h;
    const double up = loss(f);
    (f.*member)[i] = saved - h;
    const double down = loss(f);
    (f.*member)[i] = saved;
    grad[i] = (up - down) / (2 * h);
  }
  return grad;
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want, double tol, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  double worst = 0.0;
  std::size_t at = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (std::fabs(got[i] - want[i]) > worst) worst = std::fabs(got[i] - want[i]), at = i;
  EXPECT_LE(worst, tol) << what << ": worst |analytic - finite difference| " << worst << " at " << at;
}

class FiniteDifference : public testing::TestWithParam<std::int64_t> {};

TEST_P(FiniteDifference, LibraryGradientsMatchCentralDifferences) {
  const FdSetup f = make_setup(GetParam(), 42 + GetParam());
  const auto& s = f.s;
  Tensor x(DType::f32, {s.B, s.T, s.C}), w(DType::f32, {s.C, s.K}), dy(DType::f32, {s.B, s.T, s.C});
  Tensor dx(DType::f32, {s.B, s.T, s.C}), dw(DType::f32, {s.C, s.K}), db(DType::f32, {s.C});
  for (std::size_t i = 0; i < f.x.size(); ++i) static_cast<float*>(x.data())[i] = static_cast<float>(f.x[i]);
  for (std::size_t i = 0; i < f.w.size(); ++i) static_cast<float*>(w.data())[i] = static_cast<float>(f.w[i]);
  for (std::size_t i = 0; i < f.g.size(); ++i) static_cast<float*>(dy.data())[i] = static_cast<float>(f.g[i]);
  conv1d_backward({.x = x, .weight = w, .dy = dy, .dx = dx.view(), .dweight = dw.view(), .dbias = db.view()});
  auto to_vec = [](const Tensor& t) {
    std::vector<double> v(static_cast<std::size_t>(t.numel()));
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<const float*>(t.data())[i];
    return v;
  };
  // L is linear in each argument, so central differences are exact up to f32 rounding of y.
  const double h = 1e-2;
  expect_close(to_vec(dx), central_differences(f, &FdSetup::x, h, library_loss), 2e-3, "dx");
  expect_close(to_vec(dw), central_differences(f, &FdSetup::w, h, library_loss), 2e-3, "dweight");
  expect_close(to_vec(db), central_differences(f, &FdSetup::bias, h, library_loss), 2e-3, "dbias");
}

TEST_P(FiniteDifference, ReferenceGradientsMatchCentralDifferences) {
  const FdSetup f = make_setup(GetParam(), 7 + GetParam());
  const double h = 1e-4;
  expect_close(ref_dx(f.s, f.w, f.g).value, central_differences(f, &FdSetup::x, h, reference_loss), 1e-8, "ref dx");
  expect_close(ref_dw(f.s, f.x, f.g).value, central_differences(f, &FdSetup::w, h, reference_loss), 1e-8, "ref dweight");
  expect_close(ref_dbias(f.s, f.g).value, central_differences(f, &FdSetup::bias, h, reference_loss), 1e-8, "ref dbias");
}

// K = 13 exceeds T = 9: every output sees the zero padding.
INSTANTIATE_TEST_SUITE_P(Widths, FiniteDifference, testing::Values(1, 2, 4, 7, 13));

}  // namespace
}  // namespace shortconv::test
