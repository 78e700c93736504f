// CUDA backend against the fp64 reference and the CPU backend. Every test skips cleanly when no
// GPU is visible (CI builds the CUDA code but has no device).
#include "features_tests.hpp"

namespace shortconv::test {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device"

std::vector<Problem> cuda_problems() {
  std::vector<Problem> out = sweep_problems();
  // Every width bucket and the generic path, edge lengths, all dtypes, strided and not.
  const std::int64_t widths[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 31, 32, 64, 100};
  for (std::int64_t K : widths) {
    std::vector<std::int64_t> lengths = {1, K - 1, K, K + 1, 257, 2053};
    std::sort(lengths.begin(), lengths.end());
    lengths.erase(std::unique(lengths.begin(), lengths.end()), lengths.end());
    for (std::int64_t T : lengths)
      for (DType d : {DType::f32, DType::bf16, DType::f16}) {
        if (T < 1) continue;
        out.push_back({2, T, 264, K, d, d, true, T % 2 == 1});
        out.push_back({1, T, 7, K, d, DType::f32, false, T % 2 == 0});
        if (T == 257) {  // the tiled kernels' strided views: token stride > C, partial 16-byte copies
          Problem padded{2, T, 100, K, d, d, K % 2 == 1, false};
          padded.padded = true;
          out.push_back(padded);
          // One tile a block here (tiled_parts: too few jobs for two), the last one 8 channels wide.
          out.push_back({1, T, 200, K, d, d, K % 2 == 0, false});
        }
      }
  }
  // 16-bit blocks of two 64-channel tiles (forward K <= 16, backward K <= 8): tiled_parts takes
  // two only when the jobs of 128 channels x 64 rows are at least the resident blocks (264 on an
  // H100 or H200: 2 blocks of 256 threads an SM), so 8 x 2053 rows (257 pieces) x 200 channels
  // (2 jobs a piece row; the last block's second tile holds 8 channels).
  for (std::int64_t K : {2, 4, 5, 8, 16})
    for (DType d : {DType::bf16, DType::f16}) out.push_back({8, 2053, 200, K, d, d, K != 5, false});
  // Tapered grids (short runs after the long ones, make_tiled_grid): enough pieces a channel tile
  // for head runs of several pieces and tail runs of one on an H100 or H200 (test_tiled_grid.cu
  // checks the arithmetic): the 16-bit forward at 8 < K <= 16 (the exact K = 16 kernel and the
  // generic 16 bucket) and the backward at K <= 4 (bf16 in 128-channel blocks, f32).
  out.push_back({4, 9600, 512, 16, DType::bf16, DType::bf16, true, false});
  out.push_back({4, 9600, 512, 12, DType::f16, DType::f16, false, false});
  out.push_back({4, 9600, 512, 4, DType::bf16, DType::bf16, true, false});
  out.push_back({4, 8192, 512, 4, DType::f32, DType::f32, false, false});
  // The 16-bit tensor-core forward (24 <= K <= 128) at widths whose weight pairs are padded for
  // conflict-free fragment loads (K = 24-29 and 66-93), in 4-warp blocks (2 x 2053 rows x 264
  // channels: 165 pieces of 128 rows, at least the 132 SMs of an H100 or H200, and 3 blocks an SM
  // at K <= 57) and in 8-warp ones (K = 80: 2 blocks of 4 warps an SM; 257 rows: fewer pieces
  // than SMs). The sweep's other tensor-core problems mostly take 8-warp blocks (few pieces), so
  // the 4-warp ones also get 4 and 5 chunks a 16-row block (K = 40, 57; 2 x 2052 rows).
  for (std::int64_t K : {24, 29, 80})
    for (DType d : {DType::bf16, DType::f16}) {
      out.push_back({2, 2053, 264, K, d, d, K != 29, false});
      Problem padded{1, 257, 200, K, d, d, true, false};
      padded.padded = true;
      out.push_back(padded);
    }
  // The 16-bit forward's bulk copies (8 < K <= 16) in a 128-channel block whose second tile lies
  // wholly past C (64 channels, 266 pieces of 64 rows: two tiles a block on an H100 or H200): its
  // copies are all outside the tensor and land as zeros, and its barriers still complete.
  out.push_back({2, 8500, 64, 16, DType::bf16, DType::bf16, true, false});
  out.push_back({2, 2052, 264, 40, DType::bf16, DType::bf16, true, false});
  out.push_back({2, 2052, 264, 57, DType::f16, DType::f16, false, false});
  return out;
}

class CudaSweep : public testing::TestWithParam<Problem> {};

TEST_P(CudaSweep, MatchesReference) {
  SKIP_WITHOUT_GPU();
  expect_problem_ok(GetParam(), Device::cuda(0), 4321 + GetParam().T * 5 + GetParam().K);
}

INSTANTIATE_TEST_SUITE_P(Cuda, CudaSweep, testing::ValuesIn(cuda_problems()), problem_name);

TEST(CudaVsCpu, SameInputsAgreeWithinTolerance) {
  SKIP_WITHOUT_GPU();
  for (const Problem& p : {Problem{4, 1000, 520, 4, DType::bf16, DType::bf16, true, false},
                           Problem{2, 777, 96, 7, DType::f32, DType::f32, true, true},
                           Problem{3, 300, 40, 33, DType::f16, DType::f32, true, false}}) {
    const ProblemResult gpu = run_problem(p, Device::cuda(0), 11);
    const ProblemResult cpu = run_problem(p, Device::cpu(), 11);
    for (std::size_t i = 0; i < gpu.comparisons.size(); ++i) {
      EXPECT_TRUE(gpu.comparisons[i].ok()) << p.name() << " cuda " << gpu.comparisons[i].str();
      EXPECT_TRUE(cpu.comparisons[i].ok()) << p.name() << " cpu " << cpu.comparisons[i].str();
    }
    // Outputs decoded from both backends differ by no more than twice the per-dtype tolerance.
    for (std::size_t o = 0; o < gpu.raw.size(); ++o) {
      const DType dt = o < 2 ? p.dtype : p.wdtype;
      const std::size_t es = dtype_size(dt);
      const std::size_t n = std::min(gpu.raw[o].size(), cpu.raw[o].size()) / es;
      double worst = 0.0;
      for (std::size_t i = 0; i < n; ++i) {
        const double a = decode(dt, gpu.raw[o].data(), static_cast<std::int64_t>(i));
        const double b = decode(dt, cpu.raw[o].data(), static_cast<std::int64_t>(i));
        if (std::isnan(a) && std::isnan(b)) continue;  // poison in the gaps of both
        worst = std::max(worst, std::fabs(a - b) / (1e-5 + 2 * rel_tolerance(dt) * (std::fabs(b) + 1)));
      }
      EXPECT_LE(worst, 1.0) << p.name() << " output " << o << " cuda vs cpu";
    }
  }
}

// Packed short sequences, so that most rows lie within K-1 of a sequence's start or end, with
// non-finite values there: the FMA kernels sum the tiles' zeros outside a sequence through their
// full windows and leave those terms out only where a factor is not finite (a weight, or a g row
// before position K-1). Every output agrees with the CPU backend: the same non-finite class where
// the CPU has one, within tolerance elsewhere. Outputs start as NaN, so unwritten elements show.
TEST(CudaVsCpu, ShortSequencesWithNonFiniteValuesAtTheirEdges) {
  SKIP_WITHOUT_GPU();
  std::vector<std::int64_t> lengths;
  for (std::int64_t l = 1; l <= 20; ++l) lengths.push_back(l);
  for (std::int64_t l : {37, 3, 64, 5, 130, 17}) lengths.push_back(l);
  std::vector<std::int64_t> cu{0};
  for (std::int64_t l : lengths) cu.push_back(cu.back() + l);
  const std::int64_t total = cu.back(), C = 72;
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  auto tensor_of = [](DType dtype, std::vector<std::int64_t> shape, const std::vector<double>& values, Device device) {
    Tensor t(dtype, std::span<const std::int64_t>(shape), device);
    std::vector<std::byte> host(t.nbytes());
    for (std::int64_t i = 0; i < t.numel(); ++i) encode(dtype, values[static_cast<std::size_t>(i)], host.data(), i);
    t.copy_from_host(host.data());
    return t;
  };
  for (DType d : {DType::bf16, DType::f32})
    for (std::int64_t K : {4, 8, 16, 32})
      for (bool silu : {false, true}) {
        std::mt19937_64 rng(900 + K + (silu ? 50 : 0));
        std::uniform_real_distribution<double> dist(-1.0, 1.0);
        auto fill = [&](std::int64_t n) {
          std::vector<double> v(static_cast<std::size_t>(n));
          for (double& e : v) e = dist(rng);
          return v;
        };
        std::vector<double> x = fill(total * C), dy = fill(total * C), w = fill(C * K), bias = fill(C);
        dy[cu[4] * C + 3] = inf;             // the first row of a 5-row sequence: dweight taps before position 0
        dy[(cu[10] - 1) * C + 9] = nan;      // the last row of a 10-row sequence
        dy[(cu[21] + 2) * C + 65] = -inf;    // row 2 of a 37-row sequence, the second channel tile
        x[(cu[15] + 1) * C + 70] = -inf;     // row 1 of a 16-row sequence
        w[40 * K] = inf;                     // tap 0: y's input before position 0 near a start, dx's dy past the end near an end
        w[41 * K + K - 1] = nan;             // tap K-1: the current x and dy row, so the whole channel is NaN (nothing to leave out)
        const std::vector<double> poison(static_cast<std::size_t>(total * C), nan);
        auto run = [&](Device dev) {
          const Tensor xt = tensor_of(d, {1, total, C}, x, dev), dyt = tensor_of(d, {1, total, C}, dy, dev);
          const Tensor wt = tensor_of(d, {C, K}, w, dev), bt = tensor_of(d, {C}, bias, dev);
          const Tensor cut = index_tensor(cu, DType::i32, dev);
          Tensor y = tensor_of(d, {1, total, C}, poison, dev), dx = tensor_of(d, {1, total, C}, poison, dev);
          Tensor dw = tensor_of(d, {C, K}, poison, dev), db = tensor_of(d, {C}, poison, dev);
          const Activation act = silu ? Activation::silu : Activation::none;
          Conv1dForwardArgs f{.x = xt, .weight = wt, .bias = bt.view(), .y = y, .activation = act, .cu_seqlens = cut.view()};
          f.tensor_cores = false;
          conv1d_forward(f);
          Conv1dBackwardArgs b{.x = xt, .weight = wt, .bias = bt.view(), .dy = dyt, .activation = act, .cu_seqlens = cut.view(),
                               .dx = dx.view(), .dweight = dw.view(), .dbias = db.view()};
          b.tensor_cores = false;
          conv1d_backward(b);
          return std::vector<std::vector<double>>{values_of(y), values_of(dx), values_of(dw), values_of(db)};
        };
        const auto gpu = run(Device::cuda(0)), cpu = run(Device::cpu());
        const char* names[] = {"y", "dx", "dweight", "dbias"};
        int specials = 0;
        for (std::size_t o = 0; o < gpu.size(); ++o) {
          int failures = 0;
          for (std::size_t i = 0; i < gpu[o].size() && failures < 5; ++i) {
            const double a = gpu[o][i], b = cpu[o][i];
            const bool ok = std::isfinite(b) ? std::isfinite(a) && std::fabs(a - b) <= 1e-5 + 2 * rel_tolerance(d) * (std::fabs(b) + 1)
                                             : (std::isnan(b) ? std::isnan(a) : a == b);
            specials += std::isfinite(b) ? 0 : 1;
            if (!ok) {
              ADD_FAILURE() << names[o] << " element " << i << ": cuda " << a << ", cpu " << b << " (" << dtype_name(d) << " K " << K
                            << (silu ? " silu" : "") << ")";
              ++failures;
            }
          }
        }
        EXPECT_GT(specials, 0) << "the planted values reach no output";
      }
}

TEST(CudaDeterminism, BitwiseRunToRun) {
  SKIP_WITHOUT_GPU();
  for (const Problem& p : {Problem{4, 4096, 512, 4, DType::bf16, DType::bf16, true, false},
                           Problem{2, 3000, 96, 32, DType::f32, DType::f32, true, true}}) {
    const ProblemResult a = run_problem(p, Device::cuda(0), 3);
    const ProblemResult b = run_problem(p, Device::cuda(0), 3);
    for (std::size_t i = 0; i < a.raw.size(); ++i) EXPECT_EQ(a.raw[i], b.raw[i]) << p.name() << " output " << i;
  }
}

TEST(CudaNaive, MatchesReference) {
  SKIP_WITHOUT_GPU();
  for (const Problem& p : {Problem{2, 37, 33, 4, DType::f32, DType::f32, true, true},
                           Problem{3, 100, 64, 7, DType::bf16, DType::f32, true, false}})
    expect_problem_ok(p, Device::cuda(0), 5, Variant::naive);
}

TEST(CudaStream, WorkOnAnOwnedStream) {
  SKIP_WITHOUT_GPU();
  OwnedStream stream(Device::cuda(0));
  std::mt19937_64 rng(8);
  const std::int64_t B = 2, T = 513, C = 128, K = 4;
  Buffer x(DType::bf16, {B, T, C}, Device::cuda(0)), y(DType::bf16, {B, T, C}, Device::cuda(0));
  Buffer w(DType::bf16, {C, K}, Device::cuda(0));
  const auto xv = x.fill_random(rng);
  const auto wv = w.fill_random(rng);
  conv1d_forward(x.view(), w.view(), nullptr, y.view(), stream);
  synchronize(stream);
  const Comparison c = compare("y", y.download(), ref_forward({B, T, C, K}, xv, wv, nullptr), DType::bf16);
  EXPECT_TRUE(c.ok()) << c.str();
}

// ---- sequence-model features ---------------------------------------------------------------

class CudaFeatures : public testing::TestWithParam<FeatureProblem> {};

TEST_P(CudaFeatures, MatchReference) {
  SKIP_WITHOUT_GPU();
  expect_feature_ok(GetParam(), Device::cuda(0), 77 + GetParam().K);
}

INSTANTIATE_TEST_SUITE_P(Cuda, CudaFeatures, testing::ValuesIn(feature_problems({1, 2, 3, 4, 5, 8, 9, 16, 17, 33, 64})),
                         feature_name);

TEST(CudaInvariants, ChunkedAndDecodeMatchFullForward) {
  SKIP_WITHOUT_GPU();
  for (DType d : {DType::f32, DType::bf16, DType::f16})
    for (std::int64_t K : {2, 4, 5, 9, 20, 33})  // 33: the tensor-core forward (bf16, f16)
      for (bool silu : {false, true}) check_chunked_and_decode_match_full(Device::cuda(0), d, K, silu);
}

TEST(CudaInvariants, ChunkedGradientsMatchOneShot) {
  SKIP_WITHOUT_GPU();
  for (DType d : {DType::f32, DType::bf16})
    for (std::int64_t K : {2, 4, 7, 20})
      for (bool silu : {false, true}) check_chunked_gradients_match(Device::cuda(0), d, K, silu);
}

TEST(CudaInvariants, VarlenMatchesSeparateCalls) {
  SKIP_WITHOUT_GPU();
  for (DType d : {DType::f32, DType::f16})
    for (std::int64_t K : {1, 3, 4, 6, 12, 24}) check_varlen_matches_separate_calls(Device::cuda(0), d, K);
  for (DType d : {DType::bf16, DType::f16})  // the tensor-core backward (no SiLU)
    for (std::int64_t K : {17, 24, 33}) check_varlen_matches_separate_calls(Device::cuda(0), d, K, false);
}

TEST(CudaTensorCores, BackwardMatchesFmaKernels) {
  SKIP_WITHOUT_GPU();
  for (DType d : {DType::bf16, DType::f16})
    for (std::int64_t K : {17, 24, 32, 33, 64, 100, 112}) {
      check_tensor_core_backward(Device::cuda(0), d, K);
      // Runs of one piece or less, starting and ending inside sequences (a run's pieces overlap
      // their dweight blocks: this caught a double count).
      check_tensor_core_backward(Device::cuda(0), d, K, {300, 300, 300});
    }
}

TEST(CudaInvariants, FeaturesDeterministic) {
  SKIP_WITHOUT_GPU();
  check_features_deterministic(Device::cuda(0));
}

TEST(CudaDecode, StateIndicesAndPadding) {
  SKIP_WITHOUT_GPU();
  for (DType d : {DType::f32, DType::bf16})
    for (std::int64_t K : {2, 4, 7, 12, 20})
      for (std::int64_t tn : {1, 3}) check_decode_with_indices(Device::cuda(0), d, K, tn);
}

TEST(CudaDecode, OutOfRangeSlotGivesNanAndTouchesNoState) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(9);
  const std::int64_t B = 3, S = 2, C = 16, K = 4;
  auto [x, xv] = random_tensor(DType::f32, {B, 1, C}, Device::cuda(0), rng);
  auto [w, wv] = random_tensor(DType::f32, {C, K}, Device::cuda(0), rng);
  auto [state, sv] = random_tensor(DType::f32, {S, K - 1, C}, Device::cuda(0), rng);
  Tensor idx = index_tensor({0, 7, -1}, DType::i64, Device::cuda(0));
  Tensor y(DType::f32, {B, 1, C}, Device::cuda(0));
  const auto before = bytes_of(state);
  conv1d_update({.x = x, .conv_state = state, .weight = w, .bias = std::nullopt, .y = y, .activation = Activation::none,
                 .state_indices = idx.view()});
  const auto yb = bytes_of(y), after = bytes_of(state);
  for (std::int64_t c = 0; c < C; ++c) {
    EXPECT_TRUE(std::isnan(decode(DType::f32, yb.data(), C + c))) << "row with slot 7 of 2";
    EXPECT_EQ(decode(DType::f32, yb.data(), 2 * C + c), 0.0) << "padding row";
  }
  // Slot 1 untouched; slot 0 updated by row 0.
  EXPECT_EQ(0, std::memcmp(before.data() + (K - 1) * C * 4, after.data() + (K - 1) * C * 4, (K - 1) * C * 4));
}

TEST(CudaErrors, TensorLargerThanMemoryIsADeviceError) {
  SKIP_WITHOUT_GPU();
  // 2^46 f32 elements = 256 TiB: no card has it; the allocation fails cleanly.
  EXPECT_THROW(Tensor(DType::f32, {std::int64_t{1} << 46}, Device::cuda(0)), DeviceError);
  // The device is still usable afterwards.
  expect_problem_ok({1, 64, 32, 4, DType::f32, DType::f32, true, false}, Device::cuda(0), 3);
}

TEST(CudaErrors, BadCuSeqlensOnTheDeviceAreRejected) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(4);
  auto [x, xv] = random_tensor(DType::f32, {10, 8}, Device::cuda(0), rng);
  auto [w, wv] = random_tensor(DType::f32, {8, 3}, Device::cuda(0), rng);
  Tensor y(DType::f32, {10, 8}, Device::cuda(0));
  for (const std::vector<std::int64_t>& cu : {std::vector<std::int64_t>{0, 6, 4, 10}, {0, 4, 9}, {2, 10}}) {
    Tensor cu_t = index_tensor(cu, DType::i64, Device::cuda(0));
    EXPECT_THROW(conv1d_forward({.x = x, .weight = w, .bias = std::nullopt, .y = y, .activation = Activation::none,
                                 .initial_state = std::nullopt, .final_state = std::nullopt, .cu_seqlens = cu_t.view()}),
                 InvalidArgument);
  }
}

// ---- sizes past 32-bit indexing and grid limits -------------------------------------------

// Deterministic pseudo-random value for element i, in [-1, 1), exact in bf16.
double pattern(std::uint64_t i, std::uint64_t salt) {
  std::uint64_t z = (i + salt) * 0x9E3779B97F4A7C15ull;
  z ^= z >> 31;
  z *= 0xBF58476D1CE4E5B9ull;
  z ^= z >> 29;
  return static_cast<double>(static_cast<std::int64_t>(z >> 56) - 128) / 128.0;
}

TEST(CudaBig, MoreThan2To31Elements) {
  SKIP_WITHOUT_GPU();
  const std::int64_t B = 1, T = std::int64_t{1} << 18, C = 8200, K = 4;  // 2.15e9 elements
  const std::int64_t n = B * T * C;
  ASSERT_GT(n, std::int64_t{1} << 31);
  std::vector<std::uint16_t> host(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) host[i] = float_to_bf16(static_cast<float>(pattern(i, 1)));
  std::vector<std::uint16_t> wh(C * K);
  for (std::int64_t i = 0; i < C * K; ++i) wh[i] = float_to_bf16(static_cast<float>(pattern(i, 2)));
  Tensor x(DType::bf16, {B, T, C}, Device::cuda(0)), y(DType::bf16, {B, T, C}, Device::cuda(0));
  Tensor w(DType::bf16, {C, K}, Device::cuda(0)), dw(DType::bf16, {C, K}, Device::cuda(0));
  x.copy_from_host(host.data());
  w.copy_from_host(wh.data());
  conv1d_forward(x, w, nullptr, y);
  // dy = x: dw[c,k] = sum_t x[t+k-3] x[t].
  conv1d_backward({.x = x, .weight = w, .dy = x, .dweight = dw.view()});
  std::vector<std::uint16_t> yh(static_cast<std::size_t>(n)), dwh(C * K);
  y.copy_to_host(yh.data());
  dw.copy_to_host(dwh.data());
  auto xval = [&](std::int64_t t, std::int64_t c) { return static_cast<double>(bf16_to_float(host[t * C + c])); };
  // Rows near the start, the 2^31 boundary and the end; every channel of each.
  for (std::int64_t t : {std::int64_t{0}, std::int64_t{2}, (std::int64_t{1} << 31) / C, (std::int64_t{1} << 31) / C + 1, T - 1}) {
    for (std::int64_t c = 0; c < C; ++c) {
      double ref = 0.0, mag = 0.0;
      for (std::int64_t k = 0; k < K; ++k)
        if (t + k - (K - 1) >= 0) {
          const double term = bf16_to_float(wh[c * K + k]) * xval(t + k - (K - 1), c);
          ref += term;
          mag += std::fabs(term);
        }
      ASSERT_NEAR(bf16_to_float(yh[t * C + c]), ref, 1e-6 + rel_tolerance(DType::bf16) * mag) << "t " << t << " c " << c;
    }
  }
  for (std::int64_t c : {std::int64_t{0}, std::int64_t{4097}, C - 1})
    for (std::int64_t k = 0; k < K; ++k) {
      double ref = 0.0, mag = 0.0;
      for (std::int64_t t = K - 1 - k; t < T; ++t) {
        const double term = xval(t + k - (K - 1), c) * xval(t, c);
        ref += term;
        mag += std::fabs(term);
      }
      ASSERT_NEAR(bf16_to_float(dwh[c * K + k]), ref, 1e-3 + rel_tolerance(DType::bf16) * mag) << "c " << c << " k " << k;
    }
}

TEST(CudaBig, MillionChannels) {
  SKIP_WITHOUT_GPU();
  expect_problem_ok({2, 3, std::int64_t{1} << 20, 4, DType::bf16, DType::bf16, true, false}, Device::cuda(0), 17);
}

TEST(CudaBig, SixteenMillionTokens) {
  SKIP_WITHOUT_GPU();
  expect_problem_ok({1, std::int64_t{1} << 24, 3, 4, DType::f32, DType::f32, true, false}, Device::cuda(0), 19);
  expect_problem_ok({4096, 4096, 2, 3, DType::bf16, DType::f32, true, false}, Device::cuda(0), 23);
}

}  // namespace
}  // namespace shortconv::test
