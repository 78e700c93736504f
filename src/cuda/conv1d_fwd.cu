// CUDA forward of the depthwise causal conv1d.
//
//   y[b,t,c] = bias[c] + sum_{k<K} w[c,k] * x[b, t+k-(K-1), c]     (terms with t+k-(K-1) < 0 dropped)
//
// Layout: x and y are [B, T, C] with channel stride 1 and any token/batch stride (int64).
// Grid: one job per (batch, token tile, channel tile); blocks stride over the flattened int64 job
// index, so no grid dimension limit applies. Block: block_x threads along channels (each owning
// kVec consecutive channels, one packed 16-byte access where alignment allows) by block_y along
// tokens (each owning a run of tokens_per_thread tokens).
// Each thread walks its run in order, keeping the last kMaxK inputs in a register window, so every
// x element is read once from memory plus a (kMaxK-1)-token halo at the start of the run.
// Widths are bucketed: K <= 4, 8, 16 use a window of kMaxK slots with the first kMaxK-K taps
// masked off (masked, not multiplied by zero, so a NaN outside the formula cannot leak in).
// Wider K takes the generic kernel (kMaxK = 0), which reads every tap from memory (L1/L2 hits).
#include "check.hpp"
#include "device/common.cuh"
#include "launch.hpp"

namespace shortconv::cuda {
namespace {

using detail::ForwardParams;

constexpr int kThreads = 128;
constexpr int kUnroll = 4;  // tokens whose loads are issued together

template <class T, int kMaxK, int kVec>
__global__ __launch_bounds__(kThreads) void forward_kernel(ForwardParams p, Geometry g, bool packed_ok) {
  const T* __restrict__ x = static_cast<const T*>(p.x);
  T* __restrict__ y = static_cast<T*>(p.y);
  const std::int64_t C = p.shape.channels, T_ = p.shape.seqlen;
  const int K = static_cast<int>(p.shape.width);

  for (std::int64_t job = blockIdx.x; job < g.jobs; job += gridDim.x) {
    const std::int64_t cb = job % g.cblocks;
    const std::int64_t rest = job / g.cblocks;
    const std::int64_t tile = rest % g.tiles_per_seq;
    const std::int64_t b = rest / g.tiles_per_seq;
    const std::int64_t c0 = (cb * g.block_x + threadIdx.x) * kVec;                    // first channel
    const std::int64_t t_begin = (tile * g.block_y + threadIdx.y) * g.tokens_per_thread;  // first token
    if (c0 >= C || t_begin >= T_) continue;
    const std::int64_t t_end = min64(T_, t_begin + g.tokens_per_thread);
    const int n = static_cast<int>(min64(kVec, C - c0));
    const bool packed = packed_ok && n == kVec;
    const T* xb = x + b * p.x_batch_stride + c0;  // x[b, 0, c0]
    T* yb = y + b * p.y_batch_stride + c0;

    float bias[kVec];
#pragma unroll
    for (int i = 0; i < kVec; ++i) bias[i] = (p.bias != nullptr && i < n) ? load_any(p.bias, p.bdtype, (c0 + i) * p.bias_stride) : 0.0f;

    if constexpr (kMaxK > 0) {
      // w[j] is tap j - (kMaxK - K) of the real weight; slots j < kMaxK - K are masked.
      float w[kMaxK][kVec];
      float win[kMaxK][kVec];  // win[j] = x[t - (kMaxK-1) + j]
#pragma unroll
      for (int j = 0; j < kMaxK; ++j) {
        const int k = j - (kMaxK - K);
#pragma unroll
        for (int i = 0; i < kVec; ++i)
          w[j][i] = (k >= 0 && i < n) ? load_any(p.weight, p.wdtype, (c0 + i) * p.w_channel_stride + k * p.w_width_stride) : 0.0f;
      }
#pragma unroll
      for (int j = 0; j < kMaxK - 1; ++j) {
        const std::int64_t t = t_begin - (kMaxK - 1) + j;
        if (t >= 0 && j >= kMaxK - K) {
          load_vec<T, kVec>(xb + t * p.x_seq_stride, packed, n, win[j]);
        } else {
#pragma unroll
          for (int i = 0; i < kVec; ++i) win[j][i] = 0.0f;
        }
      }
      // Groups of kUnroll tokens: all loads of a group are issued before the first use, so each
      // thread keeps several 16-byte requests in flight.
      for (std::int64_t t0 = t_begin; t0 < t_end; t0 += kUnroll) {
        float xs[kUnroll][kVec];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u)
          if (t0 + u < t_end) load_vec<T, kVec>(xb + (t0 + u) * p.x_seq_stride, packed, n, xs[u]);
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const std::int64_t t = t0 + u;
          if (t >= t_end) break;
#pragma unroll
          for (int i = 0; i < kVec; ++i) win[kMaxK - 1][i] = xs[u][i];
          // Taps below `lo` are outside the width or before t = 0.
          const std::int64_t lo = max64(kMaxK - K, kMaxK - 1 - t);
          float acc[kVec];
#pragma unroll
          for (int i = 0; i < kVec; ++i) acc[i] = bias[i];
#pragma unroll
          for (int j = 0; j < kMaxK; ++j)
            if (j >= lo) {
#pragma unroll
              for (int i = 0; i < kVec; ++i) acc[i] = fmaf(w[j][i], win[j][i], acc[i]);
            }
          store_vec<T, kVec>(yb + t * p.y_seq_stride, packed, n, acc);
#pragma unroll
          for (int j = 0; j < kMaxK - 1; ++j)
#pragma unroll
            for (int i = 0; i < kVec; ++i) win[j][i] = win[j + 1][i];
        }
      }
    } else {
      for (std::int64_t t = t_begin; t < t_end; ++t) {
        float acc[kVec];
#pragma unroll
        for (int i = 0; i < kVec; ++i) acc[i] = bias[i];
        for (int k = static_cast<int>(max64(0, K - 1 - t)); k < K; ++k) {
          float xv[kVec];
          load_vec<T, kVec>(xb + (t + k - (K - 1)) * p.x_seq_stride, packed, n, xv);
#pragma unroll
          for (int i = 0; i < kVec; ++i)
            if (i < n) acc[i] = fmaf(load_any(p.weight, p.wdtype, (c0 + i) * p.w_channel_stride + k * p.w_width_stride), xv[i], acc[i]);
        }
        store_vec<T, kVec>(yb + t * p.y_seq_stride, packed, n, acc);
      }
    }
  }
}

template <class T, int kMaxK, int kVec>
void launch(const ForwardParams& p, std::int64_t tokens_per_thread) {
  const Geometry g = make_geometry(p.shape, kVec, tokens_per_thread, kThreads, sm_count(p.device_index));
  const std::uintptr_t align = sizeof(T) * kVec;
  const bool packed_ok = reinterpret_cast<std::uintptr_t>(p.x) % align == 0 && reinterpret_cast<std::uintptr_t>(p.y) % align == 0 &&
                         p.x_seq_stride % kVec == 0 && p.x_batch_stride % kVec == 0 && p.y_seq_stride % kVec == 0 &&
                         p.y_batch_stride % kVec == 0;
  forward_kernel<T, kMaxK, kVec><<<g.grid, dim3(g.block_x, g.block_y), 0, static_cast<cudaStream_t>(p.stream)>>>(p, g, packed_ok);
  SHORTCONV_CUDA_CHECK_LAUNCH("conv1d_forward kernel launch");
}

}  // namespace

template <DType kDtype>
void forward_fast(const ForwardParams& p) {
  using T = typename CudaType<kDtype>::type;
  constexpr int kPack = 16 / sizeof(T);  // elements in a 16-byte access
  DeviceGuard guard(p.device_index);
  reject_features(p);
  const std::int64_t K = p.shape.width;
  if (K <= 4) {
    launch<T, 4, kPack>(p, 32);
  } else if (K <= 8) {
    launch<T, 8, 4>(p, 32);
  } else if (K <= 16) {
    launch<T, 16, 2>(p, 32);
  } else {
    launch<T, 0, kPack>(p, 16);
  }
}

template void forward_fast<DType::f32>(const ForwardParams&);
template void forward_fast<DType::bf16>(const ForwardParams&);
template void forward_fast<DType::f16>(const ForwardParams&);

}  // namespace shortconv::cuda
