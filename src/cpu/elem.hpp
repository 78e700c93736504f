// Element access for CPU kernels: load any supported dtype as f32, store f32 as any dtype.
// 16-bit types are distinct tag structs so templates can dispatch on them.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "shortconv/dtype.hpp"
#include "shortconv/half.hpp"

namespace shortconv::cpu {

struct bf16_t {
  std::uint16_t bits;
};
struct f16_t {
  std::uint16_t bits;
};

inline float to_f32(float v) { return v; }
inline float to_f32(bf16_t v) { return std::bit_cast<float>(static_cast<std::uint32_t>(v.bits) << 16); }
inline float to_f32(f16_t v) {
#if defined(__FLT16_MANT_DIG__)
  return static_cast<float>(std::bit_cast<_Float16>(v.bits));  // vcvtph2ps where F16C exists
#else
  return f16_to_float(v.bits);
#endif
}

template <class T>
T from_f32(float v);
template <>
inline float from_f32<float>(float v) { return v; }
template <>
inline bf16_t from_f32<bf16_t>(float v) { return {float_to_bf16(v)}; }
template <>
inline f16_t from_f32<f16_t>(float v) {
#if defined(__FLT16_MANT_DIG__)
  return {std::bit_cast<std::uint16_t>(static_cast<_Float16>(v))};
#else
  return {float_to_f16(v)};
#endif
}

/// Element `i` of an i32 or i64 index buffer.
inline std::int64_t load_index(const void* p, DType dtype, std::int64_t i) {
  return dtype == DType::i64 ? static_cast<const std::int64_t*>(p)[i] : static_cast<const std::int32_t*>(p)[i];
}

/// exp(x) that the compiler can vectorise (libm's expf is a call): Cody-Waite reduction to
/// r in [-ln2/2, ln2/2] and a degree-6 Taylor polynomial, within ~2 ulp of expf on [-87, 88].
/// NaN stays NaN; past ln(FLT_MAX) the result is +inf, as expf's (so that silu(-inf) and
/// silu'(-inf) are NaN, as z * sigmoid(z) is in the formula, and not -inf).
inline float exp_vec(float x_in) {
  const float x = std::min(std::max(x_in, -87.0f), 88.0f);
  const float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;  // round to nearest
  const float r = (x - n * 0.693145752f) - n * 1.42860677e-6f;
  float p = 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const auto scale = std::bit_cast<float>(static_cast<std::int32_t>((static_cast<std::int32_t>(n) + 127) << 23));
  return x_in > 88.72283905f ? std::numeric_limits<float>::infinity() : p * scale;
}

/// silu(z) = z * sigmoid(z), and its derivative sigmoid(z) * (1 + z * (1 - sigmoid(z))).
inline float silu(float z) { return z / (1.0f + exp_vec(-z)); }
inline float silu_grad(float z) {
  const float s = 1.0f / (1.0f + exp_vec(-z));
  return s * (1.0f + z * (1.0f - s));
}

/// Reads element `i` of a buffer of runtime dtype `dtype` as f32 (for small, cold data).
inline float load_as_f32(const void* p, DType dtype, std::int64_t i) {
  switch (dtype) {
    case DType::f32: return static_cast<const float*>(p)[i];
    case DType::bf16: return to_f32(static_cast<const bf16_t*>(p)[i]);
    case DType::f16: return to_f32(static_cast<const f16_t*>(p)[i]);
    default: return 0.0f;  // integer dtypes never reach the float kernels
  }
}

/// Writes f32 `v` as element `i` of a buffer of runtime dtype `dtype`.
inline void store_from_f32(void* p, DType dtype, std::int64_t i, float v) {
  switch (dtype) {
    case DType::f32: static_cast<float*>(p)[i] = v; break;
    case DType::bf16: static_cast<bf16_t*>(p)[i] = from_f32<bf16_t>(v); break;
    case DType::f16: static_cast<f16_t*>(p)[i] = from_f32<f16_t>(v); break;
    default: break;
  }
}

}  // namespace shortconv::cpu
