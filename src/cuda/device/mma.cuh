// Warp-level tensor-core helpers shared by the tensor-core kernels (conv1d_fwd_mma.cu,
// conv1d_bwd_mma.cu): the m16n8k16 product on 16-bit operands and the fragment builders that take
// a channel's two 16-bit values out of two channel-last rows.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

namespace shortconv::cuda::mma {

/// d = A B + C for one m16n8k16 tile of T (bf16 or f16), f32 accumulators. Fragment layout (g =
/// lane / 4, q = lane % 4): a = {A[g][2q..2q+1], A[g+8][2q..], A[g][2q+8..], A[g+8][2q+8..]},
/// b0 = B[2q..2q+1][g], b1 = B[2q+8..2q+9][g], d = {D[g][2q], D[g][2q+1], D[g+8][2q], D[g+8][2q+1]}
/// and c likewise; each 32-bit operand holds the lower index in its low half.
template <class T>
__device__ __forceinline__ void mma16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1, const float (&c)[4]) {
#define SHORTCONV_MMA(TY)                                                                                                 \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." TY "." TY ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n" \
               : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])                                                    \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]))
  if constexpr (std::is_same_v<T, __half>) {
    SHORTCONV_MMA("f16");
  } else {
    SHORTCONV_MMA("bf16");
  }
#undef SHORTCONV_MMA
}

/// d += A B (the accumulators are C).
template <class T>
__device__ __forceinline__ void mma16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  const float c[4] = {d[0], d[1], d[2], d[3]};
  mma16816<T>(d, a, b0, b1, c);
}

/// d = A B (no accumulator input: the first product of a sum).
template <class T>
__device__ __forceinline__ void mma16816_first(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  const float zeros[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  mma16816<T>(d, a, b0, b1, zeros);
}

/// The 32-bit shared-space address of a pointer into shared memory (for ldmatrix / stmatrix).
__device__ __forceinline__ unsigned smem_address(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }

/// ldmatrix .x4: four 8x8 matrices of 16-bit values; lane l gives the address of row l % 8 of
/// matrix l / 8 (16 bytes each), and lane (g, q) receives row g, columns 2q and 2q + 1 of each.
__device__ __forceinline__ void ldsm_x4(unsigned (&v)[4], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(v[0]), "=r"(v[1]), "=r"(v[2]), "=r"(v[3])
               : "r"(addr)
               : "memory");
}

/// ldmatrix .x4 .trans: as ldsm_x4, but lane (g, q) receives column g, rows 2q and 2q + 1.
__device__ __forceinline__ void ldsm_x4_trans(unsigned (&v)[4], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(v[0]), "=r"(v[1]), "=r"(v[2]), "=r"(v[3])
               : "r"(addr)
               : "memory");
}

/// stmatrix .x4 (sm_90): the inverse of ldsm_x4; lane (g, q)'s v[i] goes to row g, columns 2q
/// and 2q + 1 of matrix i, whose row r lane 8i + r addresses.
__device__ __forceinline__ void stsm_x4(unsigned addr, const unsigned (&v)[4]) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1,%2,%3,%4};\n" ::"r"(addr), "r"(v[0]), "r"(v[1]), "r"(v[2]),
               "r"(v[3])
               : "memory");
}

/// (channel ch of row `lo`, channel ch of row `hi`) as one 32-bit operand, from two 16-byte
/// segments of 8 channels each: the 16-bit halves of word ch/2 of the two rows.
__device__ __forceinline__ unsigned pair_of(const uint4& lo, const uint4& hi, int ch) {
  const unsigned* l = reinterpret_cast<const unsigned*>(&lo);
  const unsigned* h = reinterpret_cast<const unsigned*>(&hi);
  return __byte_perm(l[ch / 2], h[ch / 2], (ch & 1) ? 0x7632 : 0x5410);
}

/// The value 1 in both halves of a 16-bit pair of T.
template <class T>
constexpr unsigned kOnePair = std::is_same_v<T, __half> ? 0x3c003c00u : 0x3f803f80u;

/// True when either 16-bit half of `v` has an all-ones exponent (bf16: 0x7f80, f16: 0x7c00).
template <class T>
__device__ __forceinline__ bool nonfinite_pair(unsigned v) {
  constexpr unsigned kExp = std::is_same_v<T, __half> ? 0x7c00u : 0x7f80u;
  return ((v & kExp) == kExp) || (((v >> 16) & kExp) == kExp);
}

/// The 16-bit value with bits `h` as f32.
template <class T>
__device__ __forceinline__ float bits_to_f32(unsigned short h) {
  if constexpr (std::is_same_v<T, __half>) {
    return __half2float(__ushort_as_half(h));
  } else {
    return __bfloat162float(__ushort_as_bfloat16(h));
  }
}

/// True for an infinite or NaN f32.
__device__ __forceinline__ bool nonfinite(float v) { return (__float_as_uint(v) & 0x7f800000u) == 0x7f800000u; }

}  // namespace shortconv::cuda::mma
