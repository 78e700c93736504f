// CUDA decode step: y = conv over (conv_state[slot] ++ x_new), then the slot keeps the last K-1
// inputs.
//
//   xe[i] = state[slot, i] for i < K-1, x[b, i-(K-1)] after;  y[b,t] = act(bias + sum_k w[k] xe[t+k])
//   new state[slot, j] = xe[T_new + j]
//
// One thread owns (batch row b, kVec channels) and does everything for them: it reads the state
// rows into a register window, slides x through it, writes y, then writes the window's tail back
// as the new state, so the in-place update needs no synchronisation. A block stages the weights
// of its 64 channels in shared memory once for all its rows. No host reads, no
// allocation: CUDA-graph safe. Padding rows (slot -1) write y = 0 and touch no state; a slot
// outside [-1, S) cannot be reported without a host sync, so that row's y becomes NaN (loud) and
// no state is touched. Summation order matches the forward kernel tap for tap, so decode equals
// the full forward bitwise.
#include <cmath>

#include "check.hpp"
#include "device/common.cuh"
#include "device/sequences.cuh"
#include "launch.hpp"

namespace shortconv::cuda {
namespace {

using detail::UpdateParams;

constexpr int kThreads = 128;
constexpr int kTileC = 64;  // channels of a block: their weights are staged once in shared memory

/// Slot of batch row b; the caller turns -1 (padding) and out-of-range slots into a y fill.
__device__ __forceinline__ std::int64_t slot_of(const UpdateParams& p, std::int64_t b) {
  return p.state_indices != nullptr ? load_index(p.state_indices, p.index_dtype, b * p.index_stride) : b;
}

// Windowed kernel (K <= kMaxK): a block owns 64 channels x a group of batch rows; a thread owns
// kVec channels of one row, so every row's chain (slot index, then state) runs in parallel.
template <class T, int kMaxK, int kVec>
__global__ __launch_bounds__(kThreads, kMaxK <= 4 ? 9 : 1) void update_kernel(UpdateParams p, bool packed_ok) {
  constexpr int kLanesC = kTileC / kVec;           // threads along the channels of the tile
  constexpr int kRowsBlock = kThreads / kLanesC;   // batch rows of a block
  __shared__ float wsm[kMaxK][kTileC];             // slot j = tap j - (kMaxK - K); masked slots unused
  __shared__ float bsm[kTileC];
  const std::int64_t B = p.shape.batch, Tn = p.shape.seqlen, C = p.shape.channels;
  const int K = static_cast<int>(p.shape.width);
  const T* __restrict__ x = static_cast<const T*>(p.x);
  T* __restrict__ y = static_cast<T*>(p.y);
  T* __restrict__ state = static_cast<T*>(p.state.data);
  const std::int64_t ctiles = (C + kTileC - 1) / kTileC, rtiles = (B + kRowsBlock - 1) / kRowsBlock;
  const int lc = static_cast<int>(threadIdx.x % kLanesC), lr = static_cast<int>(threadIdx.x / kLanesC);

  for (std::int64_t job = blockIdx.x; job < ctiles * rtiles; job += gridDim.x) {
    const std::int64_t ct0 = (job % ctiles) * kTileC, b = (job / ctiles) * kRowsBlock + lr;
    const std::int64_t c0 = ct0 + lc * kVec;
    const bool active = b < B && c0 < C;
    const int n = active ? static_cast<int>(min64(kVec, C - c0)) : 0;
    const bool packed = packed_ok && n == kVec;
    // The slot index, this thread's share of the weights and bias, then the state rows (once the
    // slot is in) are all issued before the first barrier, so a thread waits for max(weights,
    // slot -> state) rather than weights -> barrier -> slot -> state: H100, bf16 B=256 C=8192
    // K=4, 16.2 -> 15.5 us (72% of the floor). (In v8, with an f32 window, issuing the state
    // first measured 2x slower: its registers then held 6 blocks an SM; kept as T, 9.)
    const std::int64_t slot = active ? slot_of(p, b) : -1;
    // Raw bits, converted after the barrier, so these loads overlap each other and the state's.
    constexpr int kWeightsPerThread = (kMaxK * kTileC + kThreads - 1) / kThreads;
    unsigned wbits[kWeightsPerThread];
#pragma unroll
    for (int u = 0; u < kWeightsPerThread; ++u) {
      const int i = static_cast<int>(threadIdx.x) + u * kThreads;
      const std::int64_t c = ct0 + i / K;  // i walks the weight rows in memory order
      wbits[u] = i < K * kTileC && c < C ? load_bits(p.weight, p.wdtype, c * p.w_channel_stride + (i % K) * p.w_width_stride) : 0u;
    }
    const std::int64_t cb = ct0 + static_cast<int>(threadIdx.x);
    const bool has_bias = threadIdx.x < kTileC && p.bias != nullptr && cb < C;
    const unsigned bbits = has_bias ? load_bits(p.bias, p.bdtype, cb * p.bias_stride) : 0u;
    const bool valid = active && slot >= 0 && slot < p.num_slots;
    T* st = state + (valid ? slot : 0) * p.state.batch_stride + c0;
    // win[j] = xe[t + j - (kMaxK - K)], kept as T and converted where used: for 16-bit types that
    // halves the window's registers, and the decode step is bound by blocks an SM (registers)
    // waiting on loads, not by arithmetic.
    Pack<T, kVec> win[kMaxK];
#pragma unroll
    for (int j = 0; j < kMaxK; ++j)
#pragma unroll
      for (int i = 0; i < kVec; ++i) win[j].v[i] = from_f32<T>(0.0f);
    if (valid) {
#pragma unroll
      for (int j = 0; j < kMaxK - 1; ++j)
        if (j >= kMaxK - K) load_raw<T, kVec>(st + (j - (kMaxK - K)) * p.state.seq_stride, packed, n, win[j]);
    }
    __syncthreads();  // the previous job's readers are done with the weights
#pragma unroll
    for (int u = 0; u < kWeightsPerThread; ++u) {
      const int i = static_cast<int>(threadIdx.x) + u * kThreads;
      if (i < K * kTileC) wsm[i % K + (kMaxK - K)][i / K] = bits_as_f32(wbits[u], p.wdtype);  // 0 bits: 0.0f
    }
    if (threadIdx.x < kTileC) bsm[threadIdx.x] = has_bias ? bits_as_f32(bbits, p.bdtype) : 0.0f;
    __syncthreads();
    if (!active) continue;
    T* yb = y + b * p.y_batch_stride + c0;
    if (!valid) {
      const float fill = slot == -1 ? 0.0f : NAN;
      float v[kVec];
#pragma unroll
      for (int i = 0; i < kVec; ++i) v[i] = fill;
      for (std::int64_t t = 0; t < Tn; ++t) store_vec<T, kVec>(yb + t * p.y_seq_stride, packed, n, v);
      continue;
    }
    const T* xb = x + b * p.x_batch_stride + c0;
    for (std::int64_t t = 0; t < Tn; ++t) {
      load_raw<T, kVec>(xb + t * p.x_seq_stride, packed, n, win[kMaxK - 1]);
      float acc[kVec];
#pragma unroll
      for (int i = 0; i < kVec; ++i) acc[i] = bsm[lc * kVec + i];
#pragma unroll
      for (int j = 0; j < kMaxK; ++j)
        if (j >= kMaxK - K) {
#pragma unroll
          for (int i = 0; i < kVec; ++i) acc[i] = fmaf(wsm[j][lc * kVec + i], to_f32(win[j].v[i]), acc[i]);
        }
      if (p.silu) {
#pragma unroll
        for (int i = 0; i < kVec; ++i) acc[i] = silu_f(acc[i]);
      }
      store_vec<T, kVec>(yb + t * p.y_seq_stride, packed, n, acc);
#pragma unroll
      for (int j = 0; j < kMaxK - 1; ++j) win[j] = win[j + 1];
    }
    // After the last shift win[j] = xe[Tn + j - (kMaxK - K)] for j < kMaxK - 1: the new state.
#pragma unroll
    for (int j = 0; j < kMaxK - 1; ++j) {
      if (j < kMaxK - K) continue;
      T* sp = st + (j - (kMaxK - K)) * p.state.seq_stride;
      if (packed) {
        store_pack<T, kVec>(sp, win[j]);
      } else {
#pragma unroll
        for (int i = 0; i < kVec; ++i)
          if (i < n) sp[i] = win[j].v[i];
      }
    }
  }
}

// Generic kernel (any K): one thread owns (batch row, kVec channels) and reads every tap.
template <class T, int kVec>
__global__ __launch_bounds__(kThreads) void update_generic_kernel(UpdateParams p, bool packed_ok) {
  const std::int64_t B = p.shape.batch, Tn = p.shape.seqlen, C = p.shape.channels;
  const int K = static_cast<int>(p.shape.width);
  const std::int64_t cvecs = (C + kVec - 1) / kVec;
  const T* __restrict__ x = static_cast<const T*>(p.x);
  T* __restrict__ y = static_cast<T*>(p.y);
  T* __restrict__ state = static_cast<T*>(p.state.data);
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < B * cvecs;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t c0 = (idx % cvecs) * kVec, b = idx / cvecs;
    const int n = static_cast<int>(min64(kVec, C - c0));
    const bool packed = packed_ok && n == kVec;
    float bias[kVec];
#pragma unroll
    for (int i = 0; i < kVec; ++i) bias[i] = (p.bias != nullptr && i < n) ? load_any(p.bias, p.bdtype, (c0 + i) * p.bias_stride) : 0.0f;
    const std::int64_t slot = slot_of(p, b);
    T* yb = y + b * p.y_batch_stride + c0;
    if (slot < 0 || slot >= p.num_slots) {
      const float fill = slot == -1 ? 0.0f : NAN;
      float v[kVec];
#pragma unroll
      for (int i = 0; i < kVec; ++i) v[i] = fill;
      for (std::int64_t t = 0; t < Tn; ++t) store_vec<T, kVec>(yb + t * p.y_seq_stride, packed, n, v);
      continue;
    }
    const T* xb = x + b * p.x_batch_stride + c0;
    T* st = state + slot * p.state.batch_stride + c0;
    auto xe = [&](std::int64_t i, float (&v)[kVec]) {
      if (i < K - 1) {
        load_vec<T, kVec>(st + i * p.state.seq_stride, packed, n, v);
      } else {
        load_vec<T, kVec>(xb + (i - (K - 1)) * p.x_seq_stride, packed, n, v);
      }
    };
    for (std::int64_t t = 0; t < Tn; ++t) {
      float acc[kVec];
#pragma unroll
      for (int i = 0; i < kVec; ++i) acc[i] = bias[i];
      for (int k = 0; k < K; ++k) {
        float v[kVec];
        xe(t + k, v);
#pragma unroll
        for (int i = 0; i < kVec; ++i)
          if (i < n) acc[i] = fmaf(load_any(p.weight, p.wdtype, (c0 + i) * p.w_channel_stride + k * p.w_width_stride), v[i], acc[i]);
      }
      if (p.silu) {
#pragma unroll
        for (int i = 0; i < kVec; ++i) acc[i] = silu_f(acc[i]);
      }
      store_vec<T, kVec>(yb + t * p.y_seq_stride, packed, n, acc);
    }
    // Row j reads xe[Tn + j], a higher state row than any written so far, or x.
    for (int j = 0; j < K - 1; ++j) {
      float v[kVec];
      xe(Tn + j, v);
      store_vec<T, kVec>(st + j * p.state.seq_stride, packed, n, v);
    }
  }
}

template <class T, int kMaxK, int kVec>
void launch(const UpdateParams& p) {
  const std::uintptr_t align = sizeof(T) * kVec;
  auto aligned = [&](const void* ptr, std::int64_t s0, std::int64_t s1) {
    return reinterpret_cast<std::uintptr_t>(ptr) % align == 0 && s0 % kVec == 0 && s1 % kVec == 0;
  };
  const bool packed_ok = aligned(p.x, p.x_batch_stride, p.x_seq_stride) && aligned(p.y, p.y_batch_stride, p.y_seq_stride) &&
                         aligned(p.state.data, p.state.batch_stride, p.state.seq_stride);
  const auto stream = static_cast<cudaStream_t>(p.stream);
  const std::int64_t max_grid = static_cast<std::int64_t>(sm_count(p.device_index)) * 32;
  if constexpr (kMaxK > 0) {
    constexpr std::int64_t rows_block = kThreads / (kTileC / kVec);
    const std::int64_t jobs = (p.shape.channels + kTileC - 1) / kTileC * ((p.shape.batch + rows_block - 1) / rows_block);
    update_kernel<T, kMaxK, kVec><<<static_cast<unsigned>(std::max<std::int64_t>(1, std::min(jobs, max_grid))), kThreads, 0, stream>>>(p, packed_ok);
  } else {
    const std::int64_t work = p.shape.batch * ((p.shape.channels + kVec - 1) / kVec);
    update_generic_kernel<T, kVec><<<static_cast<unsigned>(std::max<std::int64_t>(1, std::min((work + kThreads - 1) / kThreads, max_grid))), kThreads, 0, stream>>>(p, packed_ok);
  }
  SHORTCONV_CUDA_CHECK_LAUNCH("conv1d_update kernel launch");
}

}  // namespace

template <DType kDtype>
void update_fast(const UpdateParams& p) {
  using T = typename CudaType<kDtype>::type;
  constexpr int kPack = 16 / sizeof(T);
  DeviceGuard guard(p.device_index);
  const std::int64_t K = p.shape.width;
  if (K <= 4) {
    launch<T, 4, kPack>(p);
  } else if (K <= 8) {
    launch<T, 8, 4>(p);
  } else if (K <= 16) {
    launch<T, 16, 2>(p);
  } else {
    launch<T, 0, kPack>(p);
  }
}

template void update_fast<DType::f32>(const UpdateParams&);
template void update_fast<DType::bf16>(const UpdateParams&);
template void update_fast<DType::f16>(const UpdateParams&);

}  // namespace shortconv::cuda
