// shortconv._C: the nanobind binding of the C++ API. Arrays arrive through DLPack (or the buffer
// protocol) as nb::ndarray and are wrapped, zero-copy, in shortconv::TensorView with their
// strides; every check on shapes, strides, dtypes and aliasing is the library's own. The Python
// package (python/shortconv) adds output allocation, the torch custom ops and the adapters.
//
// Inputs are nb::ndarray<nb::ro> (read-only sources such as jax arrays are accepted), outputs
// nb::ndarray<> (a read-only array is refused). No argument is ever converted or copied: a
// mismatch raises. The GIL is released while the library runs.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/string_view.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "shortconv/shortconv.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using In = nb::ndarray<nb::ro>;   // read by the op
using Out = nb::ndarray<>;        // written by the op (must be writable)

// Stands in for the data pointer of an empty array (a K = 1 state [N, 0, C]), which frameworks
// may report as null; the library checks it is non-null and never dereferences it.
alignas(64) unsigned char g_empty_storage[64];

std::string dlpack_dtype_name(nb::dlpack::dtype dt) {
  using Code = nb::dlpack::dtype_code;
  std::string base;
  switch (static_cast<Code>(dt.code)) {
    case Code::Int: base = "int"; break;
    case Code::UInt: base = "uint"; break;
    case Code::Float: base = "float"; break;
    case Code::Bfloat: base = "bfloat"; break;
    case Code::Complex: base = "complex"; break;
    case Code::Bool: return "bool";
    default: base = "dtype_code" + std::to_string(dt.code) + "_"; break;
  }
  std::string name = base + std::to_string(dt.bits);
  if (dt.lanes != 1) name += "x" + std::to_string(dt.lanes);
  return name;
}

shortconv::DType to_dtype(nb::dlpack::dtype dt, const char* name) {
  using Code = nb::dlpack::dtype_code;
  if (dt.lanes == 1) {
    const auto code = static_cast<Code>(dt.code);
    if (code == Code::Float && dt.bits == 32) return shortconv::DType::f32;
    if (code == Code::Float && dt.bits == 16) return shortconv::DType::f16;
    if (code == Code::Bfloat && dt.bits == 16) return shortconv::DType::bf16;
    if (code == Code::Int && dt.bits == 32) return shortconv::DType::i32;
    if (code == Code::Int && dt.bits == 64) return shortconv::DType::i64;
    // A floating type the library has no kernels for (float64, the fp8 formats) is a missing
    // feature rather than bad input: NotImplementedError, like the library's Unsupported.
    if (code == Code::Float || dt.code >= 7)  // 7+: the fp8/fp6/fp4 formats
      throw shortconv::Unsupported(std::string(name) + " has dtype " + dlpack_dtype_name(dt) +
                                   ": shortconv has kernels for float32, bfloat16 and float16 only");
  }
  throw shortconv::InvalidArgument(std::string(name) + " has dtype " + dlpack_dtype_name(dt) +
                                   ", which shortconv does not take (float32, bfloat16, float16; "
                                   "int32 or int64 for indices)");
}

shortconv::Device to_device(int type, int id, const char* name) {
  if (type == nb::device::cpu::value || type == nb::device::cuda_host::value) return shortconv::Device::cpu();
  if (type == nb::device::cuda::value) return shortconv::Device::cuda(id);
  throw shortconv::InvalidArgument(std::string(name) + " is on DLPack device type " + std::to_string(type) +
                                   "; shortconv takes CPU (1), pinned host (3) and CUDA (2) arrays");
}

template <typename Array>
shortconv::TensorView to_view(const Array& a, const char* name) {
  const auto rank = static_cast<int>(a.ndim());
  if (rank > shortconv::kMaxRank)
    throw shortconv::InvalidArgument(std::string(name) + " has " + std::to_string(rank) +
                                     " dimensions; shortconv arrays have at most " +
                                     std::to_string(shortconv::kMaxRank));
  std::array<std::int64_t, shortconv::kMaxRank> shape{}, strides{};
  for (int d = 0; d < rank; ++d) {
    shape[d] = static_cast<std::int64_t>(a.shape(d));
    strides[d] = a.stride(d);  // DLPack strides are in elements, like TensorView's
  }
  void* data = const_cast<void*>(static_cast<const void*>(a.data()));
  if (a.size() == 0) {
    // An empty array addresses no element, so its pointer and strides are arbitrary (null, or
    // all-zero strides from numpy); give it a non-null pointer and row-major strides.
    if (data == nullptr) data = g_empty_storage;
    std::int64_t stride = 1;
    for (int d = rank - 1; d >= 0; --d) {
      strides[d] = stride;
      stride *= std::max<std::int64_t>(shape[d], 1);
    }
  }
  return shortconv::TensorView(data, to_dtype(a.dtype(), name), to_device(a.device_type(), a.device_id(), name),
                               std::span<const std::int64_t>(shape.data(), rank),
                               std::span<const std::int64_t>(strides.data(), rank));
}

template <typename Array>
std::optional<shortconv::TensorView> to_view(const std::optional<Array>& a, const char* name) {
  if (!a) return std::nullopt;
  return to_view(*a, name);
}

shortconv::Activation to_activation(std::string_view name) {
  if (name == "none") return shortconv::Activation::none;
  if (name == "silu") return shortconv::Activation::silu;
  throw shortconv::InvalidArgument("activation must be 'none' or 'silu' but is '" + std::string(name) + "'");
}

// The caller's stream (a cudaStream_t as an integer, 0 = the legacy default stream) on x's
// device; CPU calls ignore it.
shortconv::Stream to_stream(const shortconv::TensorView& x, std::uintptr_t stream) {
  if (!x.device().is_cuda()) return shortconv::Stream::cpu();
  return shortconv::Stream{x.device(), reinterpret_cast<void*>(stream)};
}

void forward(const In& x, const In& weight, const std::optional<In>& bias, const Out& y, std::string_view activation,
             const std::optional<In>& initial_state, const std::optional<Out>& final_state,
             const std::optional<In>& cu_seqlens, std::uintptr_t stream) {
  shortconv::Conv1dForwardArgs args;
  args.x = to_view(x, "x");
  args.weight = to_view(weight, "weight");
  args.bias = to_view(bias, "bias");
  args.y = to_view(y, "y");
  args.activation = to_activation(activation);
  args.initial_state = to_view(initial_state, "initial_state");
  args.final_state = to_view(final_state, "final_state");
  args.cu_seqlens = to_view(cu_seqlens, "cu_seqlens");
  const shortconv::Stream s = to_stream(args.x, stream);
  nb::gil_scoped_release release;
  shortconv::conv1d_forward(args, s);
}

void backward(const In& x, const In& weight, const std::optional<In>& bias, const In& dy, std::string_view activation,
              const std::optional<In>& initial_state, const std::optional<In>& d_final_state,
              const std::optional<In>& cu_seqlens, const std::optional<Out>& dx, const std::optional<Out>& dweight,
              const std::optional<Out>& dbias, const std::optional<Out>& d_initial_state, std::uintptr_t stream) {
  shortconv::Conv1dBackwardArgs args;
  args.x = to_view(x, "x");
  args.weight = to_view(weight, "weight");
  args.bias = to_view(bias, "bias");
  args.dy = to_view(dy, "dy");
  args.activation = to_activation(activation);
  args.initial_state = to_view(initial_state, "initial_state");
  args.d_final_state = to_view(d_final_state, "d_final_state");
  args.cu_seqlens = to_view(cu_seqlens, "cu_seqlens");
  args.dx = to_view(dx, "dx");
  args.dweight = to_view(dweight, "dweight");
  args.dbias = to_view(dbias, "dbias");
  args.d_initial_state = to_view(d_initial_state, "d_initial_state");
  const shortconv::Stream s = to_stream(args.x, stream);
  nb::gil_scoped_release release;
  shortconv::conv1d_backward(args, s);
}

void update(const In& x, const Out& conv_state, const In& weight, const std::optional<In>& bias, const Out& y,
            std::string_view activation, const std::optional<In>& state_indices, std::uintptr_t stream) {
  shortconv::Conv1dUpdateArgs args;
  args.x = to_view(x, "x");
  args.conv_state = to_view(conv_state, "conv_state");
  args.weight = to_view(weight, "weight");
  args.bias = to_view(bias, "bias");
  args.y = to_view(y, "y");
  args.activation = to_activation(activation);
  args.state_indices = to_view(state_indices, "state_indices");
  const shortconv::Stream s = to_stream(args.x, stream);
  nb::gil_scoped_release release;
  shortconv::conv1d_update(args, s);
}

}  // namespace

NB_MODULE(_C, m) {
  m.doc() = "Low-level binding of the shortconv C++ library. Use the functions of the shortconv package instead.";

  // InvalidArgument -> ValueError, Unsupported -> NotImplementedError, DeviceError -> RuntimeError.
  // Anything else falls through to nanobind's own translators (std::bad_alloc -> MemoryError, ...).
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const shortconv::InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const shortconv::Unsupported& e) {
      PyErr_SetString(PyExc_NotImplementedError, e.what());
    } catch (const shortconv::DeviceError& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });

  m.attr("__version__") = std::to_string(shortconv::kVersionMajor) + "." + std::to_string(shortconv::kVersionMinor) +
                          "." + std::to_string(shortconv::kVersionPatch);

  m.def("built_with_cuda", &shortconv::built_with_cuda, "True when the library was built with the CUDA backend.");
  m.def("cuda_device_count", &shortconv::cuda_device_count,
        "Number of GPUs the library sees (0 without the CUDA backend or a driver).");

  m.def("forward", &forward, "x"_a.noconvert(), "weight"_a.noconvert(), "bias"_a.noconvert().none(),
        "y"_a.noconvert(), "activation"_a, "initial_state"_a.noconvert().none(), "final_state"_a.noconvert().none(),
        "cu_seqlens"_a.noconvert().none(), "stream"_a = 0,
        "conv1d_forward: y = act(causal_conv1d(x, weight) + bias), written into y.\n\n"
        "x [B, T, C] (or [total, C] / [1, total, C] with cu_seqlens [N+1]), weight [C, K], bias [C],\n"
        "initial_state / final_state [N, K-1, C] (final_state may be the same array as initial_state).\n"
        "activation is 'none' or 'silu'. stream is a cudaStream_t as an integer (0: the default\n"
        "stream), ignored for CPU arrays. Raises ValueError (bad input), NotImplementedError (no\n"
        "kernel) or RuntimeError (device failure); nothing is written when it raises.");

  m.def("backward", &backward, "x"_a.noconvert(), "weight"_a.noconvert(), "bias"_a.noconvert().none(),
        "dy"_a.noconvert(), "activation"_a, "initial_state"_a.noconvert().none(),
        "d_final_state"_a.noconvert().none(), "cu_seqlens"_a.noconvert().none(), "dx"_a.noconvert().none(),
        "dweight"_a.noconvert().none(), "dbias"_a.noconvert().none(), "d_initial_state"_a.noconvert().none(),
        "stream"_a = 0,
        "conv1d_backward: writes each of dx, dweight, dbias and d_initial_state that is given.\n\n"
        "dweight and dbias are written (not accumulated) in the weight's dtype; bias is the forward's\n"
        "(needed to recompute the pre-activation for silu). Errors as in forward().");

  m.def("update", &update, "x"_a.noconvert(), "conv_state"_a.noconvert(), "weight"_a.noconvert(),
        "bias"_a.noconvert().none(), "y"_a.noconvert(), "activation"_a, "state_indices"_a.noconvert().none(),
        "stream"_a = 0,
        "conv1d_update: decode step. x [B, T_new, C], conv_state [S, K-1, C] updated in place, y written.\n\n"
        "state_indices [B] (int32/int64) picks each row's slot; -1 marks a padding row (y = 0, no state\n"
        "touched). Errors as in forward().");
}
