// Front end shared by every backend: validate all arguments, build the params struct, look up
// the kernel in the registry and run it. Nothing is written before every check has passed.
#include <algorithm>
#include <array>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

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

std::string shape_str(const TensorView& v) {
  std::ostringstream os;
  os << '[';
  for (int d = 0; d < v.rank(); ++d) os << (d ? ", " : "") << v.size(d);
  os << ']';
  return os.str();
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
    std::int64_t max_offset = 0;
    for (int d = 0; d < rank; ++d) {
      if (v.size(d) < 1) fail(std::string(name) + " has a zero or negative dimension: " + shape_str(v));
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

// Checks shared by forward and backward for x and weight; returns the shape.
detail::ConvShape check_x_weight(const Validator& v, const TensorView& x, const TensorView& weight) {
  v.check_activation("x", x);
  v.check_tensor("weight", weight, 2);
  if (weight.size(0) != x.size(2))
    v.fail("weight is " + shape_str(weight) + " but x has " + std::to_string(x.size(2)) + " channels");
  v.check_dtype("weight", weight, DType::f32, x.dtype());
  return {x.size(0), x.size(1), x.size(2), weight.size(1)};
}

void check_all_aliasing(const Validator& v, const std::vector<Named>& outputs) {
  for (const Named& out : outputs) {
    if (out.view == nullptr) continue;
    v.check_no_self_overlap(out.name, *out.view);
    for (const Named& other : v.args())
      if (other.view != nullptr && other.view != out.view) v.check_no_alias(out.name, *out.view, other.name, *other.view);
  }
}

}  // namespace

void conv1d_forward(const Conv1dForwardArgs& a, const Stream& stream) {
  const Validator v("conv1d_forward", {{"x", &a.x}, {"weight", &a.weight}, {"bias", opt(a.bias)}, {"y", &a.y}});
  const detail::ConvShape shape = check_x_weight(v, a.x, a.weight);
  if (a.bias) {
    v.check_tensor("bias", *a.bias, 1);
    if (a.bias->size(0) != shape.channels)
      v.fail("bias is " + shape_str(*a.bias) + " but x has " + std::to_string(shape.channels) + " channels");
    v.check_dtype("bias", *a.bias, DType::f32, a.x.dtype());
  }
  v.check_activation("y", a.y);
  v.check_same_shape("y", a.y, "x", a.x);
  v.check_dtype("y", a.y, a.x.dtype(), a.x.dtype());
  const Device device = v.common_device();
  const Stream s = v.resolve_stream(stream, device);
  check_all_aliasing(v, {{"y", &a.y}});

  const auto fn = detail::Registry::instance().find<detail::ForwardFn>(
      {device.type, detail::Op::forward, a.x.dtype(), a.variant});

  ForwardParams p;
  p.shape = shape;
  p.dtype = a.x.dtype();
  p.wdtype = a.weight.dtype();
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
  p.device_index = device.index;
  p.stream = s.handle;
  fn(p);
}

void conv1d_forward(const TensorView& x, const TensorView& weight, const TensorView* bias, const TensorView& y,
                    const Stream& stream) {
  Conv1dForwardArgs args{.x = x, .weight = weight, .bias = std::nullopt, .y = y};
  if (bias != nullptr) args.bias = *bias;
  conv1d_forward(args, stream);
}

void conv1d_backward(const Conv1dBackwardArgs& a, const Stream& stream) {
  const Validator v("conv1d_backward", {{"x", &a.x},
                                        {"weight", &a.weight},
                                        {"dy", &a.dy},
                                        {"dx", opt(a.dx)},
                                        {"dweight", opt(a.dweight)},
                                        {"dbias", opt(a.dbias)}});
  const detail::ConvShape shape = check_x_weight(v, a.x, a.weight);
  v.check_activation("dy", a.dy);
  v.check_same_shape("dy", a.dy, "x", a.x);
  v.check_dtype("dy", a.dy, a.x.dtype(), a.x.dtype());
  if (a.dx) {
    v.check_activation("dx", *a.dx);
    v.check_same_shape("dx", *a.dx, "x", a.x);
    v.check_dtype("dx", *a.dx, a.x.dtype(), a.x.dtype());
  }
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
  const Device device = v.common_device();
  const Stream s = v.resolve_stream(stream, device);
  check_all_aliasing(v, {{"dx", opt(a.dx)}, {"dweight", opt(a.dweight)}, {"dbias", opt(a.dbias)}});

  const auto fn = detail::Registry::instance().find<detail::BackwardFn>(
      {device.type, detail::Op::backward, a.x.dtype(), a.variant});

  BackwardParams p;
  p.shape = shape;
  p.dtype = a.x.dtype();
  p.wdtype = a.weight.dtype();
  p.x = a.x.data();
  p.x_batch_stride = a.x.stride(0);
  p.x_seq_stride = a.x.stride(1);
  p.weight = a.weight.data();
  p.w_channel_stride = a.weight.stride(0);
  p.w_width_stride = a.weight.stride(1);
  p.dy = a.dy.data();
  p.dy_batch_stride = a.dy.stride(0);
  p.dy_seq_stride = a.dy.stride(1);
  if (a.dx) {
    p.dx = a.dx->data();
    p.dx_batch_stride = a.dx->stride(0);
    p.dx_seq_stride = a.dx->stride(1);
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
  p.device_index = device.index;
  p.stream = s.handle;
  if (p.dx == nullptr && p.dweight == nullptr && p.dbias == nullptr) return;  // nothing requested
  fn(p);
}

}  // namespace shortconv
