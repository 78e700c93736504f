// Element types that shortconv tensors can hold.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace shortconv {

// Floating types hold activations and weights; the integer types hold cu_seqlens and state indices.
enum class DType : std::uint8_t { f32, bf16, f16, i32, i64 };

/// True for the floating types (f32, bf16, f16).
constexpr bool is_floating(DType dtype) noexcept { return dtype == DType::f32 || dtype == DType::bf16 || dtype == DType::f16; }

/// Bytes per element of `dtype`.
constexpr std::size_t dtype_size(DType dtype) noexcept {
  switch (dtype) {
    case DType::f32:
    case DType::i32: return 4;
    case DType::bf16:
    case DType::f16: return 2;
    case DType::i64: return 8;
  }
  return 0;
}

/// Short lowercase name ("f32", "bf16", "f16").
constexpr std::string_view dtype_name(DType dtype) noexcept {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
  }
  return "?";
}

/// Parses "f32"/"float32"/"float", "bf16"/"bfloat16", "f16"/"float16"/"half", "i32"/"int32",
/// "i64"/"int64"; throws InvalidArgument otherwise.
DType parse_dtype(std::string_view name);

}  // namespace shortconv
