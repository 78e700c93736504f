// CUDA forward of the depthwise causal conv1d, with the fused bias + SiLU epilogue, initial and
// final states, and packed variable-length batches.
//
// Kernel versions (bench/NOTES.md has each one's prediction and measurement): bf16/f16 calls with
// 16-byte aligned tensors, weights of x's dtype and 24 <= K <= 128 go to the tensor-core kernel
// (v9, conv1d_fwd_mma.cu); other calls with 16-byte aligned tensors and K <= 128 go to the
// pipelined shared-memory kernel (v8, conv1d_fwd_tiled.cu);
// the register-window kernels below (v1-v7) take the rest: unaligned views, odd strides, wider K.
// The final state is always written here, after the main kernel.
//
//   z[s,p,c] = bias[c] + sum_{k<K} w[c,k] * xe[s, p+k-(K-1), c]     y = z or silu(z)
//   xe = x extended before p = 0 by the initial state; without one those terms are absent.
//
// Layout: x and y are [B, T, C] (or packed [total, C]) with channel stride 1 and any token/batch
// stride (int64). Grid: the flat token axis of all sequences is cut into tiles; one job per
// (token tile, channel tile); blocks stride over the flat int64 job index, so no grid dimension
// limit applies. Block: block_x threads along channels (each owning kVec consecutive channels,
// one packed 16-byte access where alignment allows) by block_y along tokens (each owning a run of
// tokens_per_thread tokens, split where a sequence ends).
// Each thread walks its run in order, keeping the last kMaxK inputs in a register window, so every
// x element is read once from memory plus a (kMaxK-1)-token halo (x or the initial state) at the
// start of each segment. Loads of kUnroll tokens are issued together to keep requests in flight.
// Widths are bucketed: K <= 4, 8, 16 use a window of kMaxK slots with the first kMaxK-K taps
// masked off (masked, not multiplied by zero, so a NaN outside the formula cannot leak in).
// Wider K takes the generic kernel (kMaxK = 0), which reads every tap from memory (L1/L2 hits).
// final_state is written by a second kernel after every read of initial_state, so the two may
// be one buffer.
#include "check.hpp"
#include "device/common.cuh"
#include "device/sequences.cuh"
#include "launch.hpp"
#include "tiled.hpp"

namespace shortconv::cuda {
namespace {

using detail::ForwardParams;

constexpr int kThreads = 128;

// Blocks per SM the register budget must allow: enough warps to keep loads in flight.
template <int kMaxK, int kVec>
constexpr int kMinBlocks = kMaxK == 0 || kMaxK >= 32 ? 2 : kVec >= 8 ? 3 : 4;

template <class T, int kMaxK, int kVec>
__global__ __launch_bounds__(kThreads, (kMinBlocks<kMaxK, kVec>)) void forward_kernel(ForwardParams p, Geometry g, SeqView q, bool packed_ok) {
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ init = static_cast<const T*>(p.initial_state.data);
  T* __restrict__ y = static_cast<T*>(p.y);
  const std::int64_t C = p.shape.channels;
  const int K = static_cast<int>(p.shape.width);

  for (std::int64_t job = blockIdx.x; job < g.jobs; job += gridDim.x) {
    const std::int64_t cb = job % g.cblocks;
    const std::int64_t tile = job / g.cblocks;
    const std::int64_t c0 = (cb * g.block_x + threadIdx.x) * kVec;                        // first channel
    const std::int64_t t_begin = (tile * g.block_y + threadIdx.y) * g.tokens_per_thread;  // first flat token
    if (c0 >= C || t_begin >= g.rows) continue;
    const std::int64_t t_end = min64(g.rows, t_begin + g.tokens_per_thread);
    const int n = static_cast<int>(min64(kVec, C - c0));
    const bool packed = packed_ok && n == kVec;

    float bias[kVec];
#pragma unroll
    for (int i = 0; i < kVec; ++i)
      bias[i] = (p.bias != nullptr && i < n) ? load_any(p.bias, p.bdtype, (c0 + i) * p.bias_stride) : 0.0f;
    float w[kMaxK > 0 ? kMaxK : 1][kVec];  // slot j = tap j - (kMaxK - K)
    if constexpr (kMaxK > 0) {
#pragma unroll
      for (int j = 0; j < kMaxK; ++j) {
        const int k = j - (kMaxK - K);
#pragma unroll
        for (int i = 0; i < kVec; ++i)
          w[j][i] = (k >= 0 && i < n) ? load_any(p.weight, p.wdtype, (c0 + i) * p.w_channel_stride + k * p.w_width_stride) : 0.0f;
      }
    }

    std::int64_t s = q.find(t_begin);
    for (std::int64_t t = t_begin; t < t_end;) {
      std::int64_t first = q.begin(s), last = q.begin(s + 1);
      while (last <= t) {  // skip to the sequence holding t (past empty ones)
        ++s;
        first = last;
        last = q.begin(s + 1);
      }
      const std::int64_t seg_end = min64(t_end, last);
      const std::int64_t pos0 = t - first;
      const T* xs = x + q.offset(s, first, 0, p.x_batch_stride, p.x_seq_stride) + c0;  // x[s, 0, c0]
      T* ys = y + q.offset(s, first, 0, p.y_batch_stride, p.y_seq_stride) + c0;
      const T* is = init != nullptr ? init + s * p.initial_state.batch_stride + c0 : nullptr;  // init[s, 0, c0]

      if constexpr (kMaxK > 0) {
        // The window and the staged loads stay in T (packed); values convert to f32 at the FMA.
        using Raw = Pack<T, kVec>;
        constexpr int kU = unroll_for<T, kVec>();
        Raw win[kMaxK];  // win[j] = xe[pos - (kMaxK-1) + j]
#pragma unroll
        for (int j = 0; j < kMaxK - 1; ++j) {
          const std::int64_t pj = pos0 - (kMaxK - 1) + j;
          if (j >= kMaxK - K && pj >= 0) {
            load_raw<T, kVec>(xs + pj * p.x_seq_stride, packed, n, win[j]);
          } else if (j >= kMaxK - K && is != nullptr) {
            load_raw<T, kVec>(is + (K - 1 + pj) * p.initial_state.seq_stride, packed, n, win[j]);
          } else {
#pragma unroll
            for (int i = 0; i < kVec; ++i) win[j].v[i] = from_f32<T>(0.0f);
          }
        }
        const std::int64_t pos_end = pos0 + (seg_end - t);
        for (std::int64_t p0 = pos0; p0 < pos_end; p0 += kU) {
          // The group after next goes to L2 now; it lands while this one computes.
#pragma unroll
          for (int u = 0; u < kU; ++u)
            if (p0 + 2 * kU + u < pos_end) prefetch_l2(xs + (p0 + 2 * kU + u) * p.x_seq_stride);
          Raw xv[kU];
#pragma unroll
          for (int u = 0; u < kU; ++u)
            if (p0 + u < pos_end) load_raw<T, kVec>(xs + (p0 + u) * p.x_seq_stride, packed, n, xv[u]);
#pragma unroll
          for (int u = 0; u < kU; ++u) {
            const std::int64_t pos = p0 + u;
            if (pos >= pos_end) break;
            win[kMaxK - 1] = xv[u];
            // Taps below `lo` are outside the width, or before p = 0 without a state.
            const int lo = is != nullptr ? kMaxK - K : static_cast<int>(max64(kMaxK - K, kMaxK - 1 - pos));
            float acc[kVec];
#pragma unroll
            for (int i = 0; i < kVec; ++i) acc[i] = bias[i];
            if (lo == 0) {  // every slot holds an input of the formula: no predicates
#pragma unroll
              for (int j = 0; j < kMaxK; ++j)
#pragma unroll
                for (int i = 0; i < kVec; ++i) acc[i] = fmaf(w[j][i], to_f32(win[j].v[i]), acc[i]);
            } else {
#pragma unroll
              for (int j = 0; j < kMaxK; ++j)
                if (j >= lo) {
#pragma unroll
                  for (int i = 0; i < kVec; ++i) acc[i] = fmaf(w[j][i], to_f32(win[j].v[i]), acc[i]);
                }
            }
            if (p.silu) {
#pragma unroll
              for (int i = 0; i < kVec; ++i) acc[i] = silu_f(acc[i]);
            }
            store_vec<T, kVec>(ys + pos * p.y_seq_stride, packed, n, acc);
#pragma unroll
            for (int j = 0; j < kMaxK - 1; ++j) win[j] = win[j + 1];
          }
        }
      } else {
        for (std::int64_t pos = pos0; pos < pos0 + (seg_end - t); ++pos) {
          float acc[kVec];
#pragma unroll
          for (int i = 0; i < kVec; ++i) acc[i] = bias[i];
          const int k0 = is != nullptr ? 0 : static_cast<int>(max64(0, K - 1 - pos));
          for (int k = k0; k < K; ++k) {
            const std::int64_t src = pos + k - (K - 1);
            float xv[kVec];
            if (src >= 0) {
              load_vec<T, kVec>(xs + src * p.x_seq_stride, packed, n, xv);
            } else {
              load_vec<T, kVec>(is + (K - 1 + src) * p.initial_state.seq_stride, packed, n, xv);
            }
#pragma unroll
            for (int i = 0; i < kVec; ++i)
              if (i < n) acc[i] = fmaf(load_any(p.weight, p.wdtype, (c0 + i) * p.w_channel_stride + k * p.w_width_stride), xv[i], acc[i]);
          }
          if (p.silu) {
#pragma unroll
            for (int i = 0; i < kVec; ++i) acc[i] = silu_f(acc[i]);
          }
          store_vec<T, kVec>(ys + pos * p.y_seq_stride, packed, n, acc);
        }
      }
      t = seg_end;
    }
  }
}

// final_state[s][j] = xe[s, len-(K-1)+j]. One thread owns (s, channel) and walks j upwards, so an
// in-place state (final_state == initial_state) is only ever read at rows not yet written.
template <class T>
__global__ __launch_bounds__(256) void final_state_kernel(ForwardParams p, SeqView q) {
  const T* x = static_cast<const T*>(p.x);
  const T* init = static_cast<const T*>(p.initial_state.data);
  T* fin = static_cast<T*>(p.final_state.data);
  const std::int64_t C = p.shape.channels, K = p.shape.width, N = p.shape.batch;
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < N * C;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t s = idx / C, c = idx % C;
    const std::int64_t first = q.begin(s), len = q.begin(s + 1) - first;
    for (std::int64_t j = 0; j < K - 1; ++j) {
      const std::int64_t pos = len - (K - 1) + j;
      T v = from_f32<T>(0.0f);
      if (pos >= 0) {
        v = x[q.offset(s, first, pos, p.x_batch_stride, p.x_seq_stride) + c];
      } else if (init != nullptr) {
        v = init[s * p.initial_state.batch_stride + (K - 1 + pos) * p.initial_state.seq_stride + c];
      }
      fin[s * p.final_state.batch_stride + j * p.final_state.seq_stride + c] = v;
    }
  }
}

template <class T, int kMaxK, int kVec>
void launch(const ForwardParams& p, std::int64_t tokens_per_thread) {
  const SeqView q = seq_view(p.seqs, p.shape);
  const std::int64_t rows = flat_rows(p.seqs, p.shape);
  const std::int64_t mean_len = std::max<std::int64_t>(1, rows / std::max<std::int64_t>(1, p.shape.batch));
  const int sms = sm_count(p.device_index);
  const Geometry g = make_geometry(rows, p.shape.channels, mean_len, kVec, sizeof(T), tokens_per_thread, kThreads, sms);
  const std::uintptr_t align = sizeof(T) * kVec;
  auto aligned = [&](const void* ptr, std::int64_t s0, std::int64_t s1) {
    return ptr == nullptr || (reinterpret_cast<std::uintptr_t>(ptr) % align == 0 && s0 % kVec == 0 && s1 % kVec == 0);
  };
  const bool packed_ok = aligned(p.x, p.x_batch_stride, p.x_seq_stride) && aligned(p.y, p.y_batch_stride, p.y_seq_stride) &&
                         aligned(p.initial_state.data, p.initial_state.batch_stride, p.initial_state.seq_stride);
  const auto stream = static_cast<cudaStream_t>(p.stream);
  if (rows > 0 && !forward_mma<T>(p, q, rows) && !forward_tiled<T>(p, q, rows)) {
    forward_kernel<T, kMaxK, kVec><<<g.grid, dim3(g.block_x, g.block_y), 0, stream>>>(p, g, q, packed_ok);
    SHORTCONV_CUDA_CHECK_LAUNCH("conv1d_forward kernel launch");
  }
  if (p.final_state.data != nullptr) {
    const std::int64_t work = p.shape.batch * p.shape.channels;
    const auto grid = static_cast<unsigned>(std::min<std::int64_t>((work + 255) / 256, static_cast<std::int64_t>(sms) * 32));
    final_state_kernel<T><<<grid, 256, 0, stream>>>(p, q);
    SHORTCONV_CUDA_CHECK_LAUNCH("conv1d_forward final state launch");
  }
}

}  // namespace

template <DType kDtype>
void forward_fast(const ForwardParams& p) {
  using T = typename CudaType<kDtype>::type;
  constexpr int kPack = 16 / sizeof(T);  // elements in a 16-byte access
  DeviceGuard guard(p.device_index);
  const std::int64_t K = p.shape.width;
  // Channels a thread: 4 (8-byte bf16 / 16-byte f32 accesses) for small K, fewer as the register
  // window grows; the window is kMaxK x kVec floats plus as many weights.
  if (K <= 4) {
    launch<T, 4, kPack>(p, 32);  // 16-byte accesses: 8 bf16/f16 or 4 f32 channels
  } else if (K <= 8) {
    launch<T, 8, 2>(p, 32);
  } else if (K <= 16) {
    launch<T, 16, 1>(p, 32);
  } else if (K <= 32) {
    launch<T, 32, 1>(p, 32);
  } else if (K <= 64) {
    launch<T, 64, 1>(p, 32);
  } else {
    launch<T, 0, kPack>(p, 16);
  }
}

template void forward_fast<DType::f32>(const ForwardParams&);
template void forward_fast<DType::bf16>(const ForwardParams&);
template void forward_fast<DType::f16>(const ForwardParams&);

}  // namespace shortconv::cuda
