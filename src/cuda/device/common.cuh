// Device-side helpers shared by the CUDA kernels: dtype conversion, packed vector access and
// the f32 view of small runtime-typed buffers (weights, bias).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "shortconv/dtype.hpp"

namespace shortconv::cuda {

__device__ __forceinline__ std::int64_t min64(std::int64_t a, std::int64_t b) { return a < b ? a : b; }
__device__ __forceinline__ std::int64_t max64(std::int64_t a, std::int64_t b) { return a > b ? a : b; }

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }

template <class T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }

/// Element `i` of a runtime-typed buffer, as f32.
__device__ __forceinline__ float load_any(const void* p, DType dtype, std::int64_t i) {
  switch (dtype) {
    case DType::f32: return static_cast<const float*>(p)[i];
    case DType::bf16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case DType::f16: return __half2float(static_cast<const __half*>(p)[i]);
  }
  return 0.0f;
}

/// load_any in two halves: the raw bits of element `i` (a 16-bit type in the low half), and
/// their value as f32. Issuing several loads before converting any lets them overlap: load_any
/// converts inside the dtype switch, so each load waits for its data before the next is issued.
__device__ __forceinline__ unsigned load_bits(const void* p, DType dtype, std::int64_t i) {
  return dtype == DType::f32 ? static_cast<const unsigned*>(p)[i] : static_cast<const unsigned short*>(p)[i];
}
__device__ __forceinline__ float bits_as_f32(unsigned bits, DType dtype) {
  switch (dtype) {
    case DType::f32: return __uint_as_float(bits);
    case DType::bf16: return __uint_as_float(bits << 16);
    case DType::f16: return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
  }
  return 0.0f;
}

/// Writes f32 `v` as element `i` of a runtime-typed buffer.
__device__ __forceinline__ void store_any(void* p, DType dtype, std::int64_t i, float v) {
  switch (dtype) {
    case DType::f32: static_cast<float*>(p)[i] = v; break;
    case DType::bf16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v); break;
    case DType::f16: static_cast<__half*>(p)[i] = __float2half_rn(v); break;
  }
}

/// kVec elements of T moved as one aligned access (16 bytes for 8 x bf16 or 4 x f32).
template <class T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

/// Loads kVec consecutive elements as f32: one packed access when `packed`, else `n` scalar
/// loads (the rest are zero). `packed` must only be true for kVec-aligned addresses.
template <class T, int kVec>
__device__ __forceinline__ void load_vec(const T* __restrict__ p, bool packed, int n, float (&out)[kVec]) {
  if (packed) {
    const Pack<T, kVec> pk = *reinterpret_cast<const Pack<T, kVec>*>(p);
#pragma unroll
    for (int i = 0; i < kVec; ++i) out[i] = to_f32(pk.v[i]);
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) out[i] = i < n ? to_f32(p[i]) : 0.0f;
  }
}

/// Loads kVec consecutive elements without converting them (16-bit values stay packed two to a
/// register, so a staging buffer of in-flight loads costs half the registers).
template <class T, int kVec>
__device__ __forceinline__ void load_raw(const T* __restrict__ p, bool packed, int n, Pack<T, kVec>& out) {
  if (packed) {
    out = *reinterpret_cast<const Pack<T, kVec>*>(p);
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) out.v[i] = i < n ? p[i] : from_f32<T>(0.0f);
  }
}

/// Asks L2 to fetch the line holding `p` without waiting for it and without using a register:
/// later loads of it then wait for L2, not DRAM, so more bytes are in flight per SM than the
/// registers for staged loads alone allow.
__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

/// Loads of one tensor in flight per thread for about kBytes bytes, clamped to [kMin, kMax].
template <class T, int kVec, int kBytes = 64, int kMin = 4, int kMax = 16>
constexpr int unroll_for() {
  constexpr int u = kBytes / static_cast<int>(sizeof(T) * kVec);
  return u < kMin ? kMin : u > kMax ? kMax : u;
}

/// One vector store of 4, 8 or 16 bytes. Assigning a struct (a Pack, a float2) compiled to one
/// store per member (eight 2-byte stores for a 16-byte Pack of bf16), so the widths are spelled
/// out in PTX.
__device__ __forceinline__ void st_global(void* p, unsigned a) { asm volatile("st.global.u32 [%0], %1;" ::"l"(p), "r"(a) : "memory"); }
__device__ __forceinline__ void st_global(void* p, unsigned a, unsigned b) {
  asm volatile("st.global.v2.u32 [%0], {%1, %2};" ::"l"(p), "r"(a), "r"(b) : "memory");
}
__device__ __forceinline__ void st_global(void* p, unsigned a, unsigned b, unsigned c, unsigned d) {
  asm volatile("st.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(a), "r"(b), "r"(c), "r"(d) : "memory");
}

/// The bits of elements 2j and 2j+1 (16-bit T), or of element j (f32), of a Pack as one word.
template <class T, int kVec>
__device__ __forceinline__ unsigned pack_word(const Pack<T, kVec>& pk, int j) {
  unsigned w;
  memcpy(&w, reinterpret_cast<const unsigned char*>(&pk) + 4 * j, 4);
  return w;
}

/// Two floats rounded to T, a in the low half.
template <class T>
__device__ __forceinline__ unsigned pack2(float a, float b);
template <>
__device__ __forceinline__ unsigned pack2<__nv_bfloat16>(float a, float b) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<const unsigned*>(&v);
}
template <>
__device__ __forceinline__ unsigned pack2<__half>(float a, float b) {
  const __half2 v = __floats2half2_rn(a, b);
  return *reinterpret_cast<const unsigned*>(&v);
}

/// Stores a Pack as one vector access (see st_global).
template <class T, int kVec>
__device__ __forceinline__ void store_pack(T* __restrict__ p, const Pack<T, kVec>& pk) {
  constexpr int kBytes = static_cast<int>(sizeof(T)) * kVec;
  if constexpr (kBytes == 16) {
    st_global(p, pack_word(pk, 0), pack_word(pk, 1), pack_word(pk, 2), pack_word(pk, 3));
  } else if constexpr (kBytes == 8) {
    st_global(p, pack_word(pk, 0), pack_word(pk, 1));
  } else if constexpr (kBytes == 4) {
    st_global(p, pack_word(pk, 0));
  } else {
    *reinterpret_cast<Pack<T, kVec>*>(p) = pk;
  }
}

/// Stores kVec f32 values as T; see load_vec for `packed` and `n`.
template <class T, int kVec>
__device__ __forceinline__ void store_vec(T* __restrict__ p, bool packed, int n, const float (&in)[kVec]) {
  if (packed) {
    Pack<T, kVec> pk;
#pragma unroll
    for (int i = 0; i < kVec; ++i) pk.v[i] = from_f32<T>(in[i]);
    store_pack<T, kVec>(p, pk);
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i)
      if (i < n) p[i] = from_f32<T>(in[i]);
  }
}

/// Maps shortconv dtypes to CUDA element types.
template <DType kDtype>
struct CudaType;
template <>
struct CudaType<DType::f32> {
  using type = float;
};
template <>
struct CudaType<DType::bf16> {
  using type = __nv_bfloat16;
};
template <>
struct CudaType<DType::f16> {
  using type = __half;
};

}  // namespace shortconv::cuda
