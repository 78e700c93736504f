// CUDA backward of the depthwise causal conv1d: dx, dweight, dbias and d_initial_state in one
// pass over x and dy, through the fused SiLU and with states and packed sequences.
//
// Kernel versions: bf16/f16 calls without SiLU, 17 <= K <= 112 and 16-byte aligned rows go to the
// tensor-core kernel (v11, conv1d_bwd_mma.cu); other calls with 16-byte aligned x / dy
// (pair-aligned dx) and K <= 64 to the pipelined shared-memory kernel (v8, conv1d_bwd_tiled.cu);
// the register-window kernels below (v1-v7) take the rest. All write per-tile partials that
// finish_backward reduces here, after d_initial_state.
//
//   g         = dy, or dy * silu'(z) with z recomputed from x in registers
//   dx[s,i,c] = sum_{k<K} w[c,k] * g[s, i+K-1-k, c]  (terms past the sequence end dropped)
//               + d_final_state[s, i-(len-(K-1)), c] for the last K-1 rows
//   dw[c,k]   = sum_{s,p} xe[s, p+k-(K-1), c] * g[s,p,c]      dbias[c] = sum g
//   d_initial_state[s,j,c] = sum_k w[c,k] * g[s, j-k, c] (+ d_final_state where it feeds back)
//
// Grid and block as in conv1d_fwd.cu: jobs are (flat token tile, channel tile), each thread owns
// kVec channels and a run of tokens, split at sequence ends. Walking a segment of its run, a
// thread keeps two register windows: the last kMaxK inputs (for z and dw) and the last kMaxK
// values of g (for dx). At position p it adds xe*g[p] into its dw taps and finishes dx[p-kMaxK+1],
// so it reads kMaxK-1 tokens of dy (and, with SiLU, of x) past its run.
//
// Determinism, no atomics: each thread's dw/dbias partial is summed over the block's block_y token
// runs in a fixed order through shared memory and written per tile into an f32 workspace
// [tiles][K+1][C]; a second kernel adds the tiles in a fixed order and writes dweight and dbias
// in the weight's dtype. Workspaces are stream-ordered (cudaMallocAsync), so the call stays
// asynchronous and graph-capturable.
// Widths above 16 take a generic kernel that reads every tap from memory; with SiLU it first
// writes g to an f32 workspace (one extra pass) instead of recomputing z for every tap.
#include "check.hpp"
#include "device/common.cuh"
#include "device/sequences.cuh"
#include "launch.hpp"
#include "tiled.hpp"

namespace shortconv::cuda {
namespace {

using detail::BackwardParams;

constexpr int kThreads = 128;

// The gradient source: dy (optionally through SiLU in registers) or a precomputed f32 g.
struct GradSource {
  const float* ws = nullptr;  // [rows][C] when not null
};

// Blocks per SM the register budget must allow.
template <int kMaxK, bool kDx, bool kDw>
constexpr int kMinBlocks = kMaxK == 0 || kMaxK >= 32 ? 2 : 3;

// kDx / kDw select what a launch computes: both (fused, K <= 16), or one of them (wider
// windows, two passes) so that only two of the four register windows exist at a time.
template <class T, int kMaxK, int kVec, bool kDx, bool kDw>
__global__ __launch_bounds__(kThreads, (kMinBlocks<kMaxK, kDx, kDw>)) void backward_kernel(
    BackwardParams p, Geometry g, SeqView q, bool packed_ok, float* __restrict__ partials, GradSource gs) {
  constexpr int kSlots = kMaxK > 0 && kDw ? kMaxK + 1 : 1;  // dw taps + dbias per thread
  __shared__ float red[kThreads * kVec * kSlots];
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ dy = static_cast<const T*>(p.dy);
  const T* __restrict__ init = static_cast<const T*>(p.initial_state.data);
  const T* __restrict__ dfs = static_cast<const T*>(p.d_final_state.data);
  T* __restrict__ dx = kDx ? static_cast<T*>(p.dx) : nullptr;
  const std::int64_t C = p.shape.channels;
  const int K = static_cast<int>(p.shape.width);
  const bool want_dw = kDw && partials != nullptr;
  const int tid = threadIdx.y * blockDim.x + threadIdx.x;

  for (std::int64_t job = blockIdx.x; job < g.jobs; job += gridDim.x) {
    const std::int64_t cb = job % g.cblocks;
    const std::int64_t tile = job / g.cblocks;
    const std::int64_t c0 = (cb * g.block_x + threadIdx.x) * kVec;
    const std::int64_t t_begin = (tile * g.block_y + threadIdx.y) * g.tokens_per_thread;
    const bool active = c0 < C && t_begin < g.rows;
    const std::int64_t t_end = min64(g.rows, t_begin + g.tokens_per_thread);
    const int n = active ? static_cast<int>(min64(kVec, C - c0)) : 0;
    const bool packed = packed_ok && n == kVec;
    float* out = want_dw ? partials + tile * (K + 1) * C : nullptr;  // this tile's [K+1][C]

    float bias[kVec];
#pragma unroll
    for (int i = 0; i < kVec; ++i)
      bias[i] = (p.silu && p.bias != nullptr && i < n) ? load_any(p.bias, p.bdtype, (c0 + i) * p.bias_stride) : 0.0f;

    if constexpr (kMaxK > 0) {
      constexpr int kXW = kDw ? kMaxK : 1;  // x window and dw partials exist only with kDw
      constexpr int kGW = kDx ? kMaxK : 1;  // g window exists only with kDx
      constexpr int kWW = kDx ? kMaxK : 1;  // weights: for dx, and for z (SiLU, fused only)
      float w[kWW][kVec];    // slot j = tap j - (kMaxK - K)
      float dw[kXW][kVec];   // per-slot dw partial
      float db[kVec];
#pragma unroll
      for (int j = 0; j < kMaxK; ++j) {
        const int k = j - (kMaxK - K);
#pragma unroll
        for (int i = 0; i < kVec; ++i) {
          if constexpr (kDx)
            w[j][i] = (k >= 0 && i < n) ? load_any(p.weight, p.wdtype, (c0 + i) * p.w_channel_stride + k * p.w_width_stride) : 0.0f;
          if constexpr (kDw) dw[j][i] = 0.0f;
        }
      }
#pragma unroll
      for (int i = 0; i < kVec; ++i) db[i] = 0.0f;

      std::int64_t s = active ? q.find(t_begin) : 0;
      for (std::int64_t t = t_begin; active && t < t_end;) {
        std::int64_t first = q.begin(s), last = q.begin(s + 1);
        while (last <= t) {
          ++s;
          first = last;
          last = q.begin(s + 1);
        }
        const std::int64_t seg_end = min64(t_end, last), len = last - first;
        const std::int64_t pa = t - first, pb = seg_end - first;  // segment positions [pa, pb)
        const T* xs = x + q.offset(s, first, 0, p.x_batch_stride, p.x_seq_stride) + c0;
        const T* dys = dy + q.offset(s, first, 0, p.dy_batch_stride, p.dy_seq_stride) + c0;
        T* dxs = dx != nullptr ? dx + q.offset(s, first, 0, p.dx_batch_stride, p.dx_seq_stride) + c0 : nullptr;
        const T* is = init != nullptr ? init + s * p.initial_state.batch_stride + c0 : nullptr;
        const T* fs = dfs != nullptr ? dfs + s * p.d_final_state.batch_stride + c0 : nullptr;
        const bool need_x = kDw && (want_dw || p.silu);

        // x stays packed in T (window and staged loads); g is f32 (computed).
        using Raw = Pack<T, kVec>;
        constexpr int kU = unroll_for<T, kVec, 32, 2, 8>();  // two tensors staged
        Raw xw[kXW];          // xw[j] = xe[pos - (kMaxK-1) + j]
        float gw[kGW][kVec];  // gw[j] = g[pos - (kMaxK-1) + j]
#pragma unroll
        for (int i = 0; i < kVec; ++i) {
#pragma unroll
          for (int j = 0; j < kXW; ++j) xw[j].v[i] = from_f32<T>(0.0f);
#pragma unroll
          for (int j = 0; j < kGW; ++j) gw[j][i] = 0.0f;
        }
        if constexpr (kDw) {
          if (need_x) {
#pragma unroll
          for (int j = 0; j < kMaxK - 1; ++j) {
            const std::int64_t pj = pa - (kMaxK - 1) + j;
            if (j < kMaxK - K) continue;
            if (pj >= 0) {
              load_raw<T, kVec>(xs + pj * p.x_seq_stride, packed, n, xw[j]);
            } else if (is != nullptr) {
              load_raw<T, kVec>(is + (K - 1 + pj) * p.initial_state.seq_stride, packed, n, xw[j]);
            }
          }
          }
        }
        const std::int64_t p_stop = dxs != nullptr ? pb + kMaxK - 1 : pb;
        for (std::int64_t p0 = pa; p0 < p_stop; p0 += kU) {
          // The group after next goes to L2 now; it lands while this one computes.
#pragma unroll
          for (int u = 0; u < kU; ++u) {
            const std::int64_t pf = p0 + 2 * kU + u;
            if (pf < p_stop && pf < len) {
              prefetch_l2(dys + pf * p.dy_seq_stride);
              if (kDw && (p.silu || (want_dw && pf < pb))) prefetch_l2(xs + pf * p.x_seq_stride);
            }
          }
          Raw dyv[kU], xv[kU];
#pragma unroll
          for (int u = 0; u < kU; ++u) {
            const std::int64_t pos = p0 + u;
            if (pos < p_stop && pos < len) {
              load_raw<T, kVec>(dys + pos * p.dy_seq_stride, packed, n, dyv[u]);
              if (kDw && (p.silu || (want_dw && pos < pb))) load_raw<T, kVec>(xs + pos * p.x_seq_stride, packed, n, xv[u]);
            }
          }
#pragma unroll
          for (int u = 0; u < kU; ++u) {
            const std::int64_t pos = p0 + u;
            if (pos >= p_stop) break;
            const bool have = pos < len;
            const std::int64_t lo_x = is != nullptr ? kMaxK - K : max64(kMaxK - K, kMaxK - 1 - pos);
            if constexpr (kDw) {
              if (have && (p.silu || (want_dw && pos < pb))) xw[kXW - 1] = xv[u];
            }
            float gv[kVec];
            bool silu_done = false;
            if constexpr (kDx && kDw) {  // SiLU runs fused only
              if (have && p.silu) {
                float z[kVec];
#pragma unroll
                for (int i = 0; i < kVec; ++i) z[i] = bias[i];
#pragma unroll
                for (int j = 0; j < kXW; ++j)
                  if (j >= lo_x) {
#pragma unroll
                    for (int i = 0; i < kVec; ++i) z[i] = fmaf(w[j][i], to_f32(xw[j].v[i]), z[i]);
                  }
#pragma unroll
                for (int i = 0; i < kVec; ++i) gv[i] = to_f32(dyv[u].v[i]) * silu_grad_f(z[i]);
                silu_done = true;
              }
            }
            if (!silu_done) {
#pragma unroll
              for (int i = 0; i < kVec; ++i) gv[i] = have ? to_f32(dyv[u].v[i]) : 0.0f;
            }
            if constexpr (kDx) {
#pragma unroll
              for (int i = 0; i < kVec; ++i) gw[kGW - 1][i] = gv[i];
            }
            if (kDw && want_dw && pos < pb) {
#pragma unroll
              for (int i = 0; i < kVec; ++i) db[i] += gv[i];
#pragma unroll
              for (int j = 0; j < kXW; ++j)
                if (j >= lo_x) {
#pragma unroll
                  for (int i = 0; i < kVec; ++i) dw[j][i] = fmaf(to_f32(xw[j].v[i]), gv[i], dw[j][i]);
                }
            }
            const std::int64_t di = pos - (kMaxK - 1);  // dx row finished at this step
            if (kDx && dxs != nullptr && di >= pa) {
              const std::int64_t lo = max64(kMaxK - K, pos - len + 1);  // g index < len
              float acc[kVec];
#pragma unroll
              for (int i = 0; i < kVec; ++i) acc[i] = 0.0f;
#pragma unroll
              for (int j = 0; j < kGW; ++j)
                if (j >= lo) {
#pragma unroll
                  for (int i = 0; i < kVec; ++i) acc[i] = fmaf(w[j][i], gw[kGW - 1 - j][i], acc[i]);
                }
              if (fs != nullptr && di >= len - (K - 1)) {
                float d[kVec];
                load_vec<T, kVec>(fs + (di - len + K - 1) * p.d_final_state.seq_stride, packed, n, d);
#pragma unroll
                for (int i = 0; i < kVec; ++i) acc[i] += d[i];
              }
              store_vec<T, kVec>(dxs + di * p.dx_seq_stride, packed, n, acc);
            }
#pragma unroll
            for (int i = 0; i < kVec; ++i) {
#pragma unroll
              for (int j = 0; j < kGW - 1; ++j) gw[j][i] = gw[j + 1][i];
            }
#pragma unroll
            for (int j = 0; j < kXW - 1; ++j) xw[j] = xw[j + 1];
          }
        }
        t = seg_end;
      }
      if constexpr (kDw) {
        if (want_dw) {
        // Block reduction over threadIdx.y in a fixed order; slot kMaxK is dbias.
#pragma unroll
        for (int j = 0; j < kSlots; ++j)
#pragma unroll
          for (int i = 0; i < kVec; ++i) red[(j * kThreads + tid) * kVec + i] = j < kXW && j < kSlots - 1 ? dw[j < kXW ? j : 0][i] : db[i];
        __syncthreads();
        if (threadIdx.y == 0 && c0 < C) {
          const int nn = static_cast<int>(min64(kVec, C - c0));
          for (int j = kMaxK - K; j <= kMaxK; ++j) {
            const int k = j < kMaxK ? j - (kMaxK - K) : K;  // row of the tile's [K+1][C]
            for (int i = 0; i < nn; ++i) {
              float sum = 0.0f;
              for (int yy = 0; yy < static_cast<int>(blockDim.y); ++yy)
                sum += red[(j * kThreads + yy * blockDim.x + threadIdx.x) * kVec + i];
              out[k * C + c0 + i] = sum;
            }
          }
        }
        __syncthreads();
      }
      }
    } else {
      // Generic width: every tap read from memory; g from dy or from the f32 workspace.
      auto load_g = [&](std::int64_t s, std::int64_t first, std::int64_t pos, float (&v)[kVec]) {
        if (gs.ws != nullptr) {
          load_vec<float, kVec>(gs.ws + (first + pos) * C + c0, false, n, v);
        } else {
          load_vec<T, kVec>(dy + q.offset(s, first, pos, p.dy_batch_stride, p.dy_seq_stride) + c0, packed, n, v);
        }
      };
      // dx, segment by segment.
      if (active && dx != nullptr) {
        std::int64_t s = q.find(t_begin);
        for (std::int64_t t = t_begin; t < t_end;) {
          std::int64_t first = q.begin(s), last = q.begin(s + 1);
          while (last <= t) {
            ++s;
            first = last;
            last = q.begin(s + 1);
          }
          const std::int64_t seg_end = min64(t_end, last), len = last - first;
          for (std::int64_t pos = t - first; pos < seg_end - first; ++pos) {
            float acc[kVec];
#pragma unroll
            for (int i = 0; i < kVec; ++i) acc[i] = 0.0f;
            for (int k = static_cast<int>(max64(0, pos + K - len)); k < K; ++k) {
              float gv[kVec];
              load_g(s, first, pos + K - 1 - k, gv);
#pragma unroll
              for (int i = 0; i < kVec; ++i)
                if (i < n) acc[i] = fmaf(load_any(p.weight, p.wdtype, (c0 + i) * p.w_channel_stride + k * p.w_width_stride), gv[i], acc[i]);
            }
            if (dfs != nullptr && pos >= len - (K - 1)) {
              float d[kVec];
              load_vec<T, kVec>(dfs + s * p.d_final_state.batch_stride + (pos - len + K - 1) * p.d_final_state.seq_stride + c0,
                                packed, n, d);
#pragma unroll
              for (int i = 0; i < kVec; ++i) acc[i] += d[i];
            }
            store_vec<T, kVec>(dx + q.offset(s, first, pos, p.dx_batch_stride, p.dx_seq_stride) + c0, packed, n, acc);
          }
          t = seg_end;
        }
      }
      if (want_dw) {
        for (int k = 0; k <= K; ++k) {  // k == K is dbias
          float sum[kVec];
#pragma unroll
          for (int i = 0; i < kVec; ++i) sum[i] = 0.0f;
          if (active) {
            std::int64_t s = q.find(t_begin);
            for (std::int64_t t = t_begin; t < t_end;) {
              std::int64_t first = q.begin(s), last = q.begin(s + 1);
              while (last <= t) {
                ++s;
                first = last;
                last = q.begin(s + 1);
              }
              const std::int64_t seg_end = min64(t_end, last);
              for (std::int64_t pos = t - first; pos < seg_end - first; ++pos) {
                float gv[kVec], xv[kVec];
                const std::int64_t src = pos + k - (K - 1);
                if (k < K && src < 0 && init == nullptr) continue;
                load_g(s, first, pos, gv);
                if (k == K) {
#pragma unroll
                  for (int i = 0; i < kVec; ++i) xv[i] = 1.0f;
                } else if (src >= 0) {
                  load_vec<T, kVec>(x + q.offset(s, first, src, p.x_batch_stride, p.x_seq_stride) + c0, packed, n, xv);
                } else {
                  load_vec<T, kVec>(init + s * p.initial_state.batch_stride + (K - 1 + src) * p.initial_state.seq_stride + c0,
                                    packed, n, xv);
                }
#pragma unroll
                for (int i = 0; i < kVec; ++i) sum[i] = fmaf(xv[i], gv[i], sum[i]);
              }
              t = seg_end;
            }
          }
#pragma unroll
          for (int i = 0; i < kVec; ++i) red[tid * kVec + i] = sum[i];
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

// z recomputed for one (sequence, position, channel) from x and the initial state.
template <class T>
__device__ float recompute_z(const BackwardParams& p, const SeqView& q, std::int64_t s, std::int64_t first, std::int64_t pos,
                             std::int64_t c) {
  const T* x = static_cast<const T*>(p.x);
  const T* init = static_cast<const T*>(p.initial_state.data);
  const int K = static_cast<int>(p.shape.width);
  float z = p.bias != nullptr ? load_any(p.bias, p.bdtype, c * p.bias_stride) : 0.0f;
  for (int k = 0; k < K; ++k) {
    const std::int64_t src = pos + k - (K - 1);
    float v;
    if (src >= 0) {
      v = to_f32(x[q.offset(s, first, src, p.x_batch_stride, p.x_seq_stride) + c]);
    } else if (init != nullptr) {
      v = to_f32(init[s * p.initial_state.batch_stride + (K - 1 + src) * p.initial_state.seq_stride + c]);
    } else {
      continue;
    }
    z = fmaf(load_any(p.weight, p.wdtype, c * p.w_channel_stride + k * p.w_width_stride), v, z);
  }
  return z;
}

template <class T>
__device__ float grad_at(const BackwardParams& p, const SeqView& q, std::int64_t s, std::int64_t first, std::int64_t pos,
                         std::int64_t c) {
  const float d = to_f32(static_cast<const T*>(p.dy)[q.offset(s, first, pos, p.dy_batch_stride, p.dy_seq_stride) + c]);
  return p.silu ? d * silu_grad_f(recompute_z<T>(p, q, s, first, pos, c)) : d;
}

// g = dy * silu'(z) into an f32 workspace [rows][C] (generic widths with SiLU).
template <class T>
__global__ __launch_bounds__(256) void silu_grad_kernel(BackwardParams p, SeqView q, std::int64_t rows, float* __restrict__ ws) {
  const std::int64_t C = p.shape.channels;
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < rows * C;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t t = idx / C, c = idx % C;
    const std::int64_t s = q.find(t), first = q.begin(s);
    ws[idx] = grad_at<T>(p, q, s, first, t - first, c);
  }
}

// d_initial_state[s,j,c] = sum_{k<=j, j-k<len} w[c,k] g[s,j-k,c] + d_final_state[s,j-len,c] (j >= len).
template <class T>
__global__ __launch_bounds__(256) void d_initial_state_kernel(BackwardParams p, SeqView q) {
  const std::int64_t C = p.shape.channels, K = p.shape.width, N = p.shape.batch;
  const T* dfs = static_cast<const T*>(p.d_final_state.data);
  T* out = static_cast<T*>(p.d_initial_state.data);
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < N * C;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t s = idx / C, c = idx % C;
    const std::int64_t first = q.begin(s), len = q.begin(s + 1) - first;
    for (std::int64_t j = 0; j < K - 1; ++j) {
      float acc = 0.0f;
      for (std::int64_t k = max64(0, j - len + 1); k <= j; ++k)
        acc = fmaf(load_any(p.weight, p.wdtype, c * p.w_channel_stride + k * p.w_width_stride), grad_at<T>(p, q, s, first, j - k, c), acc);
      if (dfs != nullptr && j >= len) acc += to_f32(dfs[s * p.d_final_state.batch_stride + (j - len) * p.d_final_state.seq_stride + c]);
      out[s * p.d_initial_state.batch_stride + j * p.d_initial_state.seq_stride + c] = from_f32<T>(acc);
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

unsigned grid_for(std::int64_t work, int sms) {
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min<std::int64_t>((work + 255) / 256, static_cast<std::int64_t>(sms) * 32)));
}

// d_initial_state, then the fixed-order reduction of the per-tile partials into dweight / dbias
// (and the workspace freed); shared by the register-window and the tiled kernels.
template <class T>
void finish_backward(const BackwardParams& p, const SeqView& q, float* partials, std::int64_t tiles) {
  const int sms = sm_count(p.device_index);
  const auto stream = static_cast<cudaStream_t>(p.stream);
  const bool want_dw = p.dweight != nullptr || p.dbias != nullptr;
  if (p.d_initial_state.data != nullptr) {
    d_initial_state_kernel<T><<<grid_for(p.shape.batch * p.shape.channels, sms), 256, 0, stream>>>(p, q);
    SHORTCONV_CUDA_CHECK_LAUNCH("conv1d_backward d_initial_state launch");
  }
  if (want_dw) {
    if (partials == nullptr) {
      // No tokens at all: the tiles are empty and the sums are zero; a one-tile zero workspace keeps one code path.
      SHORTCONV_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&partials),
                                           static_cast<std::size_t>(p.shape.width + 1) * p.shape.channels * sizeof(float), stream));
      SHORTCONV_CUDA_CHECK(cudaMemsetAsync(partials, 0, static_cast<std::size_t>(p.shape.width + 1) * p.shape.channels * sizeof(float), stream));
      tiles = 1;
    }
    const std::int64_t blocks = ((p.shape.width + 1) * p.shape.channels + kReduceX - 1) / kReduceX;
    const auto grid = static_cast<unsigned>(std::min<std::int64_t>(blocks, static_cast<std::int64_t>(sms) * 16));
    reduce_kernel<<<grid, dim3(kReduceX, kReduceY), 0, stream>>>(partials, tiles, p);
    SHORTCONV_CUDA_CHECK_LAUNCH("conv1d_backward reduce launch");
    SHORTCONV_CUDA_CHECK(cudaFreeAsync(partials, stream));
  } else if (partials != nullptr) {
    SHORTCONV_CUDA_CHECK(cudaFreeAsync(partials, stream));
  }
}

template <class T, int kMaxK, int kVec, bool kDx = true, bool kDw = true>
void launch(const BackwardParams& p, std::int64_t tokens_per_thread) {
  const int sms = sm_count(p.device_index);
  const SeqView q = seq_view(p.seqs, p.shape);
  const std::int64_t rows = flat_rows(p.seqs, p.shape);
  const std::int64_t mean_len = std::max<std::int64_t>(1, rows / std::max<std::int64_t>(1, p.shape.batch));
  const Geometry g = make_geometry(rows, p.shape.channels, mean_len, kVec, sizeof(T), tokens_per_thread, kThreads, sms);
  const std::uintptr_t align = sizeof(T) * kVec;
  auto aligned = [&](const void* ptr, std::int64_t s0, std::int64_t s1) {
    return ptr == nullptr || (reinterpret_cast<std::uintptr_t>(ptr) % align == 0 && s0 % kVec == 0 && s1 % kVec == 0);
  };
  const bool packed_ok = aligned(p.x, p.x_batch_stride, p.x_seq_stride) && aligned(p.dy, p.dy_batch_stride, p.dy_seq_stride) &&
                         aligned(p.dx, p.dx_batch_stride, p.dx_seq_stride) &&
                         aligned(p.initial_state.data, p.initial_state.batch_stride, p.initial_state.seq_stride) &&
                         aligned(p.d_final_state.data, p.d_final_state.batch_stride, p.d_final_state.seq_stride);
  const auto stream = static_cast<cudaStream_t>(p.stream);
  const bool want_dw = p.dweight != nullptr || p.dbias != nullptr;
  float* partials = nullptr;
  GradSource gs;
  if (rows > 0 && (want_dw || p.dx != nullptr)) {
    if (want_dw) {
      const std::size_t bytes = static_cast<std::size_t>(g.tiles) * static_cast<std::size_t>(p.shape.width + 1) *
                                static_cast<std::size_t>(p.shape.channels) * sizeof(float);
      SHORTCONV_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&partials), bytes, stream));
    }
    if (kMaxK == 0 && p.silu) {
      float* ws = nullptr;
      SHORTCONV_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&ws),
                                           static_cast<std::size_t>(rows) * static_cast<std::size_t>(p.shape.channels) * sizeof(float), stream));
      silu_grad_kernel<T><<<grid_for(rows * p.shape.channels, sms), 256, 0, stream>>>(p, q, rows, ws);
      SHORTCONV_CUDA_CHECK_LAUNCH("conv1d_backward silu gradient launch");
      gs.ws = ws;
    }
    backward_kernel<T, kMaxK, kVec, kDx, kDw><<<g.grid, dim3(g.block_x, g.block_y), 0, stream>>>(p, g, q, packed_ok, partials, gs);
    SHORTCONV_CUDA_CHECK_LAUNCH("conv1d_backward kernel launch");
    if (gs.ws != nullptr) SHORTCONV_CUDA_CHECK(cudaFreeAsync(const_cast<float*>(gs.ws), stream));
  }
  finish_backward<T>(p, q, partials, rows > 0 ? g.tiles : 1);
}

}  // namespace

template <DType kDtype>
void backward_fast(const BackwardParams& p) {
  using T = typename CudaType<kDtype>::type;
  constexpr int kPack = 16 / sizeof(T);
  DeviceGuard guard(p.device_index);
  const std::int64_t K = p.shape.width;
  {
    const SeqView q = seq_view(p.seqs, p.shape);
    float* partials = nullptr;
    std::int64_t runs = 0;
    const std::int64_t rows = flat_rows(p.seqs, p.shape);
    if ((p.dx != nullptr || p.dweight != nullptr || p.dbias != nullptr) &&
        (backward_mma<T>(p, q, rows, &partials, &runs) || backward_tiled<T>(p, q, rows, &partials, &runs))) {
      finish_backward<T>(p, q, partials, runs);
      return;
    }
  }
  // Up to K = 16 one fused pass; 32 and 64 without SiLU take two windowed passes (dx, then dw
  // and dbias), so that each keeps only two register windows; the rest the generic kernel.
  if (K <= 4) {
    launch<T, 4, 4>(p, 128);
  } else if (K <= 8) {
    launch<T, 8, 1>(p, 128);
  } else if (K <= 16) {
    launch<T, 16, 1>(p, 128);
  } else if (K <= 64 && !p.silu) {
    BackwardParams dx_pass = p, dw_pass = p;
    dx_pass.dweight = dx_pass.dbias = nullptr;
    dx_pass.d_initial_state = {};
    dw_pass.dx = nullptr;
    if (K <= 32) {
      if (dx_pass.dx != nullptr) launch<T, 32, 1, true, false>(dx_pass, 128);
      launch<T, 32, 1, false, true>(dw_pass, 128);
    } else {
      if (dx_pass.dx != nullptr) launch<T, 64, 1, true, false>(dx_pass, 128);
      launch<T, 64, 1, false, true>(dw_pass, 128);
    }
  } else {
    launch<T, 0, kPack>(p, 64);
  }
}

template void backward_fast<DType::f32>(const BackwardParams&);
template void backward_fast<DType::bf16>(const BackwardParams&);
template void backward_fast<DType::f16>(const BackwardParams&);

}  // namespace shortconv::cuda
