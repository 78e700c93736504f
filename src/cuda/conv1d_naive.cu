// Naive CUDA baseline kept for benchmarks (variant `naive`): one thread per output element, as in
// the original one-thread-per-output design. Forward and dx read every tap straight from memory;
// each dweight / dbias element is one thread looping over all B*T tokens in order.
#include "check.hpp"
#include "device/common.cuh"
#include "launch.hpp"

namespace shortconv::cuda {
namespace {

using detail::BackwardParams;
using detail::ForwardParams;

constexpr int kThreads = 256;

unsigned grid_for(std::int64_t n, int device) {
  return static_cast<unsigned>(std::min<std::int64_t>((n + kThreads - 1) / kThreads, static_cast<std::int64_t>(sm_count(device)) * 128));
}

template <class T>
__global__ __launch_bounds__(kThreads) void forward_naive_kernel(ForwardParams p) {
  const auto [B, T_, C, K] = p.shape;
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  const std::int64_t total = B * T_ * C;
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t c = idx % C, t = (idx / C) % T_, b = idx / (C * T_);
    float acc = p.bias != nullptr ? load_any(p.bias, p.bdtype, c * p.bias_stride) : 0.0f;
    for (std::int64_t k = 0; k < K; ++k) {
      const std::int64_t src = t + k - (K - 1);
      if (src >= 0)
        acc = fmaf(load_any(p.weight, p.wdtype, c * p.w_channel_stride + k * p.w_width_stride),
                   to_f32(x[b * p.x_batch_stride + src * p.x_seq_stride + c]), acc);
    }
    y[b * p.y_batch_stride + t * p.y_seq_stride + c] = from_f32<T>(acc);
  }
}

template <class T>
__global__ __launch_bounds__(kThreads) void dx_naive_kernel(BackwardParams p) {
  const auto [B, T_, C, K] = p.shape;
  const T* dy = static_cast<const T*>(p.dy);
  T* dx = static_cast<T*>(p.dx);
  const std::int64_t total = B * T_ * C;
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t c = idx % C, i = (idx / C) % T_, b = idx / (C * T_);
    float acc = 0.0f;
    for (std::int64_t k = 0; k < K; ++k) {
      const std::int64_t t = i + K - 1 - k;
      if (t < T_)
        acc = fmaf(load_any(p.weight, p.wdtype, c * p.w_channel_stride + k * p.w_width_stride),
                   to_f32(dy[b * p.dy_batch_stride + t * p.dy_seq_stride + c]), acc);
    }
    dx[b * p.dx_batch_stride + i * p.dx_seq_stride + c] = from_f32<T>(acc);
  }
}

template <class T>
__global__ __launch_bounds__(kThreads) void dw_naive_kernel(BackwardParams p) {
  const auto [B, T_, C, K] = p.shape;
  const T* x = static_cast<const T*>(p.x);
  const T* dy = static_cast<const T*>(p.dy);
  const std::int64_t total = (K + 1) * C;  // (k, c) with k == K for dbias
  for (std::int64_t idx = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t c = idx % C, k = idx / C;
    if ((k < K && p.dweight == nullptr) || (k == K && p.dbias == nullptr)) continue;
    float acc = 0.0f;
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < T_; ++t) {
        const float g = to_f32(dy[b * p.dy_batch_stride + t * p.dy_seq_stride + c]);
        if (k == K) {
          acc += g;
        } else if (const std::int64_t src = t + k - (K - 1); src >= 0) {
          acc = fmaf(to_f32(x[b * p.x_batch_stride + src * p.x_seq_stride + c]), g, acc);
        }
      }
    if (k < K) {
      store_any(p.dweight, p.wdtype, c * p.dw_channel_stride + k * p.dw_width_stride, acc);
    } else {
      store_any(p.dbias, p.wdtype, c * p.dbias_stride, acc);
    }
  }
}

}  // namespace

template <DType kDtype>
void forward_naive(const ForwardParams& p) {
  using T = typename CudaType<kDtype>::type;
  DeviceGuard guard(p.device_index);
  const std::int64_t total = p.shape.batch * p.shape.seqlen * p.shape.channels;
  forward_naive_kernel<T><<<grid_for(total, p.device_index), kThreads, 0, static_cast<cudaStream_t>(p.stream)>>>(p);
  SHORTCONV_CUDA_CHECK_LAUNCH("conv1d_forward naive launch");
}

template <DType kDtype>
void backward_naive(const BackwardParams& p) {
  using T = typename CudaType<kDtype>::type;
  DeviceGuard guard(p.device_index);
  const auto stream = static_cast<cudaStream_t>(p.stream);
  if (p.dx != nullptr) {
    const std::int64_t total = p.shape.batch * p.shape.seqlen * p.shape.channels;
    dx_naive_kernel<T><<<grid_for(total, p.device_index), kThreads, 0, stream>>>(p);
    SHORTCONV_CUDA_CHECK_LAUNCH("conv1d_backward naive dx launch");
  }
  if (p.dweight != nullptr || p.dbias != nullptr) {
    dw_naive_kernel<T><<<grid_for((p.shape.width + 1) * p.shape.channels, p.device_index), kThreads, 0, stream>>>(p);
    SHORTCONV_CUDA_CHECK_LAUNCH("conv1d_backward naive dw launch");
  }
}

#define SHORTCONV_INSTANTIATE(D)                                  \
  template void forward_naive<D>(const ForwardParams&);           \
  template void backward_naive<D>(const BackwardParams&);
SHORTCONV_INSTANTIATE(DType::f32)
SHORTCONV_INSTANTIATE(DType::bf16)
SHORTCONV_INSTANTIATE(DType::f16)
#undef SHORTCONV_INSTANTIATE

}  // namespace shortconv::cuda
