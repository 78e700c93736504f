// CUDA backward of the depthwise causal conv1d: dx, dweight and dbias in one pass over x and dy.
//
//   dx[b,i,c] = sum_{k<K} w[c,k] * dy[b, i+K-1-k, c]       (terms with i+K-1-k >= T dropped)
//   dw[c,k]   = sum_{b,t} x[b, t+k-(K-1), c] * dy[b,t,c]   (terms with t+k-(K-1) < 0 dropped)
//   dbias[c]  = sum_{b,t} dy[b,t,c]
//
// Grid and block as in conv1d_fwd.cu: jobs are (batch, token tile, channel tile), each thread owns
// kVec channels and a run of tokens. Walking its run, a thread keeps two register windows: the last
// kMaxK inputs (for dw) and the last kMaxK output gradients (for dx). At step t it adds x*dy[t]
// into its dw taps and finishes dx[t-kMaxK+1], so it reads kMaxK-1 tokens of dy past its run.
//
// Determinism, no atomics: each thread's dw/dbias partial is summed over the block's block_y token
// runs in a fixed order through shared memory and written per tile into an f32 workspace
// [tiles][K+1][C]; a second kernel adds the tiles in a fixed order and writes dweight and dbias
// in the weight's dtype. The workspace is stream-ordered (cudaMallocAsync), so the call stays
// asynchronous and graph-capturable.
#include "check.hpp"
#include "device/common.cuh"
#include "launch.hpp"

namespace shortconv::cuda {
namespace {

using detail::BackwardParams;

constexpr int kThreads = 128;
constexpr int kUnroll = 4;  // steps whose loads are issued together

template <class T, int kMaxK, int kVec>
__global__ __launch_bounds__(kThreads) void backward_kernel(BackwardParams p, Geometry g, bool packed_ok,
                                                            float* __restrict__ partials) {
  constexpr int kSlots = kMaxK > 0 ? kMaxK + 1 : 1;  // dw taps + dbias per thread
  __shared__ float red[kThreads * kVec * kSlots];
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ dy = static_cast<const T*>(p.dy);
  T* __restrict__ dx = static_cast<T*>(p.dx);
  const std::int64_t C = p.shape.channels, T_ = p.shape.seqlen;
  const int K = static_cast<int>(p.shape.width);
  const bool want_dw = partials != nullptr;
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;

  for (std::int64_t job = blockIdx.x; job < g.jobs; job += gridDim.x) {
    const std::int64_t cb = job % g.cblocks;
    const std::int64_t rest = job / g.cblocks;  // b * tiles_per_seq + tile
    const std::int64_t tile = rest % g.tiles_per_seq;
    const std::int64_t b = rest / g.tiles_per_seq;
    const std::int64_t c0 = (cb * g.block_x + threadIdx.x) * kVec;
    const std::int64_t t_begin = (tile * g.block_y + threadIdx.y) * g.tokens_per_thread;
    const bool active = c0 < C && t_begin < T_;
    const std::int64_t t_end = min64(T_, t_begin + g.tokens_per_thread);
    const int n = active ? static_cast<int>(min64(kVec, C - c0)) : 0;
    const bool packed = packed_ok && n == kVec;
    const T* xb = x + b * p.x_batch_stride + c0;
    const T* dyb = dy + b * p.dy_batch_stride + c0;
    T* dxb = dx != nullptr ? dx + b * p.dx_batch_stride + c0 : nullptr;
    float* out = want_dw ? partials + rest * (K + 1) * C : nullptr;  // this tile's [K+1][C]

    if constexpr (kMaxK > 0) {
      float w[kMaxK][kVec];    // slot j = tap j - (kMaxK - K)
      float dw[kMaxK][kVec];   // per-slot dw partial
      float db[kVec];
      float xw[kMaxK][kVec];   // xw[j] = x[t - (kMaxK-1) + j]
      float gw[kMaxK][kVec];   // gw[j] = dy[t - (kMaxK-1) + j]
#pragma unroll
      for (int j = 0; j < kMaxK; ++j) {
        const int k = j - (kMaxK - K);
#pragma unroll
        for (int i = 0; i < kVec; ++i) {
          w[j][i] = (k >= 0 && i < n) ? load_any(p.weight, p.wdtype, (c0 + i) * p.w_channel_stride + k * p.w_width_stride) : 0.0f;
          dw[j][i] = 0.0f;
          xw[j][i] = 0.0f;
          gw[j][i] = 0.0f;
        }
      }
#pragma unroll
      for (int i = 0; i < kVec; ++i) db[i] = 0.0f;

      if (active) {
        if (want_dw) {
#pragma unroll
          for (int j = 0; j < kMaxK - 1; ++j) {
            const std::int64_t t = t_begin - (kMaxK - 1) + j;
            if (t >= 0 && j >= kMaxK - K) load_vec<T, kVec>(xb + t * p.x_seq_stride, packed, n, xw[j]);
          }
        }
        const std::int64_t t_stop = dxb != nullptr ? t_end + kMaxK - 1 : t_end;
        // Groups of kUnroll steps: the group's dy (and x) rows are loaded before the first use.
        for (std::int64_t t0 = t_begin; t0 < t_stop; t0 += kUnroll) {
          float gs[kUnroll][kVec], xs[kUnroll][kVec];
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) {
            const std::int64_t t = t0 + u;
            if (t < t_stop && t < T_) {
              load_vec<T, kVec>(dyb + t * p.dy_seq_stride, packed, n, gs[u]);
            } else {
#pragma unroll
              for (int i = 0; i < kVec; ++i) gs[u][i] = 0.0f;
            }
            if (want_dw && t < t_end) load_vec<T, kVec>(xb + t * p.x_seq_stride, packed, n, xs[u]);
          }
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) {
            const std::int64_t t = t0 + u;
            if (t >= t_stop) break;
#pragma unroll
            for (int i = 0; i < kVec; ++i) gw[kMaxK - 1][i] = gs[u][i];
            if (want_dw && t < t_end) {
#pragma unroll
              for (int i = 0; i < kVec; ++i) xw[kMaxK - 1][i] = xs[u][i];
              const std::int64_t lo = max64(kMaxK - K, kMaxK - 1 - t);  // x index >= 0
#pragma unroll
              for (int i = 0; i < kVec; ++i) db[i] += gw[kMaxK - 1][i];
#pragma unroll
              for (int j = 0; j < kMaxK; ++j)
                if (j >= lo) {
#pragma unroll
                  for (int i = 0; i < kVec; ++i) dw[j][i] = fmaf(xw[j][i], gw[kMaxK - 1][i], dw[j][i]);
                }
            }
            const std::int64_t di = t - (kMaxK - 1);  // dx row finished at this step
            if (dxb != nullptr && di >= t_begin) {
              const std::int64_t lo = max64(kMaxK - K, t - T_ + 1);  // dy index < T
              float acc[kVec];
#pragma unroll
              for (int i = 0; i < kVec; ++i) acc[i] = 0.0f;
#pragma unroll
              for (int j = 0; j < kMaxK; ++j)
                if (j >= lo) {
#pragma unroll
                  for (int i = 0; i < kVec; ++i) acc[i] = fmaf(w[j][i], gw[kMaxK - 1 - j][i], acc[i]);
                }
              store_vec<T, kVec>(dxb + di * p.dx_seq_stride, packed, n, acc);
            }
#pragma unroll
            for (int j = 0; j < kMaxK - 1; ++j)
#pragma unroll
              for (int i = 0; i < kVec; ++i) {
                xw[j][i] = xw[j + 1][i];
                gw[j][i] = gw[j + 1][i];
              }
          }
        }
      }
      if (want_dw) {
        // Block reduction over threadIdx.y in a fixed order; slot kMaxK is dbias.
#pragma unroll
        for (int j = 0; j <= kMaxK; ++j)
#pragma unroll
          for (int i = 0; i < kVec; ++i) red[(j * kThreads + tid) * kVec + i] = j < kMaxK ? dw[j][i] : db[i];
        __syncthreads();
        if (threadIdx.y == 0 && c0 < C) {
          for (int j = kMaxK - K; j <= kMaxK; ++j) {
            const int k = j < kMaxK ? j - (kMaxK - K) : K;  // row of the tile's [K+1][C]
            for (int i = 0; i < n; ++i) {
              float s = 0.0f;
              for (int yy = 0; yy < static_cast<int>(blockDim.y); ++yy)
                s += red[(j * kThreads + yy * blockDim.x + threadIdx.x) * kVec + i];
              out[k * C + c0 + i] = s;
            }
          }
        }
        __syncthreads();
      }
    } else {
      // Generic width: every tap read from memory.
      if (active && dxb != nullptr) {
        for (std::int64_t i0 = t_begin; i0 < t_end; ++i0) {
          float acc[kVec];
#pragma unroll
          for (int i = 0; i < kVec; ++i) acc[i] = 0.0f;
          for (int k = static_cast<int>(max64(0, i0 + K - T_)); k < K; ++k) {
            float g[kVec];
            load_vec<T, kVec>(dyb + (i0 + K - 1 - k) * p.dy_seq_stride, packed, n, g);
#pragma unroll
            for (int i = 0; i < kVec; ++i)
              if (i < n) acc[i] = fmaf(load_any(p.weight, p.wdtype, (c0 + i) * p.w_channel_stride + k * p.w_width_stride), g[i], acc[i]);
          }
          store_vec<T, kVec>(dxb + i0 * p.dx_seq_stride, packed, n, acc);
        }
      }
      if (want_dw) {
        for (int k = 0; k <= K; ++k) {  // k == K is dbias
          float s[kVec];
#pragma unroll
          for (int i = 0; i < kVec; ++i) s[i] = 0.0f;
          if (active) {
            const std::int64_t t0 = k < K ? max64(t_begin, K - 1 - k) : t_begin;
            for (std::int64_t t = t0; t < t_end; ++t) {
              float g[kVec], xv[kVec];
              load_vec<T, kVec>(dyb + t * p.dy_seq_stride, packed, n, g);
              if (k < K) {
                load_vec<T, kVec>(xb + (t + k - (K - 1)) * p.x_seq_stride, packed, n, xv);
              } else {
#pragma unroll
                for (int i = 0; i < kVec; ++i) xv[i] = 1.0f;
              }
#pragma unroll
              for (int i = 0; i < kVec; ++i) s[i] = fmaf(xv[i], g[i], s[i]);
            }
          }
#pragma unroll
          for (int i = 0; i < kVec; ++i) red[tid * kVec + i] = s[i];
          __syncthreads();
          if (threadIdx.y == 0 && c0 < C) {
            for (int i = 0; i < n; ++i) {
              float acc = 0.0f;
              for (int yy = 0; yy < static_cast<int>(blockDim.y); ++yy) acc += red[(yy * blockDim.x + threadIdx.x) * kVec + i];
              out[k * C + c0 + i] = acc;
            }
          }
          __syncthreads();
        }
      }
    }
  }
}

// Sums the per-tile partials [tiles][K+1][C] in a fixed order and writes dweight / dbias.
// Block: 32 channels x 8 tile groups; each thread adds tiles g, g+8, ... then the 8 group sums are
// added in order, so the result depends only on the shape.
constexpr int kReduceX = 32, kReduceY = 8;

__global__ __launch_bounds__(kReduceX* kReduceY) void reduce_kernel(const float* __restrict__ partials, std::int64_t tiles,
                                                                    BackwardParams p) {
  __shared__ float red[kReduceY][kReduceX];
  const std::int64_t C = p.shape.channels;
  const int K = static_cast<int>(p.shape.width);
  const std::int64_t rows = (K + 1) * C;  // flattened (k, c)
  const std::int64_t blocks = (rows + kReduceX - 1) / kReduceX;
  for (std::int64_t blk = blockIdx.x; blk < blocks; blk += gridDim.x) {
    const std::int64_t r = blk * kReduceX + threadIdx.x;
    float s = 0.0f;
    if (r < rows)
      for (std::int64_t tile = threadIdx.y; tile < tiles; tile += kReduceY) s += partials[tile * rows + r];
    red[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && r < rows) {
      float total = 0.0f;
      for (int yy = 0; yy < kReduceY; ++yy) total += red[yy][threadIdx.x];
      const std::int64_t k = r / C, c = r % C;
      if (k < K) {
        if (p.dweight != nullptr) store_any(p.dweight, p.wdtype, c * p.dw_channel_stride + k * p.dw_width_stride, total);
      } else if (p.dbias != nullptr) {
        store_any(p.dbias, p.wdtype, c * p.dbias_stride, total);
      }
    }
    __syncthreads();
  }
}

template <class T, int kMaxK, int kVec>
void launch(const BackwardParams& p, std::int64_t tokens_per_thread) {
  const int sms = sm_count(p.device_index);
  const Geometry g = make_geometry(p.shape, kVec, tokens_per_thread, kThreads, sms);
  const std::uintptr_t align = sizeof(T) * kVec;
  auto aligned = [&](const void* ptr, std::int64_t s0, std::int64_t s1) {
    return ptr == nullptr || (reinterpret_cast<std::uintptr_t>(ptr) % align == 0 && s0 % kVec == 0 && s1 % kVec == 0);
  };
  const bool packed_ok = aligned(p.x, p.x_batch_stride, p.x_seq_stride) && aligned(p.dy, p.dy_batch_stride, p.dy_seq_stride) &&
                         aligned(p.dx, p.dx_batch_stride, p.dx_seq_stride);
  const auto stream = static_cast<cudaStream_t>(p.stream);
  const bool want_dw = p.dweight != nullptr || p.dbias != nullptr;
  const std::int64_t tiles = p.shape.batch * g.tiles_per_seq;
  float* partials = nullptr;
  if (want_dw) {
    const std::size_t bytes = static_cast<std::size_t>(tiles) * static_cast<std::size_t>(p.shape.width + 1) *
                              static_cast<std::size_t>(p.shape.channels) * sizeof(float);
    SHORTCONV_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&partials), bytes, stream));
  }
  backward_kernel<T, kMaxK, kVec><<<g.grid, dim3(g.block_x, g.block_y), 0, stream>>>(p, g, packed_ok, partials);
  SHORTCONV_CUDA_CHECK_LAUNCH("conv1d_backward kernel launch");
  if (want_dw) {
    const std::int64_t blocks = ((p.shape.width + 1) * p.shape.channels + kReduceX - 1) / kReduceX;
    const auto grid = static_cast<unsigned>(std::min<std::int64_t>(blocks, static_cast<std::int64_t>(sms) * 16));
    reduce_kernel<<<grid, dim3(kReduceX, kReduceY), 0, stream>>>(partials, tiles, p);
    SHORTCONV_CUDA_CHECK_LAUNCH("conv1d_backward reduce launch");
    SHORTCONV_CUDA_CHECK(cudaFreeAsync(partials, stream));
  }
}

}  // namespace

template <DType kDtype>
void backward_fast(const BackwardParams& p) {
  using T = typename CudaType<kDtype>::type;
  constexpr int kPack = 16 / sizeof(T);
  DeviceGuard guard(p.device_index);
  reject_features(p);
  const std::int64_t K = p.shape.width;
  if (K <= 4) {
    launch<T, 4, 4>(p, 128);
  } else if (K <= 8) {
    launch<T, 8, 2>(p, 128);
  } else if (K <= 16) {
    launch<T, 16, 1>(p, 128);
  } else {
    launch<T, 0, kPack>(p, 64);
  }
}

template void backward_fast<DType::f32>(const BackwardParams&);
template void backward_fast<DType::bf16>(const BackwardParams&);
template void backward_fast<DType::f16>(const BackwardParams&);

}  // namespace shortconv::cuda
