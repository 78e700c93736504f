// Numerical trust: a NaN or an infinity in x, dy, weight or bias reaches exactly the outputs
// whose formula holds it as a term, and nothing else.
//
//   y[b,t,c]  = bias[c] + sum_k w[c,k] * x[b, t+k-(K-1), c]   x[b0,t0,c0] is a term for t in [t0, t0+K-1]
//   dx[b,i,c] = sum_k w[c,k] * dy[b, i+K-1-k, c]              dy[b0,t0,c0] is a term for i in [t0-K+1, t0]
//   dw[c,k]   = sum_{b,t} x[b, t+k-(K-1), c] * dy[b,t,c]      dy[b0,t0,c0] for k >= K-1-t0, x[b0,t0,c0] for k >= t0+K-T
//   dbias[c]  = sum_{b,t} dy[b,t,c]
//
// Terms before t = 0 or past T are absent (not zero times the value), so a NaN weight tap that only
// meets padding leaves the output finite. Every element outside the predicted set must be bitwise
// equal to a run without the special value: nothing leaks into other channels, batch rows or taps.
//
// The file is compiled into both test binaries: the CPU suite instantiates it on the CPU, the CUDA
// suite (SHORTCONV_TEST_CUDA) on cuda:0, where it skips without a GPU.
#include <bit>
#include <functional>

#include "harness.hpp"

namespace shortconv::test {
namespace {

struct Shape {
  std::int64_t B, T, C, K;
};

// Widths cover every CUDA width bucket (<= 4, <= 8, <= 16, > 16) and T < K; C = 67 covers a full
// CPU block of 64 channels plus a tail; T = 50 lets the CPU backward take groups of 4 rows.
// C = 64 and 72 (rows 16-byte aligned) send CUDA calls to the tiled kernels, the others to the
// register-window kernels.
constexpr Shape kShapes[] = {{3, 50, 67, 4}, {3, 50, 67, 7}, {2, 41, 9, 12}, {2, 37, 5, 33}, {3, 3, 67, 7},
                             {2, 20, 3, 1},  {3, 50, 64, 4}, {2, 41, 72, 12}, {2, 37, 64, 33}, {3, 3, 64, 7}};

struct DTypes {
  DType x, w;
};
constexpr DTypes kDTypes[] = {
    {DType::f32, DType::f32}, {DType::bf16, DType::bf16}, {DType::f16, DType::f16}, {DType::bf16, DType::f32}};

// Dense host inputs (exactly representable in their dtypes) for one problem.
struct Inputs {
  Shape s;
  DTypes dt;
  std::vector<double> x, dy, w, bias;
};

Inputs make_inputs(const Shape& s, const DTypes& dt, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  // Away from zero so that an infinity times a weight stays an infinity.
  auto fill = [&](std::vector<double>& v, std::int64_t n, DType dtype) {
    v.resize(static_cast<std::size_t>(n));
    for (auto& e : v) {
      double r = dist(rng);
      r = r < 0 ? r - 0.25 : r + 0.25;
      alignas(4) std::byte cell[4];  // round-trip through the dtype
      encode(dtype, r, cell, 0);
      e = decode(dtype, cell, 0);
    }
  };
  Inputs in{s, dt, {}, {}, {}, {}};
  fill(in.x, s.B * s.T * s.C, dt.x);
  fill(in.dy, s.B * s.T * s.C, dt.x);
  fill(in.w, s.C * s.K, dt.w);
  fill(in.bias, s.C, dt.w);
  return in;
}

// One output: raw element bits (for bitwise comparison) and decoded values.
struct Output {
  DType dtype = DType::f32;
  std::vector<std::byte> raw;
  std::vector<double> value;
  bool same_bits(std::size_t i, const Output& o) const {
    const std::size_t es = dtype_size(dtype);
    return std::memcmp(raw.data() + i * es, o.raw.data() + i * es, es) == 0;
  }
};

struct Outputs {
  Output y, dx, dw, db;
};

Tensor upload(const std::vector<double>& v, DType dtype, std::initializer_list<std::int64_t> shape, Device device) {
  std::vector<std::byte> host(v.size() * dtype_size(dtype));
  for (std::size_t i = 0; i < v.size(); ++i) encode(dtype, v[i], host.data(), static_cast<std::int64_t>(i));
  Tensor t(dtype, shape, device);
  t.copy_from_host(host.data());
  return t;
}

Output download(const Tensor& t) {
  Output o{t.dtype(), std::vector<std::byte>(t.nbytes()), std::vector<double>(static_cast<std::size_t>(t.numel()))};
  t.copy_to_host(o.raw.data());
  for (std::int64_t i = 0; i < t.numel(); ++i) o.value[i] = decode(t.dtype(), o.raw.data(), i);
  return o;
}

Outputs run(const Inputs& in, Device device, Variant variant) {
  const auto [B, T, C, K] = in.s;
  const Tensor x = upload(in.x, in.dt.x, {B, T, C}, device), dy = upload(in.dy, in.dt.x, {B, T, C}, device);
  const Tensor w = upload(in.w, in.dt.w, {C, K}, device), bias = upload(in.bias, in.dt.w, {C}, device);
  const Tensor y(in.dt.x, {B, T, C}, device), dx(in.dt.x, {B, T, C}, device);
  const Tensor dw(in.dt.w, {C, K}, device), db(in.dt.w, {C}, device);
  conv1d_forward({.x = x, .weight = w, .bias = bias.view(), .y = y, .variant = variant});
  conv1d_backward(
      {.x = x, .weight = w, .dy = dy, .dx = dx.view(), .dweight = dw.view(), .dbias = db.view(), .variant = variant});
  if (device.is_cuda()) synchronize(default_stream(device));
  return {download(y), download(dx), download(dw), download(db)};
}

// Which elements of each output hold the special value as a term: flat index -> bool.
struct Affected {
  std::function<bool(std::int64_t b, std::int64_t t, std::int64_t c)> y, dx;
  std::function<bool(std::int64_t c, std::int64_t k)> dw;
  std::function<bool(std::int64_t c)> db;
};

enum class Where { x, dy, weight, bias };

const char* where_name(Where w) {
  switch (w) {
    case Where::x: return "x";
    case Where::dy: return "dy";
    case Where::weight: return "weight";
    case Where::bias: return "bias";
  }
  return "?";
}

// Places `value` at (b0, t0, c0) of x or dy, at (c0, k0) of weight or at c0 of bias, and returns the
// elements the formula says it reaches.
Affected inject(Inputs& in, Where where, double value, std::int64_t b0, std::int64_t t0, std::int64_t c0,
                std::int64_t k0) {
  const auto [B, T, C, K] = in.s;
  const auto none3 = [](std::int64_t, std::int64_t, std::int64_t) { return false; };
  Affected a{none3, none3, [](std::int64_t, std::int64_t) { return false; }, [](std::int64_t) { return false; }};
  switch (where) {
    case Where::x:
      in.x[(b0 * T + t0) * C + c0] = value;
      a.y = [=](std::int64_t b, std::int64_t t, std::int64_t c) {
        return b == b0 && c == c0 && t >= t0 && t <= t0 + K - 1;
      };
      // x[t0] meets dy[t] in dw[c0,k] for t = t0 + K-1-k < T.
      a.dw = [=](std::int64_t c, std::int64_t k) { return c == c0 && t0 + K - 1 - k < T; };
      break;
    case Where::dy:
      in.dy[(b0 * T + t0) * C + c0] = value;
      a.dx = [=](std::int64_t b, std::int64_t i, std::int64_t c) {
        return b == b0 && c == c0 && i >= t0 - K + 1 && i <= t0;
      };
      // dy[t0] meets x[t0 + k-(K-1)] in dw[c0,k], a term only when that index is >= 0.
      a.dw = [=](std::int64_t c, std::int64_t k) { return c == c0 && t0 + k - (K - 1) >= 0; };
      a.db = [=](std::int64_t c) { return c == c0; };
      break;
    case Where::weight:
      in.w[c0 * K + k0] = value;
      // w[c0,k0] multiplies x[t + k0-(K-1)] in y (present when >= 0) and dy[i + K-1-k0] in dx (when < T).
      a.y = [=](std::int64_t, std::int64_t t, std::int64_t c) { return c == c0 && t + k0 - (K - 1) >= 0; };
      a.dx = [=](std::int64_t, std::int64_t i, std::int64_t c) { return c == c0 && i + K - 1 - k0 < T; };
      break;
    case Where::bias:
      in.bias[c0] = value;
      a.y = [=](std::int64_t, std::int64_t, std::int64_t c) { return c == c0; };
      break;
  }
  (void)B;
  return a;
}

// Same class of non-finite value: NaN with NaN, +inf with +inf, -inf with -inf.
bool same_special(double got, double want) {
  if (std::isnan(want)) return std::isnan(got);
  return got == want;
}

// Checks one output element by element: affected elements carry the reference's special value,
// the others are finite in the reference and bitwise equal to the clean run. With `rel` > 0 the
// others are within rel * |clean| + rel / 64 of it instead: the CUDA tensor-core kernels sum a
// channel group that meets a non-finite input term by term, in another order than the clean run.
void check_output(const std::string& what, const Output& got, const Output& clean, const RefResult& ref,
                  const std::function<bool(std::int64_t)>& affected, int& failures, double rel = 0.0) {
  ASSERT_EQ(got.value.size(), ref.value.size());
  for (std::size_t i = 0; i < got.value.size() && failures < 10; ++i) {
    const auto idx = static_cast<std::int64_t>(i);
    if (affected(idx)) {
      if (std::isfinite(ref.value[i]) || !same_special(got.value[i], ref.value[i])) {
        ADD_FAILURE() << what << " element " << i << ": got " << got.value[i] << ", formula gives " << ref.value[i];
        ++failures;
      }
    } else if (!std::isfinite(ref.value[i]) ||
               (rel > 0.0 ? !(std::abs(got.value[i] - clean.value[i]) <= rel * std::abs(clean.value[i]) + rel / 64)
                          : !got.same_bits(i, clean))) {
      ADD_FAILURE() << what << " element " << i << " should not see the special value: got " << got.value[i]
                    << ", clean run " << clean.value[i] << ", reference " << ref.value[i];
      ++failures;
    }
  }
}

class Numerics : public testing::TestWithParam<Device> {
 protected:
  void SetUp() override {
    if (GetParam().is_cuda() && !cuda_available()) GTEST_SKIP() << "no CUDA device";
  }

  // For every shape, dtype and variant: inject each value at each position of `where` and check
  // every output against the prediction and the clean run.
  void check_special_values(Where where) {
    const Device device = GetParam();
    const double specials[] = {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
                               -std::numeric_limits<double>::infinity()};
    for (const Shape& s : kShapes)
      for (const DTypes& dt : kDTypes)
        for (Variant variant : {Variant::fast, Variant::naive}) {
          const Inputs clean_in = make_inputs(s, dt, 1000 + s.T * 31 + s.K);
          const Outputs clean = run(clean_in, device, variant);
          // Positions: first and last token and channel, a token inside the left padding window,
          // an interior one; the middle batch row when there are several.
          struct Pos {
            std::int64_t b, t, c, k;
          };
          const std::int64_t bm = s.B / 2;
          const Pos positions[] = {
              {0, 0, 0, 0},
              {bm, std::min<std::int64_t>(1, s.T - 1), s.C - 1, s.K - 1},
              {bm, s.T / 2, s.C / 2, s.K / 2},
              {s.B - 1, s.T - 1, std::min<std::int64_t>(64, s.C - 1), std::min<std::int64_t>(1, s.K - 1)}};
          for (const Pos& pos : positions)
            for (double special : specials) {
              Inputs in = clean_in;
              const Affected aff = inject(in, where, special, pos.b, pos.t, pos.c, pos.k);
              const Outputs got = run(in, device, variant);
              const RefShape rs{s.B, s.T, s.C, s.K};
              std::ostringstream os;
              os << where_name(where) << " = " << special << " at b " << pos.b << " t " << pos.t << " c " << pos.c
                 << " k " << pos.k << ", B" << s.B << " T" << s.T << " C" << s.C << " K" << s.K << " "
                 << dtype_name(dt.x) << "/w" << dtype_name(dt.w) << (variant == Variant::naive ? " naive" : " fast")
                 << " on " << device.str() << ": ";
              const std::string ctx = os.str();
              int failures = 0;
              auto btc = [&](const std::function<bool(std::int64_t, std::int64_t, std::int64_t)>& f) {
                return [&, f](std::int64_t i) { return f(i / (s.T * s.C), i / s.C % s.T, i % s.C); };
              };
              // Tensor cores may take the CUDA forward: 16-bit x and weights, K >= 24 (ops.hpp).
              const bool mma = device.is_cuda() && dt.x != DType::f32 && dt.w == dt.x && s.K >= 24;
              check_output(ctx + "y", got.y, clean.y, ref_forward(rs, in.x, in.w, &in.bias), btc(aff.y), failures,
                           mma ? (dt.x == DType::bf16 ? 0x1p-7 : 0x1p-10) : 0.0);
              // ... and the backward: the same dtypes, K >= 17 (tiled.hpp).
              const bool mma_bwd = device.is_cuda() && dt.x != DType::f32 && dt.w == dt.x && s.K >= 17;
              const double rel_bwd = mma_bwd ? (dt.x == DType::bf16 ? 0x1p-7 : 0x1p-10) : 0.0;
              check_output(ctx + "dx", got.dx, clean.dx, ref_dx(rs, in.w, in.dy), btc(aff.dx), failures, rel_bwd);
              check_output(
                  ctx + "dweight", got.dw, clean.dw, ref_dw(rs, in.x, in.dy),
                  [&](std::int64_t i) { return aff.dw(i / s.K, i % s.K); }, failures, rel_bwd);
              check_output(ctx + "dbias", got.db, clean.db, ref_dbias(rs, in.dy), aff.db, failures, rel_bwd);
              if (failures > 0) return;  // one broken case says enough
            }
        }
  }
};

TEST_P(Numerics, SpecialValueInX) { check_special_values(Where::x); }
TEST_P(Numerics, SpecialValueInDy) { check_special_values(Where::dy); }
TEST_P(Numerics, SpecialValueInWeight) { check_special_values(Where::weight); }
TEST_P(Numerics, SpecialValueInBias) { check_special_values(Where::bias); }

// 0 * inf is NaN: a zero weight does not mask an infinite input, as the formula says.
TEST_P(Numerics, ZeroWeightTimesInfinityIsNaN) {
  const Device device = GetParam();
  const Shape s{2, 9, 70, 4};
  for (const DTypes& dt : kDTypes)
    for (Variant variant : {Variant::fast, Variant::naive}) {
      Inputs in = make_inputs(s, dt, 77);
      const std::int64_t c0 = 65;
      for (std::int64_t k = 0; k < s.K; ++k) in.w[c0 * s.K + k] = 0.0;
      in.x[(1 * s.T + 4) * s.C + c0] = std::numeric_limits<double>::infinity();
      const Outputs got = run(in, device, variant);
      for (std::int64_t t = 0; t < s.T; ++t) {
        const double v = got.y.value[(1 * s.T + t) * s.C + c0];
        if (t >= 4 && t <= 4 + s.K - 1) {
          EXPECT_TRUE(std::isnan(v)) << dtype_name(dt.x) << " t " << t << ": got " << v;
        } else {
          EXPECT_TRUE(std::isfinite(v)) << dtype_name(dt.x) << " t " << t << ": got " << v;
        }
      }
    }
}

// SiLU where z is infinite, as the formula computes it: y = z * sigmoid(z) is +inf at +inf and
// NaN at -inf (-inf * 0), and silu'(z) = s (1 + z (1 - s)) is NaN at both (inf * 0), so dx and
// the dweight / dbias sums over such a row are NaN; finite rows as the fp64 formula gives them.
TEST_P(Numerics, SiluOfInfiniteSums) {
  const Device device = GetParam();
  const double inf = std::numeric_limits<double>::infinity();
  const std::int64_t T = 6, C = 8;  // K = 1, weight 1, bias 0: z = x
  const double xs[T] = {-inf, 2.0, inf, -3.0, 0.5, -0.75};
  for (DType d : {DType::f32, DType::bf16, DType::f16})
    for (bool inf_row : {true, false}) {
      std::vector<double> x(T * C), dy(T * C, 1.0), w(C, 1.0), bias(C, 0.0);
      for (std::int64_t t = 0; t < T; ++t)
        for (std::int64_t c = 0; c < C; ++c) x[t * C + c] = inf_row || std::isfinite(xs[t]) ? xs[t] : 1.25;
      const Tensor xt = upload(x, d, {1, T, C}, device), dyt = upload(dy, d, {1, T, C}, device);
      const Tensor wt = upload(w, d, {C, 1}, device), bt = upload(bias, d, {C}, device);
      const Tensor y(d, {1, T, C}, device), dx(d, {1, T, C}, device), dw(d, {C, 1}, device), db(d, {C}, device);
      conv1d_forward({.x = xt, .weight = wt, .bias = bt.view(), .y = y, .activation = Activation::silu});
      conv1d_backward({.x = xt, .weight = wt, .bias = bt.view(), .dy = dyt, .activation = Activation::silu, .dx = dx.view(),
                       .dweight = dw.view(), .dbias = db.view()});
      if (device.is_cuda()) synchronize(default_stream(device));
      const Output yo = download(y), dxo = download(dx), dwo = download(dw), dbo = download(db);
      const double tol = d == DType::f32 ? 1e-5 : d == DType::bf16 ? 1e-2 : 2e-3;
      auto expect = [&](const char* what, double got, double want) {
        const bool ok = std::isnan(want) ? std::isnan(got) : std::isinf(want) ? got == want : std::fabs(got - want) <= tol * (1 + std::fabs(want));
        EXPECT_TRUE(ok) << what << ": got " << got << ", formula gives " << want << " (" << dtype_name(d) << ")";
      };
      double dw_sum = 0.0, db_sum = 0.0;
      for (std::int64_t t = 0; t < T; ++t) {
        const double z = x[t * C], s = 1.0 / (1.0 + std::exp(-z)), g = s * (1.0 + z * (1.0 - s));
        dw_sum += z * g;
        db_sum += g;
        for (std::int64_t c = 0; c < C; ++c) {
          expect("y", yo.value[t * C + c], z * s);
          expect("dx", dxo.value[t * C + c], g);
        }
      }
      for (std::int64_t c = 0; c < C; ++c) {
        expect("dweight", dwo.value[c], dw_sum);
        expect("dbias", dbo.value[c], db_sum);
      }
    }
}

#if SHORTCONV_TEST_CUDA
// The CUDA tensor-core forward's 4-warp blocks (each warp two 8-channel groups) run only where
// the pieces of 128 rows x 64 channels fill the SMs, larger than kShapes. There a non-finite x
// sends one group of a warp to the term-by-term sum while the warp's other group leaves through
// the tile. x[0, 1000, 67] is in the first group of its warp; its window reaches into the next
// 128-row piece.
TEST_P(Numerics, SpecialValueInXTensorCoreFourWarpBlocks) {
  const Device device = GetParam();
  const Shape s{1, 8192, 256, 32};  // 4 x 64 = 256 pieces
  for (DType d : {DType::bf16, DType::f16}) {
    const DTypes dt{d, d};
    const Inputs clean_in = make_inputs(s, dt, 5150);
    const Outputs clean = run(clean_in, device, Variant::fast);
    for (double special : {std::numeric_limits<double>::quiet_NaN(), -std::numeric_limits<double>::infinity()}) {
      Inputs in = clean_in;
      const Affected aff = inject(in, Where::x, special, 0, 1000, 67, 0);
      const Outputs got = run(in, device, Variant::fast);
      int failures = 0;
      check_output(
          "y with x = " + std::to_string(special) + " " + std::string(dtype_name(d)) + ": ", got.y, clean.y,
          ref_forward(RefShape{s.B, s.T, s.C, s.K}, in.x, in.w, &in.bias),
          [&](std::int64_t i) { return aff.y(i / (s.T * s.C), i / s.C % s.T, i % s.C); }, failures,
          d == DType::bf16 ? 0x1p-7 : 0x1p-10);
    }
  }
}
#endif

std::string device_name(const testing::TestParamInfo<Device>& info) { return info.param.is_cuda() ? "cuda" : "cpu"; }

#if SHORTCONV_TEST_CUDA
INSTANTIATE_TEST_SUITE_P(Cuda, Numerics, testing::Values(Device::cuda(0)), device_name);
#else
INSTANTIATE_TEST_SUITE_P(Cpu, Numerics, testing::Values(Device::cpu()), device_name);
#endif

}  // namespace
}  // namespace shortconv::test
