// Device side of the bulk tensor copies (tensor_map.hpp has the host side): one thread hands the
// copy engine a whole tile (cp.async.bulk.tensor, compute capability 9.0), which lands in shared
// memory and completes on an mbarrier that the tile's threads wait on. Below sm_90 the bulk
// copies compile to nothing, and a kernel compiled for such a target must not ask for them
// (SHORTCONV_BULK_COPIES is 0 there) even on a card that has them: PTX for compute_80 run on an
// H100 would wait forever on a stage whose copy was never issued. The mbarrier operations need
// sm_80, as the tiled kernels' cp.async does.
#pragma once

#include <cuda.h>

#include <cstdint>

namespace shortconv::cuda::bulk {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define SHORTCONV_BULK_COPIES 1
#else
#define SHORTCONV_BULK_COPIES 0
#endif
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define SHORTCONV_MBARRIERS 1
#else
#define SHORTCONV_MBARRIERS 0
#endif

__device__ __forceinline__ unsigned smem_address(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }

/// Initialises an mbarrier for `count` arrivals a phase; one thread, then barrier_init_fence()
/// and a block barrier before any use.
__device__ __forceinline__ void barrier_init(std::uint64_t* bar, unsigned count) {
#if SHORTCONV_MBARRIERS
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_address(bar)), "r"(count) : "memory");
#endif
}
/// Makes the initialised barriers visible to the copy engine.
__device__ __forceinline__ void barrier_init_fence() {
#if SHORTCONV_BULK_COPIES
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
/// One arrival (a phase whose data came another way).
__device__ __forceinline__ void arrive(std::uint64_t* bar) {
#if SHORTCONV_MBARRIERS
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_address(bar)) : "memory");
#endif
}
/// One arrival that also expects `bytes` from bulk copies before the phase completes.
__device__ __forceinline__ void arrive_expect_bytes(std::uint64_t* bar, unsigned bytes) {
#if SHORTCONV_BULK_COPIES
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_address(bar)), "r"(bytes) : "memory");
#endif
}
/// Waits until the phase of parity `parity` has completed (the phase before a fresh barrier's
/// first one, parity 1, counts as complete).
__device__ __forceinline__ void wait(std::uint64_t* bar, unsigned parity) {
#if SHORTCONV_MBARRIERS
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "SHORTCONV_WAIT_%=:\n"
#if SHORTCONV_BULK_COPIES
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
#else
      "mbarrier.test_wait.parity.shared::cta.b64 done, [%0], %1;\n"
#endif
      "@!done bra SHORTCONV_WAIT_%=;\n"
      "}\n" ::"r"(smem_address(bar)),
      "r"(parity)
      : "memory");
#endif
}
/// Orders this thread's earlier shared-memory accesses (ordinary loads, cp.async) before the
/// copy engine's writes that follow.
__device__ __forceinline__ void fence_before_copy() {
#if SHORTCONV_BULK_COPIES
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
/// Copies the box at coordinates (c0, c1, c2) of `map` (a __grid_constant__ kernel argument) to
/// `smem` (128-byte aligned), completing `bar`'s expected bytes. Elements outside the tensor are
/// zeros.
__device__ __forceinline__ void load_box(void* smem, const CUtensorMap* map, int c0, int c1, int c2, std::uint64_t* bar) {
#if SHORTCONV_BULK_COPIES
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(
          smem_address(smem)),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(smem_address(bar))
      : "memory");
#endif
}

}  // namespace shortconv::cuda::bulk
