// libFuzzer target: conv1d_forward and conv1d_backward through the public API.
//
// The input picks the op, the variant, dtypes, shapes, strides and memory layout of every argument,
// the optional arguments (bias; any subset of dx, dweight, dbias; SiLU, initial and final states,
// their gradients, final_state written over initial_state in place) and sometimes defects: a negative
// stride, a channel stride other than 1, a misaligned or null pointer, a wrong rank, size, dtype or
// device, an output placed over another argument, sizes whose element count overflows int64, a
// CUDA stream. Every view lies inside the heap block the fuzzer allocated for it: one block per
// argument, sized exactly to the view's elements so that any access past them is an ASan report,
// or one shared block where arguments are column slices of a wider buffer and may overlap.
//
// Oracle. check_contract() decides from the documented contract alone (README's "Errors" and
// include/shortconv/ops.hpp), never from src/, whether the call is valid.
//  - A valid call must succeed, match the fp64 reference (tests/reference.hpp: the batch formulas,
//    or the per-sequence ones where SiLU or states are used) within the per-dtype tolerance of
//    tests/harness.hpp, with NaN and infinities exactly where the reference has them, and leave
//    every byte outside its outputs' elements untouched. The exceptions, which may be refused: an
//    output that shares a byte range but no element with another argument (other than the
//    documented disjoint column slices of one [B, T, W] buffer), or whose strides do not nest.
//  - An invalid call must throw InvalidArgument or Unsupported (DeviceError when it names a CUDA
//    device) and leave every byte untouched.
// Anything else calls abort(), which libFuzzer reports as a crash with the input saved.
//
// Not fuzzed yet: cu_seqlens (packed sequences) and conv1d_update.
//
// Build and run: tests/fuzz/run_fuzz.sh (clang++, -fsanitize=fuzzer,address,undefined). With
// SHORTCONV_FUZZ_VERBOSE set, each input prints the call it makes and the contract's verdict; with
// SHORTCONV_FUZZ_STATS set, a tally of outcomes is printed at exit.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "harness.hpp"  // encode, decode, rel_tolerance; header-only, gtest is not linked
#include "reference.hpp"
#include "shortconv/shortconv.hpp"

namespace {

using namespace shortconv;
using test::decode;
using test::encode;
using test::RefResult;
using test::RefShape;

[[noreturn]] void bug(const std::string& what) {
  std::fprintf(stderr, "fuzz_conv1d: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

enum Role : int { kX, kWeight, kBias, kInit, kY, kFinal, kDy, kDfs, kDx, kDweight, kDbias, kDinit, kRoles };
constexpr const char* kName[kRoles] = {"x",  "weight",        "bias", "initial_state", "y",     "final_state",
                                       "dy", "d_final_state", "dx",   "dweight",       "dbias", "d_initial_state"};
constexpr bool kOutput[kRoles] = {false, false, false, false, true, true, false, false, true, true, true, true};
constexpr int kRank[kRoles] = {3, 2, 1, 3, 3, 3, 3, 3, 3, 2, 1, 3};
constexpr bool is_activation(int r) { return r == kX || r == kY || r == kDy || r == kDx; }
constexpr bool is_state(int r) { return r == kInit || r == kFinal || r == kDfs || r == kDinit; }  // [B, K-1, C]

// Bounds that keep one input fast under ASan and the f32 sums exact (values are k/64, |k| < 128,
// so every product is a multiple of 2^-12 and every partial sum stays below 2^12 in magnitude).
constexpr std::int64_t kMaxRows = 1000;      // B*T
constexpr std::int64_t kMaxWork = 1 << 20;   // B*T*C*K: the reference's cost
constexpr std::int64_t kMaxElems = 1 << 20;  // elements a view may touch
constexpr std::int64_t kMaxBlockBytes = 64 << 20;

// One argument as the fuzzer built it. Shape and strides are passed as they are (any rank).
struct Spec {
  bool present = false;
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape, strides;
  Device device = Device::cpu();
  bool null = false;
  int block = -1;                // heap block holding the view
  std::int64_t byte_offset = 0;  // of the view's data pointer within the block
  std::byte* data = nullptr;     // set once blocks are allocated (null when `null`)

  std::int64_t esize() const { return static_cast<std::int64_t>(dtype_size(dtype)); }
  // Lowest and highest element offset (in elements, relative to data), sizes < 1 counted as 1.
  bool extent(std::int64_t& lo, std::int64_t& hi) const {
    lo = hi = 0;
    for (std::size_t d = 0; d < shape.size(); ++d) {
      std::int64_t term = 0;
      if (__builtin_mul_overflow(std::max<std::int64_t>(shape[d], 1) - 1, strides[d], &term)) return false;
      if (__builtin_add_overflow(term < 0 ? lo : hi, term, term < 0 ? &lo : &hi)) return false;
    }
    return hi - lo <= kMaxElems;
  }
  // Number of logical elements, or -1 when a size is < 1 or the count is large.
  std::int64_t iterable_numel() const {
    std::int64_t n = 1;
    for (std::int64_t s : shape)
      if (s < 1 || __builtin_mul_overflow(n, s, &n) || n > kMaxElems) return -1;
    return n;
  }
  // Calls f(flat index, element offset) for every logical element in row-major order.
  template <class F>
  void for_each(F&& f) const {
    const std::int64_t n = iterable_numel();
    for (std::int64_t i = 0; i < n; ++i) {
      std::int64_t rem = i, off = 0;
      for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
        off += rem % shape[d] * strides[d];
        rem /= shape[d];
      }
      f(i, off);
    }
  }
  TensorView view() const {
    return TensorView(data, dtype, device, std::span<const std::int64_t>(shape),
                      std::span<const std::int64_t>(strides));
  }
};

struct Block {
  std::int64_t size = 0;
  std::unique_ptr<std::byte[]> mem;
  std::vector<std::byte> before;  // snapshot taken just before the call
};

// ---- building the call from the input -----------------------------------------------------

DType pick_float(FuzzedDataProvider& in) {
  constexpr DType kFloats[] = {DType::f32, DType::bf16, DType::f16};
  return kFloats[in.ConsumeIntegralInRange<int>(0, 2)];
}

// True with probability 1/n, and false once the input is used up (FuzzedDataProvider then returns
// the minimum), so that short inputs take the plain paths.
bool rare(FuzzedDataProvider& in, int n) { return in.ConsumeIntegralInRange<int>(0, n - 1) == n - 1; }

std::int64_t pick_size(FuzzedDataProvider& in, std::int64_t small, std::int64_t large) {
  switch (in.ConsumeIntegralInRange<int>(0, 7)) {
    case 7: return large;
    case 6: return in.ConsumeIntegralInRange<std::int64_t>(1, large);
    default: return in.ConsumeIntegralInRange<std::int64_t>(1, small);
  }
}

// Strides for a well-formed view of `role`; inputs may broadcast (stride 0).
void make_strides(FuzzedDataProvider& in, int role, Spec& s, std::int64_t shared_token_stride) {
  const auto& n = s.shape;
  const bool input = !kOutput[role];
  if (is_activation(role)) {
    const std::int64_t B = n[0], T = n[1], C = n[2];
    const int layout = in.ConsumeIntegralInRange<int>(0, 15);
    std::int64_t st = shared_token_stride > 0
                          ? shared_token_stride
                          : C + (layout >= 10 ? in.ConsumeIntegralInRange<std::int64_t>(1, 2 * C + 3) : 0);
    std::int64_t bs = T * st + (layout == 9 ? in.ConsumeIntegralInRange<std::int64_t>(1, 5) : 0);
    if (layout == 8 && shared_token_stride == 0) {  // time-major [T, B, C] storage
      bs = st;
      st = B * bs;
    }
    if (input && layout == 7) st = 0;  // every token reads one row
    if (input && layout == 6) bs = 0;  // every batch row reads one sequence
    if (B == 1 && layout == 5) bs = in.ConsumeIntegralInRange<std::int64_t>(0, 1000);  // unused
    s.strides = {bs, st, 1};
  } else if (is_state(role)) {
    const std::int64_t W = n[1], C = n[2];  // W = K-1
    const std::int64_t rs = C + (in.ConsumeBool() ? 0 : in.ConsumeIntegralInRange<std::int64_t>(1, 3));
    s.strides = {input && rare(in, 6) ? 0 : W * rs, rs, 1};  // an input state may serve every row
  } else if (role == kWeight || role == kDweight) {
    const std::int64_t C = n[0], K = n[1];
    const int pad = in.ConsumeIntegralInRange<int>(0, 2);
    switch (in.ConsumeIntegralInRange<int>(0, 3)) {
      case 3: s.strides = {1, C + pad}; break;  // [K, C] storage
      case 2:
        if (input) {
          s.strides = {0, 1};  // one filter for every channel
          break;
        }
        [[fallthrough]];
      default: s.strides = {K + pad, 1};
    }
  } else {
    s.strides = {input && in.ConsumeBool() ? 0 : in.ConsumeIntegralInRange<std::int64_t>(1, 3)};
  }
}

// ---- the contract, from the documentation alone ------------------------------------------

// Element access through memcpy: defective views may be misaligned on purpose.
void put(DType dtype, double v, std::byte* dst) {
  alignas(8) std::byte cell[8];
  encode(dtype, v, cell, 0);
  std::memcpy(dst, cell, dtype_size(dtype));
}
double get(DType dtype, const std::byte* src) {
  alignas(8) std::byte cell[8];
  std::memcpy(cell, src, dtype_size(dtype));
  return decode(dtype, cell, 0);
}

std::uintptr_t address(const Spec& s) { return reinterpret_cast<std::uintptr_t>(s.data); }

// Byte range [lo, hi) of a view with valid sizes and non-negative strides.
void byte_range(const Spec& s, std::uintptr_t& lo, std::uintptr_t& hi) {
  std::int64_t elo = 0, ehi = 0;
  s.extent(elo, ehi);
  lo = address(s) + elo * s.esize();
  hi = address(s) + (ehi + 1) * s.esize();
}

// The documented exception to "outputs must not overlap": column slices of one [B, T, W] buffer
// whose channel windows never meet modulo the common token stride W.
bool disjoint_column_slices(const Spec& a, const Spec& b) {
  if (a.shape.size() != 3 || b.shape.size() != 3 || a.dtype != b.dtype) return false;
  const std::int64_t W = a.strides[1];
  if (W <= 0 || b.strides[1] != W) return false;
  for (const Spec* s : {&a, &b})
    if (s->shape[0] > 1 && s->strides[0] % W != 0) return false;
  const auto diff = static_cast<std::int64_t>(address(b) - address(a));
  if (diff % a.esize() != 0) return false;
  const std::int64_t r = ((diff / a.esize()) % W + W) % W;
  return r >= a.shape[2] && r + b.shape[2] <= W;
}

// Dimensions sorted by stride, each stride at least the span of the smaller ones: the layouts the
// library can prove free of self-overlap. Others may be rejected conservatively.
bool nested_layout(const Spec& s) {
  std::vector<std::pair<std::int64_t, std::int64_t>> dims;  // (stride, size)
  for (std::size_t d = 0; d < s.shape.size(); ++d)
    if (s.shape[d] > 1) dims.emplace_back(s.strides[d], s.shape[d]);
  std::sort(dims.begin(), dims.end());
  std::int64_t span = 1;
  for (auto [stride, size] : dims) {
    if (stride < span) return false;
    span += stride * (size - 1);
  }
  return true;
}

struct Verdict {
  bool valid = true;
  bool must_accept = true;
  bool names_cuda = false;
  std::string why;
  RefShape shape{};
  void invalid(const std::string& reason) {
    if (valid) why = reason;
    valid = must_accept = false;
  }
};

// final_state may be initial_state itself (same memory, same layout): the in-place chunk hand-over.
bool in_place_states(const Spec (&specs)[kRoles]) {
  const Spec &i = specs[kInit], &f = specs[kFinal];
  return i.present && f.present && !i.null && i.data == f.data && i.shape == f.shape && i.strides == f.strides;
}

Verdict check_contract(const Spec (&specs)[kRoles], const std::vector<Block>& blocks, const Stream& stream,
                       Variant variant, bool features) {
  Verdict v;
  for (int r = 0; r < kRoles; ++r)
    if (specs[r].present && specs[r].device.is_cuda()) v.names_cuda = true;
  if (stream.device.is_cuda()) v.names_cuda = true;
  for (int r = 0; r < kRoles; ++r) {
    const Spec& s = specs[r];
    if (!s.present) continue;
    const std::string name = kName[r];
    if (s.null) v.invalid(name + " is null");
    if (s.device != Device::cpu()) v.invalid(name + " is not on the CPU");
    if (static_cast<int>(s.shape.size()) != kRank[r]) {
      v.invalid(name + " has the wrong rank");
      continue;
    }
    std::int64_t numel = 1;
    for (std::size_t d = 0; d < s.shape.size(); ++d) {
      if (s.shape[d] < 1) v.invalid(name + " has a size < 1");
      if (s.strides[d] < 0) v.invalid(name + " has a negative stride");
      // Kernels index with int64 products of sizes: more than 2^62 elements is refused.
      if (s.shape[d] >= 1 && (__builtin_mul_overflow(numel, s.shape[d], &numel) || numel > (std::int64_t{1} << 62)))
        v.invalid(name + ": element count overflows int64 indexing");
    }
    if (!s.null && address(s) % s.esize() != 0) v.invalid(name + " is misaligned");
    if ((is_activation(r) || is_state(r)) && s.shape[2] > 1 && s.strides[2] != 1)
      v.invalid(name + " has channel stride != 1");
  }
  if (!v.valid) return v;

  const Spec &x = specs[kX], &w = specs[kWeight];
  const DType xd = x.dtype, wd = w.dtype;
  if (!is_floating(xd)) v.invalid("x is not floating");
  if (wd != DType::f32 && wd != xd) v.invalid("weight dtype");
  const std::int64_t C = x.shape[2];
  if (w.shape[0] != C) v.invalid("weight channels");
  for (int r : {kY, kDy, kDx})
    if (specs[r].present && (specs[r].shape != x.shape || specs[r].dtype != xd))
      v.invalid(std::string(kName[r]) + " shape/dtype");
  if (specs[kBias].present &&
      (specs[kBias].shape[0] != C || (specs[kBias].dtype != DType::f32 && specs[kBias].dtype != xd)))
    v.invalid("bias shape/dtype");
  if (specs[kDweight].present && (specs[kDweight].shape != w.shape || specs[kDweight].dtype != wd))
    v.invalid("dweight shape/dtype");
  if (specs[kDbias].present && (specs[kDbias].shape[0] != C || specs[kDbias].dtype != wd))
    v.invalid("dbias shape/dtype");
  const std::vector<std::int64_t> state_shape{x.shape[0], w.shape[1] - 1, C};
  for (int r : {kInit, kFinal, kDfs, kDinit})
    if (specs[r].present && (specs[r].shape != state_shape || specs[r].dtype != xd))
      v.invalid(std::string(kName[r]) + " shape/dtype");
  if (features && variant == Variant::naive) v.invalid("the naive variant has no activation or states");
  if (stream.device != Device::cpu()) v.invalid("stream is not on the CPU");
  if (!v.valid) return v;
  v.shape = {x.shape[0], x.shape[1], C, w.shape[1]};

  // Outputs share no element with each other, with themselves, or with an input.
  std::vector<std::vector<std::int8_t>> owner(blocks.size());
  for (std::size_t b = 0; b < blocks.size(); ++b) owner[b].assign(static_cast<std::size_t>(blocks[b].size), -1);
  auto mark = [&](int r, bool claim) {
    const Spec& s = specs[r];
    auto& own = owner[static_cast<std::size_t>(s.block)];
    bool clash = false;
    s.for_each([&](std::int64_t, std::int64_t off) {
      const std::int64_t byte = s.byte_offset + off * s.esize();
      for (std::int64_t i = byte; i < byte + s.esize(); ++i) {
        if (own[static_cast<std::size_t>(i)] >= 0) clash = true;
        if (claim) own[static_cast<std::size_t>(i)] = static_cast<std::int8_t>(r);
      }
    });
    return clash;
  };
  for (int r = 0; r < kRoles; ++r)
    if (specs[r].present && kOutput[r] && mark(r, true))
      v.invalid(std::string(kName[r]) + " overlaps an output element");
  for (int r = 0; r < kRoles; ++r)
    if (specs[r].present && !kOutput[r] && !(r == kInit && in_place_states(specs)) && mark(r, false))
      v.invalid(std::string(kName[r]) + " shares an element with an output");
  if (!v.valid) return v;

  // Valid. The library may still refuse an output whose byte range meets another argument's
  // (other than disjoint column slices) or whose layout it cannot prove free of self-overlap.
  for (int o = 0; o < kRoles; ++o) {
    if (!specs[o].present || !kOutput[o]) continue;
    if (!nested_layout(specs[o])) v.must_accept = false;
    std::uintptr_t olo, ohi;
    byte_range(specs[o], olo, ohi);
    for (int r = 0; r < kRoles; ++r) {
      if (r == o || !specs[r].present || (o == kFinal && r == kInit && in_place_states(specs))) continue;
      std::uintptr_t lo, hi;
      byte_range(specs[r], lo, hi);
      if (olo < hi && lo < ohi && !disjoint_column_slices(specs[o], specs[r])) v.must_accept = false;
    }
  }
  return v;
}

// ---- checking results ---------------------------------------------------------------------

std::vector<double> gather(const Spec& s) {
  std::vector<double> out(static_cast<std::size_t>(std::max<std::int64_t>(s.iterable_numel(), 0)));
  s.for_each([&](std::int64_t i, std::int64_t off) {
    out[static_cast<std::size_t>(i)] = get(s.dtype, s.data + off * s.esize());
  });
  return out;
}

void compare(const char* name, const Spec& s, const RefResult& ref) {
  const std::vector<double> got = gather(s);
  const double rtol = test::rel_tolerance(s.dtype);
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double want = ref.value[i];
    const bool ok = std::isnan(want)   ? std::isnan(got[i])
                    : std::isinf(want) ? got[i] == want
                                       : std::fabs(got[i] - want) <= 1e-6 + rtol * ref.abs_sum[i];
    if (!ok)
      bug(std::string(name) + "[" + std::to_string(i) + "] = " + std::to_string(got[i]) + ", reference " +
          std::to_string(want));
  }
}

// Outcome tally, printed at exit when SHORTCONV_FUZZ_STATS is set: shows whether the inputs reach
// the kernels or mostly stop in validation.
struct Stats {
  long counts[8] = {};
  static constexpr const char* kNames[8] = {"valid, computed",
                                            "valid, rejected (byte-range overlap)",
                                            "invalid, rejected",
                                            "forward",
                                            "backward",
                                            "with NaN/inf",
                                            "with SiLU or states",
                                            "valid, computed, SiLU or states"};
  ~Stats() {
    if (std::getenv("SHORTCONV_FUZZ_STATS") == nullptr) return;
    for (int i = 0; i < 8; ++i) std::fprintf(stderr, "fuzz_conv1d: %-40s %ld\n", kNames[i], counts[i]);
  }
} stats;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const bool forward = in.ConsumeBool();
  const Variant variant = in.ConsumeBool() ? Variant::naive : Variant::fast;
  const bool shared = rare(in, 4);  // one block for everything
  const std::uint64_t seed = in.ConsumeIntegral<std::uint64_t>();

  // Problem: B, T, C, K and dtypes; the optional arguments.
  std::int64_t B = pick_size(in, 3, 4), T = pick_size(in, 40, 250), C = pick_size(in, 70, 160),
               K = pick_size(in, 8, 70);
  T = std::min(T, kMaxRows / B);
  while (T > 1 && B * T * C * K > kMaxWork) T = (T + 1) / 2;
  const DType xd = pick_float(in);
  const DType wd = in.ConsumeBool() ? DType::f32 : xd;
  const DType bd = in.ConsumeBool() ? DType::f32 : xd;
  Spec specs[kRoles];
  specs[kX].present = specs[kWeight].present = true;
  specs[kBias].present = in.ConsumeBool();  // the backward reads it only to recompute silu's input
  // The sequence-model features: SiLU epilogue and the states before and after each row (K >= 2).
  const bool want_features = rare(in, 3);
  const bool silu = want_features && in.ConsumeBool();
  const bool in_place = want_features && K >= 2 && forward && rare(in, 3);  // final_state over initial_state
  if (want_features && K >= 2) specs[kInit].present = in_place || in.ConsumeBool();
  if (forward) {
    specs[kY].present = true;
    if (want_features && K >= 2) specs[kFinal].present = in_place || in.ConsumeBool();
  } else {
    specs[kDy].present = true;
    const int outs = 15 - in.ConsumeIntegralInRange<int>(0, 15);  // all of them unless told otherwise
    specs[kDx].present = outs & 1;
    specs[kDweight].present = outs & 2;
    specs[kDbias].present = outs & 4;
    if (want_features && K >= 2) {
      specs[kDinit].present = outs & 8;
      specs[kDfs].present = in.ConsumeBool();
    }
  }
  bool features = silu;  // the call uses one: the naive variant must refuse it
  for (int r : {kInit, kFinal, kDfs, kDinit}) features = features || specs[r].present;
  const std::int64_t W = shared && in.ConsumeBool() ? C * in.ConsumeIntegralInRange<std::int64_t>(1, 4) +
                                                          in.ConsumeIntegralInRange<std::int64_t>(0, 3)
                                                    : 0;
  for (int r = 0; r < kRoles; ++r) {
    Spec& s = specs[r];
    if (!s.present) continue;
    s.dtype = is_activation(r) || is_state(r) ? xd : r == kBias ? bd : wd;
    s.shape = is_activation(r)                ? std::vector<std::int64_t>{B, T, C}
              : is_state(r)                   ? std::vector<std::int64_t>{B, K - 1, C}
              : r == kWeight || r == kDweight ? std::vector<std::int64_t>{C, K}
                                              : std::vector<std::int64_t>{C};
    make_strides(in, r, s, W);
  }
  if (in_place) specs[kInit].strides = specs[kFinal].strides;

  // Defects, each applied to one argument.
  Stream stream{};
  const int defects = rare(in, 4) ? in.ConsumeIntegralInRange<int>(1, 2) : 0;
  std::int64_t misalign[kRoles] = {};
  int alias_of[kRoles];
  std::fill(std::begin(alias_of), std::end(alias_of), -1);
  for (int i = 0; i < defects; ++i) {
    const int r = in.ConsumeIntegralInRange<int>(0, kRoles - 1);
    Spec& s = specs[r];
    if (!s.present) continue;
    const auto d = static_cast<std::size_t>(in.ConsumeIntegralInRange<int>(0, static_cast<int>(s.shape.size()) - 1));
    switch (in.ConsumeIntegralInRange<int>(0, 11)) {
      case 0: s.strides[d] = s.strides[d] == 0 ? -1 : -s.strides[d]; break;
      case 1: s.strides[d] = in.ConsumeIntegralInRange<std::int64_t>(0, 3); break;  // channel stride 0/2/3, or overlap
      case 2: misalign[r] = in.ConsumeIntegralInRange<std::int64_t>(1, s.esize() - 1 + (s.esize() == 2)); break;
      case 3: s.null = true; break;
      case 4:
        if (in.ConsumeBool() && s.shape.size() > 1) {
          s.shape.pop_back();
          s.strides.pop_back();
        } else {
          s.shape.push_back(in.ConsumeIntegralInRange<std::int64_t>(1, 2));
          s.strides.push_back(1);
        }
        break;
      case 5: s.shape[d] += in.ConsumeBool() ? 1 : -1; break;
      case 6: s.shape[d] = -in.ConsumeIntegralInRange<std::int64_t>(0, 2); break;
      case 7: s.dtype = static_cast<DType>(in.ConsumeIntegralInRange<int>(0, 4)); break;
      case 8: s.device = Device::cuda(in.ConsumeIntegralInRange<int>(0, 1)); break;
      case 9: alias_of[r] = in.ConsumeIntegralInRange<int>(0, kRoles - 1); break;
      case 10: {
        // B * T >= 2^63 on every activation, all broadcast (strides 0): each view spans one row but
        // its element count overflows int64. Outputs so shaped overlap themselves.
        const int eb = in.ConsumeIntegralInRange<int>(1, 62), et = in.ConsumeIntegralInRange<int>(63 - eb, 62);
        for (int a : {kX, kY, kDy, kDx})
          if (specs[a].present && specs[a].shape.size() == 3) {
            specs[a].shape[0] = std::int64_t{1} << eb;
            specs[a].shape[1] = std::int64_t{1} << et;
            specs[a].strides[0] = specs[a].strides[1] = 0;
          }
        break;
      }
      case 11: stream = in.ConsumeBool() ? Stream::cuda_default(0) : Stream{Device::cpu(), &stream}; break;
    }
  }

  // Placement: offsets within the blocks, then allocation.
  std::vector<Block> blocks;
  if (shared) blocks.emplace_back();
  for (int r = 0; r < kRoles; ++r) {
    Spec& s = specs[r];
    if (!s.present) continue;
    std::int64_t lo = 0, hi = 0;
    if (!s.extent(lo, hi)) return -1;  // too large to allocate: not an interesting input
    const std::int64_t lead = in.ConsumeIntegralInRange<std::int64_t>(0, shared ? 2 * C + 8 : 3);
    if (r == kFinal && in_place && specs[kInit].block >= 0) {
      s.block = specs[kInit].block;
      s.byte_offset = specs[kInit].byte_offset + misalign[r];
    } else if (alias_of[r] >= 0 && specs[alias_of[r]].present && alias_of[r] < r && specs[alias_of[r]].block >= 0) {
      // Over an earlier argument, shifted by a few elements.
      const Spec& o = specs[alias_of[r]];
      s.block = o.block;
      s.byte_offset = std::max<std::int64_t>(o.byte_offset + (lead - 1) * s.esize(), -lo * s.esize()) + misalign[r];
    } else if (shared) {
      // Activations are column slices of one wide buffer; the others go either among them or
      // after everything placed so far.
      s.block = 0;
      const std::int64_t base =
          !is_activation(r) && in.ConsumeBool() ? (blocks[0].size + s.esize() - 1) / s.esize() : 0;
      s.byte_offset = (base + lead - lo) * s.esize() + misalign[r];
    } else {
      s.block = static_cast<int>(blocks.size());
      blocks.emplace_back();
      s.byte_offset = (lead - lo) * s.esize() + misalign[r];
    }
    Block& b = blocks[static_cast<std::size_t>(s.block)];
    b.size = std::max(b.size, s.byte_offset + (hi + 1) * s.esize());
    if (b.size > kMaxBlockBytes) return -1;
  }
  for (Block& b : blocks) {
    b.mem.reset(new std::byte[static_cast<std::size_t>(b.size)]);
    std::memset(b.mem.get(), 0xff, static_cast<std::size_t>(b.size));  // NaN in every float dtype
  }
  for (Spec& s : specs)
    if (s.present && !s.null) s.data = blocks[static_cast<std::size_t>(s.block)].mem.get() + s.byte_offset;

  // Input values k/64 (exact in every dtype); sometimes one NaN or infinity.
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> value(-127, 127);
  for (int r : {kX, kWeight, kBias, kInit, kDy, kDfs}) {
    const Spec& s = specs[r];
    if (!s.present || s.null || !is_floating(s.dtype)) continue;
    s.for_each([&](std::int64_t, std::int64_t off) { put(s.dtype, value(rng) / 64.0, s.data + off * s.esize()); });
  }
  // Not with SiLU: where its formula meets an infinity (z * sigmoid(z) at z = -inf, say), two exact
  // formulations may disagree on NaN against a signed zero.
  if (rare(in, 8) && !silu) {
    const Spec& s = specs[in.PickValueInArray({kX, kWeight, kBias, kInit, kDy, kDfs})];
    const std::int64_t n = s.iterable_numel();
    if (s.present && !s.null && is_floating(s.dtype) && n > 0) {
      const std::int64_t pick = in.ConsumeIntegralInRange<std::int64_t>(0, n - 1);
      const double special = in.PickValueInArray({NAN, INFINITY, -INFINITY});
      s.for_each([&](std::int64_t i, std::int64_t off) {
        if (i == pick) put(s.dtype, special, s.data + off * s.esize());
      });
      ++stats.counts[5];
    }
  }

  const Verdict verdict = check_contract(specs, blocks, stream, variant, features);
  if (std::getenv("SHORTCONV_FUZZ_VERBOSE") != nullptr) {
    // One line an input: what the call is and what the contract says of it.
    std::string line = std::string(forward ? "forward" : "backward") +
                       (variant == Variant::naive ? " naive" : " fast") + (silu ? " silu" : "") +
                       (shared ? " shared-block" : "");
    for (int r = 0; r < kRoles; ++r) {
      const Spec& s = specs[r];
      if (!s.present) continue;
      line += std::string(" | ") + kName[r] + " " + (s.null ? "null " : "") + std::string(dtype_name(s.dtype)) + " [";
      for (std::size_t d = 0; d < s.shape.size(); ++d) line += (d ? "," : "") + std::to_string(s.shape[d]);
      line += "] (";
      for (std::size_t d = 0; d < s.strides.size(); ++d) line += (d ? "," : "") + std::to_string(s.strides[d]);
      line += ")" + (s.device.is_cuda() ? " " + s.device.str() : "") + " +" + std::to_string(s.byte_offset) + "B";
    }
    std::fprintf(stderr, "fuzz_conv1d: %s => %s\n", line.c_str(),
                 verdict.valid ? (verdict.must_accept ? "valid" : "valid, may be refused")
                               : ("invalid: " + verdict.why).c_str());
  }
  std::vector<double> xv, wv, bv, initv, dyv, dfsv;  // inputs as the library will read them
  if (verdict.valid) {
    xv = gather(specs[kX]);
    wv = gather(specs[kWeight]);
    if (specs[kBias].present) bv = gather(specs[kBias]);
    if (specs[kInit].present) initv = gather(specs[kInit]);
    if (specs[kDy].present) dyv = gather(specs[kDy]);
    if (specs[kDfs].present) dfsv = gather(specs[kDfs]);
  }
  for (Block& b : blocks) b.before.assign(b.mem.get(), b.mem.get() + b.size);

  bool accepted = false;
  std::string error;
  try {
    auto opt = [&](int r) { return specs[r].present ? std::optional<TensorView>(specs[r].view()) : std::nullopt; };
    const Activation act = silu ? Activation::silu : Activation::none;
    if (forward && !features && in.ConsumeBool()) {
      const TensorView bias = specs[kBias].present ? specs[kBias].view() : TensorView{};
      conv1d_forward(specs[kX].view(), specs[kWeight].view(), specs[kBias].present ? &bias : nullptr, specs[kY].view(),
                     stream);
    } else if (forward) {
      Conv1dForwardArgs a;
      a.x = specs[kX].view();
      a.weight = specs[kWeight].view();
      a.bias = opt(kBias);
      a.y = specs[kY].view();
      a.activation = act;
      a.initial_state = opt(kInit);
      a.final_state = opt(kFinal);
      a.variant = variant;
      conv1d_forward(a, stream);
    } else {
      Conv1dBackwardArgs a;
      a.x = specs[kX].view();
      a.weight = specs[kWeight].view();
      a.bias = opt(kBias);
      a.dy = specs[kDy].view();
      a.activation = act;
      a.initial_state = opt(kInit);
      a.d_final_state = opt(kDfs);
      a.dx = opt(kDx);
      a.dweight = opt(kDweight);
      a.dbias = opt(kDbias);
      a.d_initial_state = opt(kDinit);
      a.variant = variant;
      conv1d_backward(a, stream);
    }
    accepted = true;
  } catch (const InvalidArgument& e) {
    error = e.what();
  } catch (const Unsupported& e) {
    error = e.what();
  } catch (const DeviceError& e) {
    if (!verdict.names_cuda) bug(std::string("DeviceError without a CUDA device: ") + e.what());
    error = e.what();
  } catch (const std::exception& e) {
    bug(std::string("unexpected exception: ") + e.what());
  } catch (...) {
    bug("unexpected exception of unknown type");
  }

  ++stats.counts[forward ? 3 : 4];
  if (features) ++stats.counts[6];
  if (!accepted) {
    ++stats.counts[verdict.valid ? 1 : 2];
    if (verdict.must_accept) bug("rejected a valid call: " + error);
    for (const Block& b : blocks)
      if (std::memcmp(b.before.data(), b.mem.get(), static_cast<std::size_t>(b.size)) != 0)
        bug("a rejected call wrote memory: " + error);
    return 0;
  }
  if (!verdict.valid) bug("accepted an invalid call: " + verdict.why);

  // Every byte outside the outputs' elements is untouched.
  std::vector<std::vector<std::uint8_t>> out_bytes(blocks.size());
  for (std::size_t b = 0; b < blocks.size(); ++b) out_bytes[b].assign(static_cast<std::size_t>(blocks[b].size), 0);
  for (int r = 0; r < kRoles; ++r) {
    const Spec& s = specs[r];
    if (!s.present || !kOutput[r]) continue;
    s.for_each([&](std::int64_t, std::int64_t off) {
      for (std::int64_t i = 0; i < s.esize(); ++i)
        out_bytes[static_cast<std::size_t>(s.block)][static_cast<std::size_t>(s.byte_offset + off * s.esize() + i)] = 1;
    });
  }
  for (std::size_t b = 0; b < blocks.size(); ++b)
    for (std::int64_t i = 0; i < blocks[b].size; ++i)
      if (!out_bytes[b][static_cast<std::size_t>(i)] &&
          blocks[b].before[static_cast<std::size_t>(i)] != blocks[b].mem[static_cast<std::size_t>(i)])
        bug("wrote byte " + std::to_string(i) + " of block " + std::to_string(b) + ", outside every output");

  ++stats.counts[0];
  const RefShape& rs = verdict.shape;
  if (!features) {  // the plain op: the batch reference
    if (forward) {
      compare("y", specs[kY], test::ref_forward(rs, xv, wv, specs[kBias].present ? &bv : nullptr));
    } else {
      if (specs[kDx].present) compare("dx", specs[kDx], test::ref_dx(rs, wv, dyv));
      if (specs[kDweight].present) compare("dweight", specs[kDweight], test::ref_dw(rs, xv, dyv));
      if (specs[kDbias].present) compare("dbias", specs[kDbias], test::ref_dbias(rs, dyv));
    }
    return 0;
  }

  // SiLU and states: the per-sequence reference, one batch row at a time.
  ++stats.counts[7];
  const std::int64_t row = rs.T * rs.C, srow = (rs.K - 1) * rs.C;
  auto slice = [](const std::vector<double>& v, std::int64_t at, std::int64_t n) {
    return v.empty() ? std::vector<double>{} : std::vector<double>(v.begin() + at, v.begin() + at + n);
  };
  auto append = [](RefResult& to, const RefResult& from) {
    to.value.insert(to.value.end(), from.value.begin(), from.value.end());
    to.abs_sum.insert(to.abs_sum.end(), from.abs_sum.begin(), from.abs_sum.end());
  };
  auto accumulate = [](RefResult& to, const RefResult& from) {
    to.value.resize(from.value.size(), 0.0);
    to.abs_sum.resize(from.abs_sum.size(), 0.0);
    for (std::size_t i = 0; i < from.value.size(); ++i) {
      to.value[i] += from.value[i];
      to.abs_sum[i] += from.abs_sum[i];
    }
  };
  RefResult y, fin, dx, dinit, dw, db;
  for (std::int64_t b = 0; b < rs.B; ++b) {
    test::SeqInputs si;
    si.L = rs.T;
    si.C = rs.C;
    si.K = rs.K;
    si.x = slice(xv, b * row, row);
    si.init = slice(initv, b * srow, srow);
    si.w = wv;
    si.bias = bv;
    si.silu = silu;
    if (forward) {
      const test::SeqForward f = test::ref_seq_forward(si);
      append(y, f.y);
      std::vector<double> mag(f.final_state.size());
      std::transform(f.final_state.begin(), f.final_state.end(), mag.begin(), [](double v) { return std::fabs(v); });
      append(fin, {f.final_state, mag});
    } else {
      const test::SeqBackward g = test::ref_seq_backward(si, slice(dyv, b * row, row), slice(dfsv, b * srow, srow));
      append(dx, g.dx);
      append(dinit, g.dinit);
      accumulate(dw, g.dw);
      accumulate(db, g.db);
    }
  }
  if (specs[kY].present) compare("y", specs[kY], y);
  if (specs[kFinal].present) compare("final_state", specs[kFinal], fin);
  if (specs[kDx].present) compare("dx", specs[kDx], dx);
  if (specs[kDweight].present) compare("dweight", specs[kDweight], dw);
  if (specs[kDbias].present) compare("dbias", specs[kDbias], db);
  if (specs[kDinit].present) compare("d_initial_state", specs[kDinit], dinit);
  return 0;
}
