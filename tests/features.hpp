// Sequence-model features (SiLU, states, varlen, decode) on any device, against the per-sequence
// fp64 reference in reference.hpp. Shared by the CPU and CUDA suites.
#pragma once

#include <numeric>

#include "harness.hpp"

namespace shortconv::test {

struct FeatureProblem {
  std::vector<std::int64_t> lengths;  // one entry a sequence; batch mode needs them all equal
  bool varlen = false;
  std::int64_t C = 8, K = 4;
  DType dtype = DType::f32, wdtype = DType::f32;
  bool bias = true, silu = false, init = false, final = false, dfs = false, dinit = false;
  DType cu_dtype = DType::i32;
  bool strided = false;  // batch mode only: x, dy column slices of a wider buffer

  std::string name() const {
    std::ostringstream os;
    os << (varlen ? "varlen" : "batch") << lengths.size() << "_T" << std::accumulate(lengths.begin(), lengths.end(), std::int64_t{0})
       << "_C" << C << "_K" << K << "_" << dtype_name(dtype) << "_w" << dtype_name(wdtype) << (bias ? "_bias" : "")
       << (silu ? "_silu" : "") << (init ? "_init" : "") << (final ? "_final" : "") << (dfs ? "_dfs" : "")
       << (dinit ? "_dinit" : "") << (varlen && cu_dtype == DType::i64 ? "_cu64" : "") << (strided ? "_strided" : "");
    return os.str();
  }
};

/// An index tensor (cu_seqlens, state indices) on `device`.
inline Tensor index_tensor(const std::vector<std::int64_t>& values, DType dtype, Device device) {
  Tensor t(dtype, {static_cast<std::int64_t>(values.size())}, device);
  if (dtype == DType::i64) {
    t.copy_from_host(values.data());
  } else {
    std::vector<std::int32_t> v32(values.begin(), values.end());
    t.copy_from_host(v32.data());
  }
  return t;
}

struct FeatureResult {
  std::vector<Comparison> comparisons;
  std::vector<std::vector<double>> outputs;  // y, final, dx, dw, db, dinit as downloaded
  std::int64_t touched_outside = 0;
};

inline FeatureResult run_feature_problem(const FeatureProblem& p, Device device, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const auto N = static_cast<std::int64_t>(p.lengths.size());
  const std::int64_t total = std::accumulate(p.lengths.begin(), p.lengths.end(), std::int64_t{0});
  const std::int64_t C = p.C, K = p.K;
  const bool states = K > 1;
  std::vector<std::int64_t> act_shape = p.varlen ? std::vector<std::int64_t>{total, C}
                                                 : std::vector<std::int64_t>{N, p.lengths.at(0), C};
  const std::int64_t pad = p.strided ? C + 3 : 0;
  Buffer x(p.dtype, act_shape, device, pad, p.strided ? 2 : 0), dy(p.dtype, act_shape, device, pad, p.strided ? 1 : 0);
  Buffer y(p.dtype, act_shape, device), dx(p.dtype, act_shape, device, p.strided ? 2 : 0, p.strided ? 1 : 0);
  Buffer w(p.wdtype, {C, K}, device), bias(p.wdtype, {C}, device), dw(p.wdtype, {C, K}, device), db(p.wdtype, {C}, device);
  const std::vector<std::int64_t> state_shape{N, K - 1, C};
  std::optional<Buffer> init, fin, dfs, dinit;
  if (states && p.init) init.emplace(p.dtype, state_shape, device);
  if (states && p.final) fin.emplace(p.dtype, state_shape, device);
  if (states && p.dfs) dfs.emplace(p.dtype, state_shape, device);
  if (states && p.dinit) dinit.emplace(p.dtype, state_shape, device);
  const auto xv = x.fill_random(rng), dyv = dy.fill_random(rng), wv = w.fill_random(rng), bv = bias.fill_random(rng);
  const auto initv = init ? init->fill_random(rng) : std::vector<double>{};
  const auto dfsv = dfs ? dfs->fill_random(rng) : std::vector<double>{};
  std::vector<std::int64_t> cu(N + 1, 0);
  for (std::int64_t s = 0; s < N; ++s) cu[s + 1] = cu[s] + p.lengths[s];
  std::optional<Tensor> cu_t;
  if (p.varlen) cu_t.emplace(index_tensor(cu, p.cu_dtype, device));

  Conv1dForwardArgs fa;
  fa.x = x.view();
  fa.weight = w.view();
  if (p.bias) fa.bias = bias.view();
  fa.y = y.view();
  fa.activation = p.silu ? Activation::silu : Activation::none;
  if (init) fa.initial_state = init->view();
  if (fin) fa.final_state = fin->view();
  if (cu_t) fa.cu_seqlens = cu_t->view();
  conv1d_forward(fa);
  Conv1dBackwardArgs ba;
  ba.x = x.view();
  ba.weight = w.view();
  if (p.bias) ba.bias = bias.view();
  ba.dy = dy.view();
  ba.activation = fa.activation;
  ba.initial_state = fa.initial_state;
  if (dfs) ba.d_final_state = dfs->view();
  ba.cu_seqlens = fa.cu_seqlens;
  ba.dx = dx.view();
  ba.dweight = dw.view();
  ba.dbias = db.view();
  if (dinit) ba.d_initial_state = dinit->view();
  conv1d_backward(ba);
  if (device.is_cuda()) synchronize(default_stream(device));

  // Reference, sequence by sequence.
  RefResult ry{std::vector<double>(total * C), std::vector<double>(total * C)};
  RefResult rdx = ry, rfin{std::vector<double>(N * (K - 1) * C), std::vector<double>(N * (K - 1) * C, 0.0)};
  RefResult rdinit = rfin;
  RefResult rdw{std::vector<double>(C * K, 0.0), std::vector<double>(C * K, 0.0)}, rdb{std::vector<double>(C, 0.0), std::vector<double>(C, 0.0)};
  for (std::int64_t s = 0; s < N; ++s) {
    const std::int64_t L = p.lengths[s], off = cu[s] * C;
    SeqInputs in{L, C, K, std::vector<double>(xv.begin() + off, xv.begin() + off + L * C), {}, wv, {}, p.silu};
    if (init) in.init.assign(initv.begin() + s * (K - 1) * C, initv.begin() + (s + 1) * (K - 1) * C);
    if (p.bias) in.bias = bv;
    const std::vector<double> dys(dyv.begin() + off, dyv.begin() + off + L * C);
    const std::vector<double> dfss = dfs ? std::vector<double>(dfsv.begin() + s * (K - 1) * C, dfsv.begin() + (s + 1) * (K - 1) * C)
                                         : std::vector<double>{};
    const SeqForward f = ref_seq_forward(in);
    const SeqBackward g = ref_seq_backward(in, dys, dfss);
    std::copy(f.y.value.begin(), f.y.value.end(), ry.value.begin() + off);
    std::copy(f.y.abs_sum.begin(), f.y.abs_sum.end(), ry.abs_sum.begin() + off);
    std::copy(g.dx.value.begin(), g.dx.value.end(), rdx.value.begin() + off);
    std::copy(g.dx.abs_sum.begin(), g.dx.abs_sum.end(), rdx.abs_sum.begin() + off);
    std::copy(f.final_state.begin(), f.final_state.end(), rfin.value.begin() + s * (K - 1) * C);
    std::copy(g.dinit.value.begin(), g.dinit.value.end(), rdinit.value.begin() + s * (K - 1) * C);
    std::copy(g.dinit.abs_sum.begin(), g.dinit.abs_sum.end(), rdinit.abs_sum.begin() + s * (K - 1) * C);
    for (std::int64_t i = 0; i < C * K; ++i) rdw.value[i] += g.dw.value[i], rdw.abs_sum[i] += g.dw.abs_sum[i];
    for (std::int64_t i = 0; i < C; ++i) rdb.value[i] += g.db.value[i], rdb.abs_sum[i] += g.db.abs_sum[i];
  }
  // final_state holds copies of inputs: exact.
  for (auto& a : rfin.abs_sum) a = 0.0;

  FeatureResult r;
  auto add = [&](const char* name, Buffer& b, const RefResult& ref, DType dt) {
    r.outputs.push_back(b.download());
    r.comparisons.push_back(compare(name, r.outputs.back(), ref, dt));
  };
  add("y", y, ry, p.dtype);
  add("dx", dx, rdx, p.dtype);
  add("dweight", dw, rdw, p.wdtype);
  add("dbias", db, rdb, p.wdtype);
  if (fin) add("final_state", *fin, rfin, p.dtype);
  if (dinit) add("d_initial_state", *dinit, rdinit, p.dtype);
  r.touched_outside = dx.touched_outside_view();
  return r;
}

inline void expect_feature_ok(const FeatureProblem& p, Device device, std::uint64_t seed) {
  const FeatureResult r = run_feature_problem(p, device, seed);
  for (const Comparison& c : r.comparisons) EXPECT_TRUE(c.ok()) << p.name() << " on " << device.str() << ": " << c.str();
  EXPECT_EQ(r.touched_outside, 0) << p.name();
}

inline std::vector<FeatureProblem> feature_problems(std::initializer_list<std::int64_t> widths) {
  std::vector<FeatureProblem> out;
  const std::pair<DType, DType> dtypes[] = {{DType::f32, DType::f32}, {DType::bf16, DType::bf16}, {DType::f16, DType::f32}};
  int n = 0;
  for (std::int64_t K : widths)
    for (const auto& [dt, wt] : dtypes) {
      // Batch mode: every feature on and off in turn, lengths around K.
      for (std::int64_t T : {std::int64_t{1}, std::max<std::int64_t>(1, K - 2), K + 1, std::int64_t{70}}) {
        ++n;
        FeatureProblem p;
        p.lengths = {T, T, T};
        // 40 strided and 9 take the CUDA register-window kernels (unaligned rows); 48 contiguous
        // takes the tiled ones.
        p.C = n % 2 ? 40 : n % 4 == 0 ? 48 : 9;
        p.K = K;
        p.dtype = dt;
        p.wdtype = wt;
        p.silu = n % 2 == 0;
        p.init = n % 3 != 0;
        p.final = n % 4 != 1;
        p.dfs = n % 5 != 2;
        p.dinit = n % 3 != 2;
        p.bias = n % 7 != 3;
        p.strided = n % 2 == 1;
        out.push_back(p);
      }
      // Batch mode, 16-byte aligned rows, every state and a bias, two sequences of `len` rows.
      auto all_states = [&](std::int64_t len, bool silu) {
        FeatureProblem p;
        p.lengths = {len, len};
        p.C = 200;
        p.K = K;
        p.dtype = dt;
        p.wdtype = wt;
        p.silu = silu;
        p.init = p.final = p.dfs = p.dinit = p.bias = true;
        out.push_back(p);
      };
      // No SiLU: the CUDA tensor-core backward for 16-bit x and weights with K >= 17; two pieces
      // of 128 rows a sequence. 200 channels: the last 64-channel tile 8 wide (too few jobs here
      // for the two-tile blocks: see below).
      all_states(150, false);
      // 2 x 4500 rows (141 pieces of 64, 2 jobs of 128 channels each): enough jobs that the CUDA
      // 16-bit FMA kernels (forward K <= 16, backward K <= 8) run blocks of two 64-channel tiles
      // (tiled_parts); SiLU on for odd K (the SiLU backward keeps one tile, its forward takes two).
      // The same for the CUDA tensor-core forward (16-bit, K >= 24): 284 pieces of 128 rows x 64
      // channels, so at K <= 57 it takes its 4-warp blocks (two channel groups a warp; fewer pieces
      // than SMs take 8-warp ones), with states, and SiLU for odd K.
      if (K <= 16 || K >= 24) all_states(4500, K % 2 == 1);
      // SiLU at K = 4: the CUDA backward computes g inside its one-pass groups for pieces of 64
      // rows away from a sequence's ends and through the g tile elsewhere; pieces of both kinds,
      // without an initial state (batch: 300 rows, so pieces of the second sequence start off
      // the 64-row grid; 320, so the last piece is a whole 64 rows ending at the sequence's end)
      // and with every state (varlen, sequences of 1 to 200 rows).
      if (K == 4) {
        FeatureProblem b;
        b.lengths = {300, 300};
        b.C = 72;
        b.K = K;
        b.dtype = dt;
        b.wdtype = wt;
        b.silu = b.final = true;
        out.push_back(b);
        FeatureProblem b2 = b;
        b2.lengths = {320, 320};
        b2.final = false;
        out.push_back(b2);
        FeatureProblem v = b;
        v.varlen = true;
        v.lengths = {200, 1, 130, 64, 67, 3, 190};
        v.init = v.dfs = v.dinit = true;
        v.cu_dtype = DType::i64;
        out.push_back(v);
      }
      // Varlen: lengths 1, K-1, K+1, an empty sequence, a long one; with and without states.
      for (int v = 0; v < 2; ++v) {
        FeatureProblem p;
        p.varlen = true;
        p.lengths = {1, std::max<std::int64_t>(1, K - 1), K + 1, 0, 61, 2};
        p.C = 24;
        p.K = K;
        p.dtype = dt;
        p.wdtype = wt;
        p.silu = v == 1;
        p.init = p.final = p.dfs = p.dinit = v == 0 || K % 2 == 0;
        p.cu_dtype = v == 0 ? DType::i32 : DType::i64;
        out.push_back(p);
      }
    }
  return out;
}

inline std::string feature_name(const testing::TestParamInfo<FeatureProblem>& info) { return info.param.name(); }

// ---- invariants ---------------------------------------------------------------------------

/// Random host values rounded to `dtype`, and a device tensor holding them.
inline std::pair<Tensor, std::vector<double>> random_tensor(DType dtype, std::vector<std::int64_t> shape, Device device,
                                                            std::mt19937_64& rng) {
  Tensor t(dtype, std::span<const std::int64_t>(shape), device);
  std::vector<std::byte> host(t.nbytes());
  std::vector<double> values(static_cast<std::size_t>(t.numel()));
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    encode(dtype, dist(rng), host.data(), i);
    values[i] = decode(dtype, host.data(), i);
  }
  t.copy_from_host(host.data());
  return {std::move(t), std::move(values)};
}

/// The bytes of an owning tensor (after the device finished).
inline std::vector<std::byte> bytes_of(const Tensor& t) {
  if (t.device().is_cuda()) synchronize(default_stream(t.device()));
  std::vector<std::byte> out(t.nbytes());
  t.copy_to_host(out.data());
  return out;
}

/// The values of an owning tensor, decoded to double.
inline std::vector<double> values_of(const Tensor& t) {
  const auto bytes = bytes_of(t);
  std::vector<double> out(static_cast<std::size_t>(t.numel()));
  for (std::int64_t i = 0; i < t.numel(); ++i) out[static_cast<std::size_t>(i)] = decode(t.dtype(), bytes.data(), i);
  return out;
}

/// Rows [t0, t0+n) of a contiguous [B, T, C] tensor as a view.
inline TensorView rows_of(const Tensor& t, std::int64_t t0, std::int64_t n) { return t.view().narrow(1, t0, n); }

}  // namespace shortconv::test
