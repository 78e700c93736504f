// `shortconv check`: runs conv1d_forward and conv1d_backward (or, with --decode, conv1d_update) on
// a device and compares every output with the fp64 reference of reference_check.hpp, computed from
// the same rounded inputs, sequence by sequence.
//
// Inputs are uniform in [-1, 1] from a seeded mt19937_64 (redrawn when they round to zero), one
// generator per dtype with the same seed, so every dtype sees the same values before rounding.
// Outputs are filled with all-ones bytes (a NaN in f32, bf16 and f16) before the run, so an element
// the kernel never writes fails the comparison.
//
// Tolerance: |a - r| <= atol + rtol * (sum of |terms| of r), rtol per output dtype, the convention
// of tests/harness.hpp. STYLE.md's rtol * |r| is the usual form, but a sum rounded to a short
// dtype, or a SiLU of one, is off by a multiple of epsilon times its terms, not of the result:
// near a cancellation (or silu(z) near 0) a bound on |r| fails correct kernels. Reductions
// (dweight, dbias) need no extra scaling: their sums of |terms| grow with B*T by themselves.
// Copies (final_state, the decode state) and padding rows have no terms: they must be exact.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common.hpp"
#include "reference_check.hpp"

namespace shortconv::tool {
namespace {

constexpr double kAtol = 1e-6;

// Relative tolerance of an output stored in `dtype`, against the sum of |terms|: room for two
// roundings to the dtype (unit roundoff u: bf16 2^-8, f16 2^-11), the final store and one in
// between, plus 2e-5 for the f32 arithmetic. One rounding alone can reach u * |r| (a result just
// above a power of two), so a bound of one u, as tests/harness.hpp has for bf16, has no headroom.
Tolerance tolerance(DType dtype) {
  switch (dtype) {
    case DType::f32: return {kAtol, 2e-5};
    case DType::bf16: return {kAtol, 2.0 / 256 + 2e-5};
    case DType::f16: return {kAtol, 2.0 / 2048 + 2e-5};
    case DType::i32:
    case DType::i64: break;
  }
  throw Unsupported("check: dtype " + std::string(dtype_name(dtype)) + " is not a floating type");
}

// A host tensor: the bits handed to the device and their exact values in double.
struct HostTensor {
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  std::vector<unsigned char> bytes;
  std::vector<double> values;
};

std::int64_t numel(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (std::int64_t s : shape) n *= s;
  return n;
}

HostTensor random_tensor(DType dtype, std::vector<std::int64_t> shape, std::mt19937_64& gen) {
  HostTensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  const std::int64_t n = numel(t.shape);
  t.bytes.resize(static_cast<std::size_t>(n) * dtype_size(dtype));
  t.values.resize(static_cast<std::size_t>(n));
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (std::int64_t i = 0; i < n; ++i) {
    float v = 0.0f;
    while (round_to(dtype, v) == 0.0f) v = uniform(gen);  // never zero: a zero hides missed terms
    store_host(t.bytes.data(), dtype, i, v);
    t.values[i] = load_host(t.bytes.data(), dtype, i);
  }
  return t;
}

Tensor upload(const HostTensor& host, Device device) {
  Tensor t(host.dtype, std::span<const std::int64_t>(host.shape), device);
  t.copy_from_host(host.bytes.data());
  return t;
}

// An output tensor whose every element is a NaN.
Tensor poisoned(DType dtype, const std::vector<std::int64_t>& shape, Device device) {
  Tensor t(dtype, std::span<const std::int64_t>(shape), device);
  const std::vector<unsigned char> nan_bytes(t.nbytes(), 0xff);  // all-ones: NaN in every format
  t.copy_from_host(nan_bytes.data());
  return t;
}

std::vector<double> download(const Tensor& t) {
  std::vector<unsigned char> bytes(t.nbytes());
  t.copy_to_host(bytes.data());
  std::vector<double> values(static_cast<std::size_t>(t.numel()));
  for (std::int64_t i = 0; i < t.numel(); ++i) values[i] = load_host(bytes.data(), t.dtype(), i);
  return values;
}

// Multi-index "[b, t, c]" of flat row-major index `flat`.
std::string index_str(std::int64_t flat, std::span<const std::int64_t> shape) {
  std::vector<std::int64_t> idx(shape.size());
  for (std::size_t d = shape.size(); d-- > 0;) {
    idx[d] = shape[d] > 0 ? flat % shape[d] : 0;
    flat = shape[d] > 0 ? flat / shape[d] : 0;
  }
  return shape_str(idx);
}

// "[1, 3, 7]" for a short list, "12 values, 1 to 4187" for a long one.
std::string list_str(const std::vector<std::int64_t>& v) {
  if (v.size() <= 16) return shape_str(v);
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  return format("%zu values, %lld to %lld", v.size(), static_cast<long long>(*lo), static_cast<long long>(*hi));
}

// Passed and compared outputs of one dtype.
struct Tally {
  int passed = 0;
  int total = 0;
};

void print_table_header() {
  std::printf("  %-15s %-16s %10s  %-16s %15s %15s %10s  %s\n", "output", "shape", "worst/tol", "at", "got",
              "reference", "|a-r|", "result");
}

// Compares one output (or the elements `select` of it), prints its row and counts it. An output
// with no elements to compare (a state when K = 1) is listed but not counted.
void report(Tally& tally, const char* name, const std::vector<double>& got, std::span<const std::int64_t> shape,
            const RefValues& want, Tolerance tol, std::span<const std::int64_t> select = {}) {
  const std::string shape_s = shape_str(shape);
  if (want.value.empty()) {
    std::printf("  %-15s %-16s %10s  (no elements)\n", name, shape_s.c_str(), "-");
    return;
  }
  const Comparison cmp = compare(got, want, tol, select);
  const std::string at = index_str(cmp.index, shape);
  std::printf("  %-15s %-16s %10.3g  %-16s %15.8g %15.8g %10.2e  %s\n", name, shape_s.c_str(), cmp.worst, at.c_str(),
              cmp.got, cmp.want, std::abs(cmp.got - cmp.want), cmp.pass() ? "PASS" : "FAIL");
  tally.passed += cmp.pass();
  ++tally.total;
}

void report(Tally& tally, const char* name, const Tensor& out, const RefValues& want, Tolerance tol,
            std::span<const std::int64_t> select = {}) {
  report(tally, name, download(out), out.view().shape(), want, tol, select);
}

// An all-exact reference (copies of inputs): magnitudes 0, so only atol applies.
RefValues exact(std::vector<double> values) {
  RefValues r;
  r.mag.assign(values.size(), 0.0);
  r.value = std::move(values);
  return r;
}

// Forward and backward, with whatever features are on; returns the tally of the outputs.
Tally check_conv(Device device, DType dtype, const CheckOptions& o) {
  const Features& f = o.features;
  const std::int64_t B = o.batch, T = o.seqlen, C = o.channels, K = o.width, total = B * T;
  const DType wdtype = dtype;  // weights in the activation dtype
  const std::vector<std::int64_t> lengths =
      f.varlen > 0 ? varlen_lengths(total, f.varlen, K, o.seed) : std::vector<std::int64_t>(B, T);
  const auto N = static_cast<std::int64_t>(lengths.size());  // sequences
  std::vector<std::int64_t> cu(lengths.size() + 1, 0);
  std::partial_sum(lengths.begin(), lengths.end(), cu.begin() + 1);
  const std::vector<std::int64_t> act = f.varlen > 0 ? std::vector<std::int64_t>{total, C}
                                                     : std::vector<std::int64_t>{B, T, C},
                                  wshape{C, K}, bshape{C}, sshape{N, K - 1, C};

  // Draw order fixed, later draws only for features: turning one on leaves the other inputs alone.
  std::mt19937_64 gen(o.seed);
  const HostTensor x = random_tensor(dtype, act, gen);
  const HostTensor w = random_tensor(wdtype, wshape, gen);
  const HostTensor bias = random_tensor(wdtype, bshape, gen);
  const HostTensor dy = random_tensor(dtype, act, gen);
  const HostTensor init = f.state ? random_tensor(dtype, sshape, gen) : HostTensor{};
  const HostTensor dfinal = f.state ? random_tensor(dtype, sshape, gen) : HostTensor{};

  const Tensor x_dev = upload(x, device), w_dev = upload(w, device), b_dev = upload(bias, device),
               dy_dev = upload(dy, device);
  const Tensor y = poisoned(dtype, act, device), dx = poisoned(dtype, act, device),
               dw = poisoned(wdtype, wshape, device), db = poisoned(wdtype, bshape, device);
  Tensor init_dev, dfinal_dev, final_dev, dinit_dev, cu_dev;
  if (f.state) {
    init_dev = upload(init, device);
    dfinal_dev = upload(dfinal, device);
    final_dev = poisoned(dtype, sshape, device);
    dinit_dev = poisoned(dtype, sshape, device);
  }
  if (f.varlen > 0)
    cu_dev = index_tensor(cu, total <= std::numeric_limits<std::int32_t>::max() ? DType::i32 : DType::i64, device);

  // Fields one by one: a designated initializer warns about every optional it leaves out.
  Conv1dForwardArgs fa;
  fa.x = x_dev;
  fa.weight = w_dev;
  fa.tensor_cores = f.tensor_cores;
  if (f.bias) fa.bias = b_dev.view();
  fa.y = y;
  fa.activation = f.silu ? Activation::silu : Activation::none;
  if (f.state) {
    fa.initial_state = init_dev.view();
    fa.final_state = final_dev.view();
  }
  if (f.varlen > 0) fa.cu_seqlens = cu_dev.view();
  Conv1dBackwardArgs ba;
  ba.x = x_dev;
  ba.weight = w_dev;
  ba.bias = fa.bias;
  ba.dy = dy_dev;
  ba.activation = fa.activation;
  ba.initial_state = fa.initial_state;
  if (f.state) {
    ba.d_final_state = dfinal_dev.view();
    ba.d_initial_state = dinit_dev.view();
  }
  ba.cu_seqlens = fa.cu_seqlens;
  ba.dx = dx.view();
  ba.dweight = dw.view();
  if (f.bias) ba.dbias = db.view();
  ba.tensor_cores = f.tensor_cores;

  const Stream stream = default_stream(device);
  conv1d_forward(fa, stream);
  conv1d_backward(ba, stream);
  synchronize(stream);

  const auto n = [](std::int64_t v) { return static_cast<std::size_t>(v); };
  RefValues y_ref(n(total * C)), dx_ref(n(total * C)), dw_ref(n(C * K)), db_ref(n(C)), dinit_ref(n(N * (K - 1) * C));
  std::vector<double> final_ref(n(N * (K - 1) * C));
  const std::span<const double> xs(x.values), ws(w.values), dys(dy.values), inits(init.values), dfs(dfinal.values);
  const std::int64_t sk = (K - 1) * C;  // one sequence's state
  for (std::int64_t s = 0; s < N; ++s) {
    RefSequence seq;
    seq.length = lengths[s];
    seq.channels = C;
    seq.width = K;
    seq.x = xs.subspan(n(cu[s] * C), n(lengths[s] * C));
    if (f.state) seq.init = inits.subspan(n(s * sk), n(sk));
    seq.weight = ws;
    if (f.bias) seq.bias = bias.values;
    seq.silu = f.silu;
    reference_forward(seq, y_ref, cu[s] * C,
                      f.state ? std::span<double>(final_ref).subspan(n(s * sk), n(sk)) : std::span<double>{});
    reference_backward(seq, dys.subspan(n(cu[s] * C), n(lengths[s] * C)),
                       f.state ? dfs.subspan(n(s * sk), n(sk)) : std::span<const double>{}, dx_ref, cu[s] * C,
                       f.state ? &dinit_ref : nullptr, s * sk, dw_ref, db_ref);
  }

  const Tolerance tol = tolerance(dtype), wtol = tolerance(wdtype);
  std::printf("%s (weight %s): |a-r| <= %g + %g * sum|terms|%s\n", std::string(dtype_name(dtype)).c_str(),
              std::string(dtype_name(wdtype)).c_str(), tol.atol, tol.rtol, f.state ? "; final_state exact" : "");
  print_table_header();
  Tally tally;
  report(tally, "y", y, y_ref, tol);
  if (f.state) report(tally, "final_state", final_dev, exact(final_ref), tol);
  report(tally, "dx", dx, dx_ref, tol);
  report(tally, "dweight", dw, dw_ref, wtol);
  if (f.bias) report(tally, "dbias", db, db_ref, wtol);
  if (f.state) report(tally, "d_initial_state", dinit_dev, dinit_ref, tol);
  return tally;
}

// One decode step (conv1d_update) over a conv_state of S = B slots; returns the tally.
Tally check_decode(Device device, DType dtype, const CheckOptions& o) {
  const Features& f = o.features;
  const std::int64_t B = o.batch, T = o.seqlen, C = o.channels, K = o.width, S = B;
  const DType wdtype = dtype;
  const std::vector<std::int64_t> act{B, T, C}, wshape{C, K}, bshape{C}, sshape{S, K - 1, C};
  const std::vector<std::int64_t> slots = decode_slots(B, o.seed);

  std::mt19937_64 gen(o.seed);
  const HostTensor x = random_tensor(dtype, act, gen);
  const HostTensor w = random_tensor(wdtype, wshape, gen);
  const HostTensor bias = random_tensor(wdtype, bshape, gen);
  const HostTensor state = random_tensor(dtype, sshape, gen);

  const Tensor x_dev = upload(x, device), w_dev = upload(w, device), b_dev = upload(bias, device);
  const Tensor state_dev = upload(state, device), y = poisoned(dtype, act, device);
  const Tensor idx_dev = index_tensor(slots, DType::i32, device);

  Conv1dUpdateArgs ua;
  ua.x = x_dev;
  ua.conv_state = state_dev;
  ua.weight = w_dev;
  if (f.bias) ua.bias = b_dev.view();
  ua.y = y;
  ua.activation = f.silu ? Activation::silu : Activation::none;
  ua.state_indices = idx_dev.view();
  const Stream stream = default_stream(device);
  conv1d_update(ua, stream);
  synchronize(stream);

  // Padding rows: y = 0 exactly. Untouched slots: their old values exactly.
  const auto n = [](std::int64_t v) { return static_cast<std::size_t>(v); };
  RefValues y_ref(n(B * T * C));
  std::vector<double> state_ref = state.values;
  const std::int64_t sk = (K - 1) * C;
  std::vector<std::int64_t> y_active, y_padding, slot_updated, slot_kept;
  std::vector<bool> used(n(S), false);
  for (std::int64_t b = 0; b < B; ++b) {
    std::vector<std::int64_t>& rows = slots[b] >= 0 ? y_active : y_padding;
    for (std::int64_t i = b * T * C; i < (b + 1) * T * C; ++i) rows.push_back(i);
    if (slots[b] < 0) continue;
    used[n(slots[b])] = true;
    RefSequence seq;
    seq.length = T;
    seq.channels = C;
    seq.width = K;
    seq.x = std::span<const double>(x.values).subspan(n(b * T * C), n(T * C));
    seq.init = std::span<const double>(state.values).subspan(n(slots[b] * sk), n(sk));
    seq.weight = w.values;
    if (f.bias) seq.bias = bias.values;
    seq.silu = f.silu;
    reference_forward(seq, y_ref, b * T * C, std::span<double>(state_ref).subspan(n(slots[b] * sk), n(sk)));
  }
  for (std::int64_t s = 0; s < S; ++s)
    for (std::int64_t i = s * sk; i < (s + 1) * sk; ++i) (used[n(s)] ? slot_updated : slot_kept).push_back(i);

  const Tolerance tol = tolerance(dtype);
  std::printf("%s (weight %s): |a-r| <= %g + %g * sum|terms|; states and padding rows exact\n",
              std::string(dtype_name(dtype)).c_str(), std::string(dtype_name(wdtype)).c_str(), tol.atol, tol.rtol);
  print_table_header();
  Tally tally;
  const std::vector<double> y_got = download(y), state_got = download(state_dev);
  const RefValues state_exact = exact(state_ref);
  report(tally, "y", y_got, y.view().shape(), y_ref, tol, y_active);
  if (!y_padding.empty()) report(tally, "y padding rows", y_got, y.view().shape(), y_ref, tol, y_padding);
  if (K > 1) {
    report(tally, "state updated", state_got, state_dev.view().shape(), state_exact, tol, slot_updated);
    if (!slot_kept.empty()) report(tally, "state untouched", state_got, state_dev.view().shape(), state_exact, tol, slot_kept);
  } else {
    std::printf("  %-15s %-16s %10s  (K = 1: no state)\n", "conv_state", shape_str(sshape).c_str(), "-");
  }
  return tally;
}

}  // namespace

int run_check(const CheckOptions& o) {
  const Device device = resolve_device(o.device);
  check_shape_size("check", o.batch, o.seqlen, o.channels, o.width);
  const Features& f = o.features;
  if (f.decode && (f.state || f.varlen > 0))
    throw InvalidArgument("check: --decode always reads and updates a conv_state; --state and --varlen are for "
                          "forward and backward");
  std::vector<DType> dtypes;
  if (o.dtype == "all") {
    dtypes = {DType::f32, DType::bf16, DType::f16};
  } else {
    dtypes = {parse_dtype(o.dtype)};
    if (!is_floating(dtypes[0]))
      throw InvalidArgument("check: --dtype " + o.dtype + " is an index type; activations take f32, bf16 or f16");
  }

  const std::int64_t tokens = o.batch * o.seqlen;
  // Drawn here too (check_conv draws the same) so that a bad --varlen fails before any output.
  const std::vector<std::int64_t> lengths =
      f.varlen > 0 ? varlen_lengths(tokens, f.varlen, o.width, o.seed) : std::vector<std::int64_t>{};

  std::printf("shortconv check: device %s, B=%lld T=%lld C=%lld K=%lld, seed %llu, features %s\n",
              describe_device(device).c_str(), static_cast<long long>(o.batch), static_cast<long long>(o.seqlen),
              static_cast<long long>(o.channels), static_cast<long long>(o.width),
              static_cast<unsigned long long>(o.seed), f.str().c_str());
  if (f.varlen > 0)
    std::printf("  varlen: x [%lld, C], %lld sequence%s of lengths %s, cu_seqlens %s\n", static_cast<long long>(tokens),
                static_cast<long long>(f.varlen), f.varlen == 1 ? "" : "s", list_str(lengths).c_str(),
                tokens <= std::numeric_limits<std::int32_t>::max() ? "i32" : "i64");
  if (f.decode)
    std::printf("  decode: x [B, T_new=%lld, C], conv_state [S=%lld, K-1, C], state_indices i32 %s\n",
                static_cast<long long>(o.seqlen), static_cast<long long>(o.batch),
                list_str(decode_slots(o.batch, o.seed)).c_str());
  int passed = 0, total = 0;
  for (DType dtype : dtypes) {
    const Tally t = f.decode ? check_decode(device, dtype, o) : check_conv(device, dtype, o);
    passed += t.passed;
    total += t.total;
  }
  const bool ok = passed == total;
  std::printf("overall: %s (%d of %d outputs within tolerance)\n", ok ? "PASS" : "FAIL", passed, total);
  std::fflush(stdout);
  return ok ? 0 : 1;
}

}  // namespace shortconv::tool
