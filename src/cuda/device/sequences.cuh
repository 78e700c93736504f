// Device-side view of where the sequences are: batch rows of equal length, or the packed runs of
// a varlen batch (cu_seqlens). Kernels walk a flat token index t in [0, rows) and split their
// token runs at sequence boundaries.
#pragma once

#include <cstdint>

#include "../../params.hpp"
#include "common.cuh"

namespace shortconv::cuda {

__device__ __forceinline__ std::int64_t load_index(const void* p, DType dtype, std::int64_t i) {
  return dtype == DType::i64 ? static_cast<const std::int64_t*>(p)[i] : static_cast<const std::int32_t*>(p)[i];
}

struct SeqView {
  const void* cu = nullptr;  // null in batch mode
  DType cu_dtype = DType::i32;
  std::int64_t count = 0;   // sequences
  std::int64_t seqlen = 0;  // batch mode: T

  __device__ __forceinline__ bool varlen() const { return cu != nullptr; }
  /// Flat index of the first token of sequence s (s may be count: the end).
  __device__ __forceinline__ std::int64_t begin(std::int64_t s) const { return varlen() ? load_index(cu, cu_dtype, s) : s * seqlen; }
  /// The sequence holding flat token t (the last of several empty ones sharing its start).
  __device__ __forceinline__ std::int64_t find(std::int64_t t) const {
    if (!varlen()) return t / seqlen;
    std::int64_t lo = 0, hi = count - 1;  // largest s with begin(s) <= t
    while (lo < hi) {
      const std::int64_t mid = (lo + hi + 1) / 2;
      if (begin(mid) <= t) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    return lo;
  }
  /// Element offset of (s, pos) in an x-like tensor; `first` is begin(s).
  __device__ __forceinline__ std::int64_t offset(std::int64_t s, std::int64_t first, std::int64_t pos, std::int64_t batch_stride,
                                                 std::int64_t seq_stride) const {
    return varlen() ? (first + pos) * seq_stride : s * batch_stride + pos * seq_stride;
  }
};

inline SeqView seq_view(const detail::Sequences& q, const detail::ConvShape& s) {
  return {q.cu_seqlens, q.cu_dtype, s.batch, s.seqlen};
}

/// Flat token count: B*T in batch mode, the packed total in varlen mode.
inline std::int64_t flat_rows(const detail::Sequences& q, const detail::ConvShape& s) {
  return q.varlen() ? s.seqlen : s.batch * s.seqlen;
}

/// exp(-z) as __expf(-z) computes it (the same product with log2(e), then the hardware 2^x), but
/// with the flush-to-zero form of ex2: without -ftz, ex2.approx.f32 compiles to a compare and two
/// predicated multiplies around MUFU.EX2 to produce subnormal results, 3 of the ~8 instructions
/// of a SiLU. Results differ only where exp(-z) < 2^-126, and there 1 + exp(-z) rounds to 1
/// either way, so silu_f and silu_grad_f give the same bits as with __expf.
__device__ __forceinline__ float exp_neg_ftz(float z) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(z * -1.44269504088896341f));
  return r;
}

// Fast-math SiLU: 2^x and an approximate divide (2 ulp) instead of the IEEE division and its
// slow path, which made the fused epilogue cost ~30% in these memory-bound kernels. For z very
// negative exp(-z) overflows to inf and the quotient is the correct limit 0; NaN stays NaN.
__device__ __forceinline__ float silu_f(float z) { return __fdividef(z, 1.0f + exp_neg_ftz(z)); }
// silu'(z) = s + z s (1 - s) with s = sigmoid(z): s (1 - s) as one fma (s - s * s) and the sum
// as another, 2 instructions after s where s * (1 + z * (1 - s)) took 3; with s (4) and the
// product by dy, 7 a SiLU backward element.
__device__ __forceinline__ float silu_grad_f(float z) {
  const float s = __fdividef(1.0f, 1.0f + exp_neg_ftz(z));
  return fmaf(z, fmaf(-s, s, s), s);
}

}  // namespace shortconv::cuda
