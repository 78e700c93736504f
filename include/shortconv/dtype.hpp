// Element types that shortconv tensors can hold.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace shortconv {

enum class DType : std::uint8_t { f32, bf16, f16 };

/// Bytes per element of `dtype`.
constexpr std::size_t dtype_size(DType dtype) noexcept {
  return dtype == DType::f32 ? 4 : 2;
}

/// Short lowercase name ("f32", "bf16", "f16").
constexpr std::string_view dtype_name(DType dtype) noexcept {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
  }
  return "?";
}

/// Parses "f32" / "float32" / "bf16" / "bfloat16" / "f16" / "float16"; throws InvalidArgument otherwise.
DType parse_dtype(std::string_view name);

}  // namespace shortconv
