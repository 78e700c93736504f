// Front end shared by every backend: validate all arguments, build the params struct, look up
// the kernel in the registry and run it. Nothing is written before every check has passed.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "cuda_runtime_api.hpp"
#include "params.hpp"
#include "registry.hpp"
#include "shortconv/error.hpp"
#include "shortconv/ops.hpp"

namespace shortconv {
namespace {

using detail::BackwardParams;
using detail::ForwardParams;

struct Named {
  const char* name;
  const TensorView* view;  // null when the optional argument is absent
};

// Error messages are built from std::string and std::to_string only: no iostreams, whose locale
// machinery is what crashed when a second libstdc++ was linked statically into the Python module.
std::string shape_str(const TensorView& v) {
  std::string s = "[";
  for (int d = 0; d < v.rank(); ++d) s += (d ? ", " : "") + std::to_string(v.size(d));
  return s + ']';
}

// Byte range [lo, hi) touched by a view whose sizes and strides were already checked.
struct ByteRange {
  std::uintptr_t lo = 0, hi = 0;
};

class Validator {
 public:
  Validator(const char* op, std::vector<Named> args) : op_(op), args_(std::move(args)) {}

  [[noreturn]] void fail(const std::string& what) const {
    std::string msg = std::string(op_) + ": " + what + " (";
    bool first = true;
    for (const Named& a : args_) {
      if (a.view == nullptr) continue;
      msg += (first ? "" : "; ") + std::string(a.name) + " " + a.view->str();
      first = false;
    }
    throw InvalidArgument(msg + ")");
  }

  // Pointer, rank, sizes >= 1, strides >= 0, byte extent without overflow, element alignment.
  void check_tensor(const char* name, const TensorView& v, int rank) const {
    if (v.data() == nullptr) fail(std::string(name) + " has a null data pointer");
    if (v.rank() != rank)
      fail(std::string(name) + " must have " + std::to_string(rank) + " dimensions but is " + shape_str(v));
    std::int64_t max_offset = 0, count = 1;
    for (int d = 0; d < rank; ++d) {
      if (v.size(d) < 1) fail(std::string(name) + " has a zero or negative dimension: " + shape_str(v));
      // Kernels index elements with int64 (B*T*C products), broadcast views included.
      if (__builtin_mul_overflow(count, v.size(d), &count) || count > (std::int64_t{1} << 62))
        fail(std::string(name) + " has more elements than int64 indexing allows: " + shape_str(v));
      if (v.stride(d) < 0) fail(std::string(name) + " has a negative stride");
      std::int64_t term = 0;
      if (__builtin_mul_overflow(v.size(d) - 1, v.stride(d), &term) ||
          __builtin_add_overflow(max_offset, term, &max_offset))
        fail(std::string(name) + " spans more elements than int64 can index");
    }
    std::int64_t bytes = 0;
    if (__builtin_add_overflow(max_offset, 1, &bytes) ||
        __builtin_mul_overflow(bytes, static_cast<std::int64_t>(dtype_size(v.dtype())), &bytes) ||
        reinterpret_cast<std::uintptr_t>(v.data()) > UINTPTR_MAX - static_cast<std::uintptr_t>(bytes))
      fail(std::string(name) + " byte size overflows");
    if (reinterpret_cast<std::uintptr_t>(v.data()) % dtype_size(v.dtype()) != 0)
      fail(std::string(name) + " data pointer is not aligned to its " +
           std::to_string(dtype_size(v.dtype())) + "-byte element size");
  }

  // [B, T, C] activations: channel stride 1.
  void check_activation(const char* name, const TensorView& v) const {
    check_tensor(name, v, 3);
    if (v.size(2) > 1 && v.stride(2) != 1)
      fail(std::string(name) + " must have channel stride 1 but has " + std::to_string(v.stride(2)));
  }

  void check_same_shape(const char* name, const TensorView& v, const char* ref_name, const TensorView& ref) const {
    if (!std::equal(v.shape().begin(), v.shape().end(), ref.shape().begin(), ref.shape().end()))
      fail(std::string(name) + " is " + shape_str(v) + " but " + ref_name + " is " + shape_str(ref));
  }

  void check_dtype(const char* name, const TensorView& v, DType a, DType b) const {
    if (v.dtype() != a && v.dtype() != b) {
      std::string allowed(dtype_name(a));
      if (b != a) allowed += " or " + std::string(dtype_name(b));
      fail(std::string(name) + " has dtype " + std::string(dtype_name(v.dtype())) + " but must be " + allowed);
    }
  }

  // Every present argument on one device; returns it.
  Device common_device() const {
    const Named* first = nullptr;
    for (const Named& a : args_) {
      if (a.view == nullptr) continue;
      if (first == nullptr) {
        first = &a;
      } else if (a.view->device() != first->view->device()) {
        fail(std::string(a.name) + " is on " + a.view->device().str() + " but " + first->name + " is on " +
             first->view->device().str());
      }
    }
    return first->view->device();
  }

  // An output must not map two of its elements to one address: with its dimensions ordered by
  // stride, each stride must exceed the span of the smaller ones.
  void check_no_self_overlap(const char* name, const TensorView& v) const {
    std::array<std::int64_t, kMaxRank> size{}, stride{};
    int n = 0;
    for (int d = 0; d < v.rank(); ++d) {
      if (v.size(d) <= 1) continue;
      int i = n++;  // insertion sort by stride
      for (; i > 0 && stride[i - 1] > v.stride(d); --i) {
        size[i] = size[i - 1];
        stride[i] = stride[i - 1];
      }
      size[i] = v.size(d);
      stride[i] = v.stride(d);
    }
    std::int64_t span = 1;  // elements covered by the dims handled so far
    for (int i = 0; i < n; ++i) {
      if (stride[i] < span) fail(std::string(name) + " is an output whose elements overlap in memory");
      span += stride[i] * (size[i] - 1);
    }
  }

  static ByteRange range(const TensorView& v) {
    std::int64_t max_offset = 0;
    for (int d = 0; d < v.rank(); ++d) max_offset += (v.size(d) - 1) * v.stride(d);
    const auto lo = reinterpret_cast<std::uintptr_t>(v.data());
    return {lo, lo + static_cast<std::uintptr_t>((max_offset + 1) * static_cast<std::int64_t>(dtype_size(v.dtype())))};
  }

  // Column slices of one wider [B, T, W] buffer share a byte range but no element: true when the
  // channel windows of a and b never meet modulo the common token stride.
  static bool disjoint_column_slices(const TensorView& a, const TensorView& b) {
    if (a.rank() != 3 || b.rank() != 3 || a.dtype() != b.dtype()) return false;
    const std::int64_t st = a.stride(1);
    if (st != b.stride(1) || st <= 0) return false;
    for (const TensorView* v : {&a, &b})
      if (v->size(0) > 1 && v->stride(0) % st != 0) return false;
    const auto esize = static_cast<std::int64_t>(dtype_size(a.dtype()));
    const std::int64_t diff_bytes = reinterpret_cast<std::intptr_t>(b.data()) - reinterpret_cast<std::intptr_t>(a.data());
    if (diff_bytes % esize != 0) return false;
    const std::int64_t r = ((diff_bytes / esize) % st + st) % st;  // b's first column within a's period
    return r >= a.size(2) && r + b.size(2) <= st;
  }

  void check_no_alias(const char* out_name, const TensorView& out, const char* other_name, const TensorView& other) const {
    const ByteRange a = range(out), b = range(other);
    if (a.lo < b.hi && b.lo < a.hi && !disjoint_column_slices(out, other))
      fail(std::string(out_name) + " overlaps " + other_name + " in memory (in-place or aliased calls are not supported)");
  }

  // A stream left at its default (CPU, null) follows the tensors' device.
  Stream resolve_stream(const Stream& stream, Device device) const {
    if (stream.device.is_cpu() && stream.handle == nullptr) return default_stream(device);
    if (stream.device != device)
      fail("the stream is on " + stream.device.str() + " but the tensors are on " + device.str());
    return stream;
  }

  const std::vector<Named>& args() const { return args_; }

 private:
  const char* op_;
  std::vector<Named> args_;
};

const TensorView* opt(const std::optional<TensorView>& v) { return v ? &*v : nullptr; }

// Checks x (rank 3, or rank 2 / batch-1 rank 3 with cu_seqlens) and weight; returns the shape
// with `batch` = number of sequences and, for varlen, `seqlen` = total tokens.
detail::ConvShape check_x_weight(const Validator& v, const TensorView& x, const TensorView& weight,
                                 const TensorView* cu_seqlens) {
  if (cu_seqlens != nullptr && x.rank() == 2) {
    v.check_tensor("x", x, 2);
    if (x.size(1) > 1 && x.stride(1) != 1)
      v.fail("x must have channel stride 1 but has " + std::to_string(x.stride(1)));
  } else {
    v.check_activation("x", x);
    if (cu_seqlens != nullptr && x.size(0) != 1)
      v.fail("with cu_seqlens, x must be [total, C] or [1, total, C] but is " + shape_str(x));
  }
  if (!is_floating(x.dtype())) v.fail("x has dtype " + std::string(dtype_name(x.dtype())) + " but must be f32, bf16 or f16");
  const std::int64_t channels = x.size(x.rank() - 1);
  v.check_tensor("weight", weight, 2);
  if (weight.size(0) != channels)
    v.fail("weight is " + shape_str(weight) + " but x has " + std::to_string(channels) + " channels");
  v.check_dtype("weight", weight, DType::f32, x.dtype());
  detail::ConvShape shape{x.rank() == 3 ? x.size(0) : 1, x.size(x.rank() - 2), channels, weight.size(1)};
  if (cu_seqlens != nullptr) {
    v.check_tensor("cu_seqlens", *cu_seqlens, 1);
    v.check_dtype("cu_seqlens", *cu_seqlens, DType::i32, DType::i64);
    if (cu_seqlens->size(0) < 2)
      v.fail("cu_seqlens is " + shape_str(*cu_seqlens) + " but needs at least 2 entries (one sequence)");
    shape.batch = cu_seqlens->size(0) - 1;
  }
  return shape;
}

void check_bias(const Validator& v, const TensorView& bias, const TensorView& x, std::int64_t channels) {
  v.check_tensor("bias", bias, 1);
  if (bias.size(0) != channels)
    v.fail("bias is " + shape_str(bias) + " but x has " + std::to_string(channels) + " channels");
  v.check_dtype("bias", bias, DType::f32, x.dtype());
}

// Same shape, dtype and layout rules as x (for y, dy, dx).
void check_like_x(const Validator& v, const char* name, const TensorView& t, const TensorView& x) {
  if (x.rank() == 2) {
    v.check_tensor(name, t, 2);
    if (t.size(1) > 1 && t.stride(1) != 1)
      v.fail(std::string(name) + " must have channel stride 1 but has " + std::to_string(t.stride(1)));
  } else {
    v.check_activation(name, t);
  }
  v.check_same_shape(name, t, "x", x);
  v.check_dtype(name, t, x.dtype(), x.dtype());
}

// [N, K-1, C] in x's dtype, channel stride 1. With K = 1 the state is empty: [N, 0, C] is accepted.
void check_state(const Validator& v, const char* name, const TensorView& s, const detail::ConvShape& shape, DType dtype) {
  // K = 1: the state is empty ([N, 0, C]); frameworks hand those over with any pointer and strides.
  const bool empty_ok = shape.width == 1 && s.rank() == 3 && s.size(1) == 0 && s.size(0) >= 1 && s.size(2) >= 1;
  if (empty_ok) {
    if (s.size(0) != shape.batch || s.size(2) != shape.channels)
      v.fail(std::string(name) + " is " + shape_str(s) + " but must be [" + std::to_string(shape.batch) + ", 0, " +
             std::to_string(shape.channels) + "] (sequences, K-1, C)");
    v.check_dtype(name, s, dtype, dtype);
    return;
  }
  v.check_tensor(name, s, 3);
  if (s.size(0) != shape.batch || s.size(1) != shape.width - 1 || s.size(2) != shape.channels)
    v.fail(std::string(name) + " is " + shape_str(s) + " but must be [" + std::to_string(shape.batch) + ", " +
           std::to_string(shape.width - 1) + ", " + std::to_string(shape.channels) + "] (sequences, K-1, C)");
  if (s.size(2) > 1 && s.stride(2) != 1)
    v.fail(std::string(name) + " must have channel stride 1 but has " + std::to_string(s.stride(2)));
  v.check_dtype(name, s, dtype, dtype);
}

void check_all_aliasing(const Validator& v, const std::vector<Named>& outputs,
                        const TensorView* allowed_alias_a = nullptr, const TensorView* allowed_alias_b = nullptr) {
  for (const Named& out : outputs) {
    if (out.view == nullptr || out.view->numel() == 0) continue;
    v.check_no_self_overlap(out.name, *out.view);
    for (const Named& other : v.args()) {
      if (other.view == nullptr || other.view == out.view || other.view->numel() == 0) continue;
      // final_state may be exactly initial_state (in-place chunk hand-over).
      const bool pair = (out.view == allowed_alias_a && other.view == allowed_alias_b) ||
                        (out.view == allowed_alias_b && other.view == allowed_alias_a);
      if (pair && out.view->data() == other.view->data() &&
          std::equal(out.view->strides().begin(), out.view->strides().end(), other.view->strides().begin()))
        continue;
      v.check_no_alias(out.name, *out.view, other.name, *other.view);
    }
  }
}

// Reads a small integer tensor (cu_seqlens, state indices) to the host, in stream order.
std::vector<std::int64_t> read_indices(const TensorView& t, const Stream& s) {
  const std::int64_t n = t.size(0);
  std::vector<std::int64_t> out(static_cast<std::size_t>(n));
  const std::size_t es = dtype_size(t.dtype());
  std::vector<unsigned char> raw(static_cast<std::size_t>(n) * es);
  if (t.device().is_cuda()) {
    // One copy of the whole span (entries between strided elements come along), one sync.
    const std::int64_t span = (n - 1) * t.stride(0) + 1;
    std::vector<unsigned char> all(static_cast<std::size_t>(span) * es);
    cuda::copy_to_host_on_stream(t.device().index, s.handle, all.data(), t.data(), all.size());
    for (std::int64_t i = 0; i < n; ++i) std::memcpy(raw.data() + i * es, all.data() + i * t.stride(0) * static_cast<std::int64_t>(es), es);
  } else {
    for (std::int64_t i = 0; i < n; ++i)
      std::memcpy(raw.data() + i * es, static_cast<const char*>(t.data()) + i * t.stride(0) * static_cast<std::int64_t>(es), es);
  }
  for (std::int64_t i = 0; i < n; ++i) {
    if (t.dtype() == DType::i32) {
      std::int32_t v;
      std::memcpy(&v, raw.data() + i * es, 4);
      out[i] = v;
    } else {
      std::memcpy(&out[i], raw.data() + i * es, 8);
    }
  }
  return out;
}

void check_cu_seqlens_values(const Validator& v, const TensorView& cu, std::int64_t total, const Stream& s) {
  const std::vector<std::int64_t> c = read_indices(cu, s);
  if (c.front() != 0) v.fail("cu_seqlens must start at 0 but starts at " + std::to_string(c.front()));
  for (std::size_t i = 1; i < c.size(); ++i)
    if (c[i] < c[i - 1])
      v.fail("cu_seqlens must be non-decreasing but entry " + std::to_string(i) + " is " + std::to_string(c[i]) +
             " after " + std::to_string(c[i - 1]));
  if (c.back() != total)
    v.fail("cu_seqlens ends at " + std::to_string(c.back()) + " but x has " + std::to_string(total) + " tokens");
}

detail::Sequences sequences_of(const std::optional<TensorView>& cu) {
  detail::Sequences s;
  if (cu) {
    s.cu_seqlens = cu->data();
    s.cu_dtype = cu->dtype();
  }
  return s;
}

// x-like tensors in varlen mode have no batch stride.
std::int64_t batch_stride(const TensorView& t) { return t.rank() == 3 ? t.stride(0) : 0; }
std::int64_t seq_stride(const TensorView& t) { return t.stride(t.rank() - 2); }

detail::StateRef state_ref(const std::optional<TensorView>& s) {
  if (!s) return {};
  return {s->data(), s->stride(0), s->stride(1)};
}
detail::MutableStateRef mutable_state_ref(const std::optional<TensorView>& s) {
  if (!s) return {};
  return {s->data(), s->stride(0), s->stride(1)};
}

// Fields every params struct shares: shape, sequences, dtypes, activation, x, weight, bias.
template <class Params, class Args>
void set_common(Params& p, const Args& a, const detail::ConvShape& shape) {
  p.shape = shape;
  p.seqs = sequences_of(a.cu_seqlens);
  p.dtype = a.x.dtype();
  p.wdtype = a.weight.dtype();
  p.silu = a.activation == Activation::silu;
  p.x = a.x.data();
  p.x_batch_stride = batch_stride(a.x);
  p.x_seq_stride = seq_stride(a.x);
  p.weight = a.weight.data();
  p.w_channel_stride = a.weight.stride(0);
  p.w_width_stride = a.weight.stride(1);
  if (a.bias) {
    p.bias = a.bias->data();
    p.bdtype = a.bias->dtype();
    p.bias_stride = a.bias->stride(0);
  }
}

// The naive variant covers the plain op only.
void check_variant(const Validator& v, Variant variant, bool plain) {
  if (variant == Variant::naive && !plain)
    throw Unsupported("the naive variant supports only the plain op (no activation, states or cu_seqlens)");
  (void)v;
}

}  // namespace

void conv1d_forward(const Conv1dForwardArgs& a, const Stream& stream) {
  const Validator v("conv1d_forward", {{"x", &a.x},
                                       {"weight", &a.weight},
                                       {"bias", opt(a.bias)},
                                       {"y", &a.y},
                                       {"initial_state", opt(a.initial_state)},
                                       {"final_state", opt(a.final_state)},
                                       {"cu_seqlens", opt(a.cu_seqlens)}});
  const detail::ConvShape shape = check_x_weight(v, a.x, a.weight, opt(a.cu_seqlens));
  if (a.bias) check_bias(v, *a.bias, a.x, shape.channels);
  check_like_x(v, "y", a.y, a.x);
  if (a.initial_state) check_state(v, "initial_state", *a.initial_state, shape, a.x.dtype());
  if (a.final_state) check_state(v, "final_state", *a.final_state, shape, a.x.dtype());
  const Device device = v.common_device();
  const Stream s = v.resolve_stream(stream, device);
  check_all_aliasing(v, {{"y", &a.y}, {"final_state", opt(a.final_state)}}, opt(a.final_state), opt(a.initial_state));
  check_variant(v, a.variant, a.activation == Activation::none && !a.initial_state && !a.final_state && !a.cu_seqlens);
  const auto fn = detail::Registry::instance().find<detail::ForwardFn>(
      {device.type, detail::Op::forward, a.x.dtype(), a.variant});
  if (a.cu_seqlens) check_cu_seqlens_values(v, *a.cu_seqlens, shape.seqlen, s);

  ForwardParams p;
  set_common(p, a, shape);
  p.y = a.y.data();
  p.y_batch_stride = batch_stride(a.y);
  p.y_seq_stride = seq_stride(a.y);
  p.tensor_cores = a.tensor_cores;
  if (shape.width > 1) {
    p.initial_state = state_ref(a.initial_state);
    p.final_state = mutable_state_ref(a.final_state);
  }
  p.device_index = device.index;
  p.stream = s.handle;
  fn(p);
}

void conv1d_forward(const TensorView& x, const TensorView& weight, const TensorView* bias, const TensorView& y,
                    const Stream& stream) {
  Conv1dForwardArgs args;
  args.x = x;
  args.weight = weight;
  args.y = y;
  if (bias != nullptr) args.bias = *bias;
  conv1d_forward(args, stream);
}

void conv1d_backward(const Conv1dBackwardArgs& a, const Stream& stream) {
  const Validator v("conv1d_backward", {{"x", &a.x},
                                        {"weight", &a.weight},
                                        {"bias", opt(a.bias)},
                                        {"dy", &a.dy},
                                        {"initial_state", opt(a.initial_state)},
                                        {"d_final_state", opt(a.d_final_state)},
                                        {"cu_seqlens", opt(a.cu_seqlens)},
                                        {"dx", opt(a.dx)},
                                        {"dweight", opt(a.dweight)},
                                        {"dbias", opt(a.dbias)},
                                        {"d_initial_state", opt(a.d_initial_state)}});
  const detail::ConvShape shape = check_x_weight(v, a.x, a.weight, opt(a.cu_seqlens));
  if (a.bias) check_bias(v, *a.bias, a.x, shape.channels);
  check_like_x(v, "dy", a.dy, a.x);
  if (a.dx) check_like_x(v, "dx", *a.dx, a.x);
  if (a.dweight) {
    v.check_tensor("dweight", *a.dweight, 2);
    v.check_same_shape("dweight", *a.dweight, "weight", a.weight);
    v.check_dtype("dweight", *a.dweight, a.weight.dtype(), a.weight.dtype());
  }
  if (a.dbias) {
    v.check_tensor("dbias", *a.dbias, 1);
    if (a.dbias->size(0) != shape.channels)
      v.fail("dbias is " + shape_str(*a.dbias) + " but x has " + std::to_string(shape.channels) + " channels");
    v.check_dtype("dbias", *a.dbias, a.weight.dtype(), a.weight.dtype());
  }
  if (a.initial_state) check_state(v, "initial_state", *a.initial_state, shape, a.x.dtype());
  if (a.d_final_state) check_state(v, "d_final_state", *a.d_final_state, shape, a.x.dtype());
  if (a.d_initial_state) check_state(v, "d_initial_state", *a.d_initial_state, shape, a.x.dtype());
  const Device device = v.common_device();
  const Stream s = v.resolve_stream(stream, device);
  check_all_aliasing(v, {{"dx", opt(a.dx)}, {"dweight", opt(a.dweight)}, {"dbias", opt(a.dbias)},
                         {"d_initial_state", opt(a.d_initial_state)}});
  check_variant(v, a.variant,
                a.activation == Activation::none && !a.initial_state && !a.d_final_state && !a.cu_seqlens && !a.d_initial_state);
  const auto fn = detail::Registry::instance().find<detail::BackwardFn>(
      {device.type, detail::Op::backward, a.x.dtype(), a.variant});
  if (a.cu_seqlens) check_cu_seqlens_values(v, *a.cu_seqlens, shape.seqlen, s);

  BackwardParams p;
  set_common(p, a, shape);
  p.tensor_cores = a.tensor_cores;
  p.dy = a.dy.data();
  p.dy_batch_stride = batch_stride(a.dy);
  p.dy_seq_stride = seq_stride(a.dy);
  if (a.dx) {
    p.dx = a.dx->data();
    p.dx_batch_stride = batch_stride(*a.dx);
    p.dx_seq_stride = seq_stride(*a.dx);
  }
  if (a.dweight) {
    p.dweight = a.dweight->data();
    p.dw_channel_stride = a.dweight->stride(0);
    p.dw_width_stride = a.dweight->stride(1);
  }
  if (a.dbias) {
    p.dbias = a.dbias->data();
    p.dbias_stride = a.dbias->stride(0);
  }
  if (shape.width > 1) {
    p.initial_state = state_ref(a.initial_state);
    p.d_final_state = state_ref(a.d_final_state);
    p.d_initial_state = mutable_state_ref(a.d_initial_state);
  }
  p.device_index = device.index;
  p.stream = s.handle;
  if (p.dx == nullptr && p.dweight == nullptr && p.dbias == nullptr && p.d_initial_state.data == nullptr) return;
  fn(p);
}

void conv1d_update(const Conv1dUpdateArgs& a, const Stream& stream) {
  const Validator v("conv1d_update", {{"x", &a.x},
                                      {"conv_state", &a.conv_state},
                                      {"weight", &a.weight},
                                      {"bias", opt(a.bias)},
                                      {"y", &a.y},
                                      {"state_indices", opt(a.state_indices)}});
  const detail::ConvShape shape = check_x_weight(v, a.x, a.weight, nullptr);
  if (a.bias) check_bias(v, *a.bias, a.x, shape.channels);
  check_like_x(v, "y", a.y, a.x);
  const bool empty_state = shape.width == 1 && a.conv_state.rank() == 3 && a.conv_state.size(1) == 0;
  if (!empty_state) v.check_tensor("conv_state", a.conv_state, 3);
  if (a.conv_state.rank() != 3 || a.conv_state.size(0) < 1 || a.conv_state.size(1) != shape.width - 1 ||
      a.conv_state.size(2) != shape.channels)
    v.fail("conv_state is " + shape_str(a.conv_state) + " but must be [slots, " + std::to_string(shape.width - 1) + ", " +
           std::to_string(shape.channels) + "]");
  if (a.conv_state.size(2) > 1 && a.conv_state.stride(2) != 1)
    v.fail("conv_state must have channel stride 1 but has " + std::to_string(a.conv_state.stride(2)));
  v.check_dtype("conv_state", a.conv_state, a.x.dtype(), a.x.dtype());
  if (a.state_indices) {
    v.check_tensor("state_indices", *a.state_indices, 1);
    v.check_dtype("state_indices", *a.state_indices, DType::i32, DType::i64);
    if (a.state_indices->size(0) != shape.batch)
      v.fail("state_indices is " + shape_str(*a.state_indices) + " but x has " + std::to_string(shape.batch) + " rows");
  } else if (a.conv_state.size(0) < shape.batch) {
    v.fail("conv_state has " + std::to_string(a.conv_state.size(0)) + " slots but x has " + std::to_string(shape.batch) +
           " rows and no state_indices");
  }
  const Device device = v.common_device();
  const Stream s = v.resolve_stream(stream, device);
  check_all_aliasing(v, {{"y", &a.y}, {"conv_state", &a.conv_state}});
  const auto fn = detail::Registry::instance().find<detail::UpdateFn>(
      {device.type, detail::Op::update, a.x.dtype(), Variant::fast});
  if (a.state_indices && device.is_cpu()) {
    const std::vector<std::int64_t> idx = read_indices(*a.state_indices, s);
    std::vector<bool> used(static_cast<std::size_t>(a.conv_state.size(0)), false);
    for (std::size_t b = 0; b < idx.size(); ++b) {
      if (idx[b] == -1) continue;
      if (idx[b] < -1 || idx[b] >= a.conv_state.size(0))
        v.fail("state_indices[" + std::to_string(b) + "] is " + std::to_string(idx[b]) + " but conv_state has " +
               std::to_string(a.conv_state.size(0)) + " slots");
      if (used[idx[b]]) v.fail("state_indices uses slot " + std::to_string(idx[b]) + " twice");
      used[idx[b]] = true;
    }
  }

  detail::UpdateParams p;
  p.shape = shape;
  p.dtype = a.x.dtype();
  p.wdtype = a.weight.dtype();
  p.silu = a.activation == Activation::silu;
  p.x = a.x.data();
  p.x_batch_stride = a.x.stride(0);
  p.x_seq_stride = a.x.stride(1);
  p.weight = a.weight.data();
  p.w_channel_stride = a.weight.stride(0);
  p.w_width_stride = a.weight.stride(1);
  if (a.bias) {
    p.bias = a.bias->data();
    p.bdtype = a.bias->dtype();
    p.bias_stride = a.bias->stride(0);
  }
  p.y = a.y.data();
  p.y_batch_stride = a.y.stride(0);
  p.y_seq_stride = a.y.stride(1);
  p.state = {a.conv_state.data(), a.conv_state.stride(0), a.conv_state.stride(1)};
  p.num_slots = a.conv_state.size(0);
  if (a.state_indices) {
    p.state_indices = a.state_indices->data();
    p.index_dtype = a.state_indices->dtype();
    p.index_stride = a.state_indices->stride(0);
  }
  p.device_index = device.index;
  p.stream = s.handle;
  fn(p);
}

}  // namespace shortconv
