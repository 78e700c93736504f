// Invariant tests of the sequence-model features, written once over a Device; the CPU and CUDA
// suites instantiate them (the CUDA ones skip without a GPU).
#pragma once

#include "features.hpp"

namespace shortconv::test {

/// The forward with tensor cores allowed (the default) against y_exact, the same call without:
/// within two units in the last place of the dtype (the f32 sums are grouped differently; where no
/// tensor-core kernel applies they are equal). Chunks whose starts are multiples of 16 tokens give
/// the tensor-core result bitwise: its sums are grouped by position in the sequence.
inline void check_tensor_core_forward(const Tensor& x, const Tensor& w, const Tensor& bias, Activation act, const Tensor& y_exact,
                                      std::int64_t K) {
  const DType dtype = x.dtype();
  const std::int64_t B = x.view().shape()[0], T = x.view().shape()[1], C = x.view().shape()[2];
  const Device device = x.device();
  Tensor y(dtype, {B, T, C}, device), y_chunk(dtype, {B, T, C}, device);
  conv1d_forward({.x = x, .weight = w, .bias = bias.view(), .y = y, .activation = act});
  const auto got = values_of(y), want = values_of(y_exact);
  const double ulp = dtype == DType::bf16 ? 0x1p-8 : dtype == DType::f16 ? 0x1p-11 : 0x1p-24;
  for (std::size_t i = 0; i < got.size(); ++i)
    ASSERT_LE(std::abs(got[i] - want[i]), 2 * ulp * std::abs(want[i]) + 1e-6)
        << "tensor-core forward, element " << i << " (K " << K << ", " << dtype_name(dtype) << ")";
  Tensor s0(dtype, {B, K - 1, C}, device), s1(dtype, {B, K - 1, C}, device);
  std::int64_t t0 = 0;
  for (std::int64_t n : {std::int64_t{16}, std::int64_t{32}, std::int64_t{-1}}) {
    if (n < 0) n = T - t0;
    Conv1dForwardArgs a{.x = rows_of(x, t0, n), .weight = w, .bias = bias.view(), .y = rows_of(y_chunk, t0, n), .activation = act};
    if (t0 > 0) a.initial_state = s0.view();
    a.final_state = s1.view();
    conv1d_forward(a);
    std::swap(s0, s1);
    t0 += n;
  }
  EXPECT_EQ(bytes_of(y), bytes_of(y_chunk)) << "chunks of 16 and 32 tokens differ from the full tensor-core forward (K " << K << ")";
}

/// One full forward == chunked forwards handing final_state -> initial_state == token-by-token
/// decode from an empty state. Bitwise: every output sums the same terms in the same order (with
/// tensor_cores = false; the tensor-core forward is checked against it below).
inline void check_chunked_and_decode_match_full(Device device, DType dtype, std::int64_t K, bool silu) {
  std::mt19937_64 rng(100 + K);
  const std::int64_t B = 2, T = 53, C = 40;
  auto [x, xv] = random_tensor(dtype, {B, T, C}, device, rng);
  auto [w, wv] = random_tensor(dtype, {C, K}, device, rng);
  auto [bias, bv] = random_tensor(dtype, {C}, device, rng);
  const Activation act = silu ? Activation::silu : Activation::none;
  Tensor y_full(dtype, {B, T, C}, device), y_chunk(dtype, {B, T, C}, device), y_dec(dtype, {B, T, C}, device);
  conv1d_forward({.x = x, .weight = w, .bias = bias.view(), .y = y_full, .activation = act, .tensor_cores = false});

  // Chunks of 1, K-1, 17 and the rest; states ping-pong between two buffers.
  Tensor s0(dtype, {B, K - 1, C}, device), s1(dtype, {B, K - 1, C}, device);
  std::int64_t t0 = 0;
  bool first = true;
  for (std::int64_t n : {std::int64_t{1}, std::max<std::int64_t>(1, K - 1), std::int64_t{17}, std::int64_t{-1}}) {
    if (n < 0) n = T - t0;
    Conv1dForwardArgs a{.x = rows_of(x, t0, n), .weight = w, .bias = bias.view(), .y = rows_of(y_chunk, t0, n), .activation = act};
    if (!first) a.initial_state = s0.view();
    a.final_state = s1.view();
    a.tensor_cores = false;
    conv1d_forward(a);
    std::swap(s0, s1);
    t0 += n;
    first = false;
  }
  ASSERT_EQ(t0, T);
  check_tensor_core_forward(x, w, bias, act, y_full, K);

  // Decode one token at a time from a zero state.
  Tensor sd(dtype, {B, K - 1, C}, device);
  std::vector<std::byte> zeros(sd.nbytes());
  for (std::int64_t i = 0; i < sd.numel(); ++i) encode(dtype, 0.0, zeros.data(), i);
  sd.copy_from_host(zeros.data());
  for (std::int64_t t = 0; t < T; ++t)
    conv1d_update({.x = rows_of(x, t, 1), .conv_state = sd, .weight = w, .bias = bias.view(), .y = rows_of(y_dec, t, 1),
                   .activation = act});

  const auto full = bytes_of(y_full);
  EXPECT_EQ(full, bytes_of(y_chunk)) << "chunked forward differs from the full forward (K " << K << ")";
  EXPECT_EQ(full, bytes_of(y_dec)) << "token-by-token decode differs from the full forward (K " << K << ")";
  // Both end with the last K-1 inputs as the state.
  EXPECT_EQ(bytes_of(s0), bytes_of(sd)) << "chunked final state differs from the decode state";
}

/// Gradients of a sequence split into two chunks (final_state -> initial_state, and the second
/// chunk's d_initial_state fed back as the first chunk's d_final_state) match one-shot gradients.
inline void check_chunked_gradients_match(Device device, DType dtype, std::int64_t K, bool silu) {
  std::mt19937_64 rng(200 + K);
  const std::int64_t B = 2, T = 45, C = 24, T1 = 19, T2 = T - T1;
  auto [x, xv] = random_tensor(dtype, {B, T, C}, device, rng);
  auto [dy, dyv] = random_tensor(dtype, {B, T, C}, device, rng);
  auto [w, wv] = random_tensor(DType::f32, {C, K}, device, rng);
  auto [bias, bv] = random_tensor(DType::f32, {C}, device, rng);
  const Activation act = silu ? Activation::silu : Activation::none;
  Tensor dx(dtype, {B, T, C}, device), dw(DType::f32, {C, K}, device), db(DType::f32, {C}, device);
  conv1d_backward({.x = x, .weight = w, .bias = bias.view(), .dy = dy, .activation = act, .dx = dx.view(), .dweight = dw.view(),
                   .dbias = db.view()});

  Tensor state(dtype, {B, K - 1, C}, device), dstate(dtype, {B, K - 1, C}, device);
  Tensor y1(dtype, {B, T1, C}, device);
  conv1d_forward({.x = rows_of(x, 0, T1), .weight = w, .bias = bias.view(), .y = y1, .activation = act, .final_state = state.view()});
  Tensor dx_c(dtype, {B, T, C}, device), dw2(DType::f32, {C, K}, device), db2(DType::f32, {C}, device);
  Tensor dw1(DType::f32, {C, K}, device), db1(DType::f32, {C}, device);
  conv1d_backward({.x = rows_of(x, T1, T2), .weight = w, .bias = bias.view(), .dy = rows_of(dy, T1, T2), .activation = act,
                   .initial_state = state.view(), .dx = rows_of(dx_c, T1, T2), .dweight = dw2.view(), .dbias = db2.view(),
                   .d_initial_state = dstate.view()});
  conv1d_backward({.x = rows_of(x, 0, T1), .weight = w, .bias = bias.view(), .dy = rows_of(dy, 0, T1), .activation = act,
                   .d_final_state = dstate.view(), .dx = rows_of(dx_c, 0, T1), .dweight = dw1.view(), .dbias = db1.view()});

  auto f32 = [](const Tensor& t) {
    const auto b = bytes_of(t);
    std::vector<double> v(static_cast<std::size_t>(t.numel()));
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = decode(t.dtype(), b.data(), static_cast<std::int64_t>(i));
    return v;
  };
  const auto dx_full = f32(dx), dx_chunk = f32(dx_c);
  const double tol = dtype == DType::f32 ? 1e-5 : dtype == DType::bf16 ? 4e-2 : 5e-3;
  for (std::size_t i = 0; i < dx_full.size(); ++i)
    ASSERT_NEAR(dx_chunk[i], dx_full[i], tol * (1 + std::fabs(dx_full[i]))) << "dx at " << i;
  const auto dw_full = f32(dw), dwa = f32(dw1), dwb = f32(dw2), db_full = f32(db), dba = f32(db1), dbb = f32(db2);
  for (std::size_t i = 0; i < dw_full.size(); ++i)
    ASSERT_NEAR(dwa[i] + dwb[i], dw_full[i], 1e-4 * (1 + std::fabs(dw_full[i]))) << "dweight at " << i;
  for (std::size_t i = 0; i < db_full.size(); ++i) ASSERT_NEAR(dba[i] + dbb[i], db_full[i], 1e-4 * (1 + std::fabs(db_full[i])));
}

/// A varlen call equals separate calls per sequence: forward and dx bitwise, dw and dbias close.
/// (Without SiLU, 16-bit dtypes and K >= 17 take the CUDA tensor-core backward.)
inline void check_varlen_matches_separate_calls(Device device, DType dtype, std::int64_t K, bool silu = true) {
  std::mt19937_64 rng(300 + K);
  const std::vector<std::int64_t> lengths{5, 1, 33, 0, 2, 17};
  const std::int64_t C = 16;
  std::vector<std::int64_t> cu{0};
  for (auto l : lengths) cu.push_back(cu.back() + l);
  const std::int64_t total = cu.back();
  auto [x, xv] = random_tensor(dtype, {1, total, C}, device, rng);
  auto [dy, dyv] = random_tensor(dtype, {1, total, C}, device, rng);
  auto [w, wv] = random_tensor(dtype, {C, K}, device, rng);
  auto [bias, bv] = random_tensor(dtype, {C}, device, rng);
  Tensor cu_t = index_tensor(cu, DType::i64, device);
  const Activation act = silu ? Activation::silu : Activation::none;
  Tensor y(dtype, {1, total, C}, device), dx(dtype, {1, total, C}, device), dw(dtype, {C, K}, device), db(dtype, {C}, device);
  conv1d_forward({.x = x, .weight = w, .bias = bias.view(), .y = y, .activation = act, .cu_seqlens = cu_t.view()});
  conv1d_backward({.x = x, .weight = w, .bias = bias.view(), .dy = dy, .activation = act, .cu_seqlens = cu_t.view(),
                   .dx = dx.view(), .dweight = dw.view(), .dbias = db.view()});
  Tensor y_sep(dtype, {1, total, C}, device), dx_sep(dtype, {1, total, C}, device);
  std::vector<double> dw_sum(C * K, 0.0), db_sum(C, 0.0);
  for (std::size_t s = 0; s < lengths.size(); ++s) {
    if (lengths[s] == 0) continue;
    Tensor dws(dtype, {C, K}, device), dbs(dtype, {C}, device);
    conv1d_forward({.x = rows_of(x, cu[s], lengths[s]), .weight = w, .bias = bias.view(), .y = rows_of(y_sep, cu[s], lengths[s]),
                    .activation = act});
    conv1d_backward({.x = rows_of(x, cu[s], lengths[s]), .weight = w, .bias = bias.view(), .dy = rows_of(dy, cu[s], lengths[s]),
                     .activation = act, .dx = rows_of(dx_sep, cu[s], lengths[s]), .dweight = dws.view(),
                     .dbias = dbs.view()});
    const auto bw = bytes_of(dws), bb = bytes_of(dbs);
    for (std::int64_t i = 0; i < C * K; ++i) dw_sum[i] += decode(dtype, bw.data(), i);
    for (std::int64_t i = 0; i < C; ++i) db_sum[i] += decode(dtype, bb.data(), i);
  }
  EXPECT_EQ(bytes_of(y), bytes_of(y_sep)) << "varlen forward differs from per-sequence calls";
  EXPECT_EQ(bytes_of(dx), bytes_of(dx_sep)) << "varlen dx differs from per-sequence calls";
  const auto bw = bytes_of(dw), bb = bytes_of(db);
  const double tol = dtype == DType::f32 ? 1e-4 : 3e-2;
  for (std::int64_t i = 0; i < C * K; ++i) EXPECT_NEAR(decode(dtype, bw.data(), i), dw_sum[i], tol * (1 + std::fabs(dw_sum[i])));
  for (std::int64_t i = 0; i < C; ++i) EXPECT_NEAR(decode(dtype, bb.data(), i), db_sum[i], tol * (1 + std::fabs(db_sum[i])));
}

/// The tensor-core backward (the default) against the FMA kernels (tensor_cores = false): packed
/// sequences of random lengths with initial states and d_final_state, long enough for many runs
/// per channel tile, so runs start inside sequences at positions that are not multiples of 16.
/// dx, dweight and dbias within two units in the last place (plus the f32 summation-order
/// difference of a long sum), d_initial_state bitwise (the same kernel computes it), and every
/// output bitwise run to run.
/// `lengths` empty: 23 random ones (with 1, K-1 and 17 among them).
inline void check_tensor_core_backward(Device device, DType dtype, std::int64_t K, std::vector<std::int64_t> lengths = {}) {
  const bool expect_tc_differs = lengths.empty();
  std::mt19937_64 rng(500 + K);
  std::uniform_int_distribution<std::int64_t> len_dist(1, 2500);
  if (lengths.empty())
    for (std::int64_t s = 0; s < 23; ++s) lengths.push_back(s == 3 ? 1 : s == 4 ? K - 1 : s == 5 ? 17 : len_dist(rng));
  std::vector<std::int64_t> cu{0};
  for (std::int64_t l : lengths) cu.push_back(cu.back() + l);
  const std::int64_t N = static_cast<std::int64_t>(cu.size()) - 1, total = cu.back(), C = 72;
  auto [x, xv] = random_tensor(dtype, {1, total, C}, device, rng);
  auto [dy, dyv] = random_tensor(dtype, {1, total, C}, device, rng);
  auto [w, wv] = random_tensor(dtype, {C, K}, device, rng);
  auto [init, iv] = random_tensor(dtype, {N, K - 1, C}, device, rng);
  auto [dfs, fv] = random_tensor(dtype, {N, K - 1, C}, device, rng);
  Tensor cu_t = index_tensor(cu, DType::i32, device);
  struct Grads {
    Tensor dx, dw, db, dinit;
  };
  auto run = [&](bool tensor_cores) {
    Grads g{Tensor(dtype, {1, total, C}, device), Tensor(dtype, {C, K}, device), Tensor(dtype, {C}, device),
            Tensor(dtype, {N, K - 1, C}, device)};
    Conv1dBackwardArgs a{.x = x, .weight = w, .dy = dy, .initial_state = init.view(), .d_final_state = dfs.view(),
                         .cu_seqlens = cu_t.view(), .dx = g.dx.view(), .dweight = g.dw.view(), .dbias = g.db.view(),
                         .d_initial_state = g.dinit.view()};
    a.tensor_cores = tensor_cores;
    conv1d_backward(a);
    return g;
  };
  const Grads tc = run(true), tc2 = run(true), fma = run(false);
  const double ulp = dtype == DType::bf16 ? 0x1p-8 : 0x1p-11;
  auto close = [&](const Tensor& got, const Tensor& want, double atol, const char* name) {
    const auto a = values_of(got), b = values_of(want);
    for (std::size_t i = 0; i < a.size(); ++i)
      ASSERT_LE(std::abs(a[i] - b[i]), 2 * ulp * std::abs(b[i]) + atol)
          << name << " at " << i << ": tensor cores " << a[i] << ", FMA " << b[i] << " (K " << K << ", " << dtype_name(dtype) << ")";
  };
  close(tc.dx, fma.dx, 1e-3, "dx");
  close(tc.dw, fma.dw, 2e-2, "dweight");
  close(tc.db, fma.db, 2e-2, "dbias");
  EXPECT_EQ(bytes_of(tc.dinit), bytes_of(fma.dinit)) << "d_initial_state (K " << K << ")";
  EXPECT_EQ(bytes_of(tc.dx), bytes_of(tc2.dx)) << "dx run to run (K " << K << ")";
  EXPECT_EQ(bytes_of(tc.dw), bytes_of(tc2.dw)) << "dweight run to run (K " << K << ")";
  EXPECT_EQ(bytes_of(tc.db), bytes_of(tc2.db)) << "dbias run to run (K " << K << ")";
  // The tensor-core kernel ran (a dispatch change would otherwise leave this test comparing the
  // FMA kernels with themselves): it sums in another order, so over the ~1.8M dx elements of the
  // random lengths some round differently. (The short {300, 300, 300} runs have too few
  // elements for that to be certain, so they skip this check.)
  if (expect_tc_differs)
    EXPECT_TRUE(bytes_of(tc.dx) != bytes_of(fma.dx) || bytes_of(tc.dw) != bytes_of(fma.dw))
        << "K " << K << ": bitwise the FMA kernels' result; did the tensor-core backward run?";
}

/// Repeated runs with every feature on are bitwise identical.
inline void check_features_deterministic(Device device) {
  FeatureProblem p;
  p.varlen = true;
  p.lengths = {700, 3, 0, 1500, 64};
  p.C = 96;
  p.K = 4;
  p.dtype = p.wdtype = DType::bf16;
  p.silu = p.init = p.final = p.dfs = p.dinit = true;
  const FeatureResult a = run_feature_problem(p, device, 5), b = run_feature_problem(p, device, 5);
  ASSERT_EQ(a.outputs.size(), b.outputs.size());
  for (std::size_t i = 0; i < a.outputs.size(); ++i) {
    ASSERT_EQ(a.outputs[i].size(), b.outputs[i].size());
    EXPECT_EQ(0, std::memcmp(a.outputs[i].data(), b.outputs[i].data(), a.outputs[i].size() * sizeof(double))) << "output " << i;
  }
  for (const Comparison& c : a.comparisons) EXPECT_TRUE(c.ok()) << c.str();
}

/// Decode with state indices: rows map to slots, -1 rows are skipped with y = 0, untouched slots
/// keep their bytes, and results match the reference over (state ++ x).
inline void check_decode_with_indices(Device device, DType dtype, std::int64_t K, std::int64_t t_new) {
  std::mt19937_64 rng(400 + K);
  const std::int64_t B = 5, S = 7, C = 20;
  auto [x, xv] = random_tensor(dtype, {B, t_new, C}, device, rng);
  auto [w, wv] = random_tensor(dtype, {C, K}, device, rng);
  auto [bias, bv] = random_tensor(dtype, {C}, device, rng);
  auto [state, sv] = random_tensor(dtype, {S, K - 1, C}, device, rng);
  const std::vector<std::int64_t> idx{3, -1, 0, 6, 2};
  Tensor idx_t = index_tensor(idx, DType::i32, device);
  Tensor y(dtype, {B, t_new, C}, device);
  conv1d_update({.x = x, .conv_state = state, .weight = w, .bias = bias.view(), .y = y, .activation = Activation::silu,
                 .state_indices = idx_t.view()});
  const auto yb = bytes_of(y), sb = bytes_of(state);
  for (std::int64_t b = 0; b < B; ++b) {
    if (idx[b] < 0) {
      for (std::int64_t i = 0; i < t_new * C; ++i) EXPECT_EQ(decode(dtype, yb.data(), b * t_new * C + i), 0.0) << "padding row";
      continue;
    }
    SeqInputs in{t_new, C, K, std::vector<double>(xv.begin() + b * t_new * C, xv.begin() + (b + 1) * t_new * C),
                 std::vector<double>(sv.begin() + idx[b] * (K - 1) * C, sv.begin() + (idx[b] + 1) * (K - 1) * C), wv, bv, true};
    const SeqForward f = ref_seq_forward(in);
    std::vector<double> got(t_new * C), new_state((K - 1) * C);
    for (std::int64_t i = 0; i < t_new * C; ++i) got[i] = decode(dtype, yb.data(), b * t_new * C + i);
    const Comparison c = compare("y", got, f.y, dtype);
    EXPECT_TRUE(c.ok()) << "row " << b << ": " << c.str();
    for (std::int64_t i = 0; i < (K - 1) * C; ++i)
      EXPECT_EQ(decode(dtype, sb.data(), idx[b] * (K - 1) * C + i), f.final_state[i]) << "slot " << idx[b] << " entry " << i;
  }
  for (std::int64_t slot : {1, 4, 5})  // unused slots keep their bytes
    for (std::int64_t i = 0; i < (K - 1) * C; ++i)
      EXPECT_EQ(decode(dtype, sb.data(), slot * (K - 1) * C + i), sv[slot * (K - 1) * C + i]);
}

}  // namespace shortconv::test
