// CUDA kernels of the autograd tape (contracts in src/autograd/kernels.hpp).
//
// Elementwise ops are grid-stride loops over flat f32 arrays: thread i of the grid handles
// elements i, i + stride, ... so any grid size covers any n; the grid is capped at kMaxBlocks.
// Reductions run in two launches with a geometry that depends on n only (never on the device):
// G = reduce_blocks(n) blocks each sum a grid-stride share in f32 and tree-reduce in shared memory
// to partials[G]; one block then tree-reduces the G partials. No atomics, so the result is bitwise
// reproducible. column_sum does the same per column: S row chunks give partials[S, cols], then
// one thread per column adds its S partials in order.
#include <cuda_runtime.h>

#include <algorithm>

#include "../cuda/check.hpp"
#include "kernels_cuda.hpp"

namespace shortconv::autograd::detail::cuda {
namespace {

constexpr int kThreads = 256;
constexpr std::int64_t kMaxBlocks = 4096;
constexpr int kReduceBlocksMax = 512;          // == kFinalThreads: one final block covers all partials
constexpr int kFinalThreads = 512;
constexpr std::int64_t kColumnChunkRows = 64;  // rows one column_sum thread adds in the first pass
constexpr std::int64_t kColumnChunksMax = 256;

unsigned blocks_for(std::int64_t n) {
  return static_cast<unsigned>(std::clamp<std::int64_t>((n + kThreads - 1) / kThreads, 1, kMaxBlocks));
}

int reduce_blocks(std::int64_t n) {
  return static_cast<int>(std::clamp<std::int64_t>((n + kThreads * 8 - 1) / (kThreads * 8), 1, kReduceBlocksMax));
}

std::int64_t column_chunks(std::int64_t rows) {
  return std::clamp<std::int64_t>((rows + kColumnChunkRows - 1) / kColumnChunkRows, 1, kColumnChunksMax);
}

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// dst (=|+=) f(i): every elementwise op is one instance of this kernel with a functor.
template <class F>
__global__ void __launch_bounds__(kThreads) map_kernel(float* __restrict__ dst, std::int64_t n, bool accumulate, F f) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float v = f(i);
    dst[i] = accumulate ? dst[i] + v : v;
  }
}

template <class F>
void launch_map(const Exec& e, const char* name, float* dst, std::int64_t n, bool accumulate, F f) {
  if (n <= 0) return;
  ::shortconv::cuda::DeviceGuard guard(e.device);
  map_kernel<<<blocks_for(n), kThreads, 0, static_cast<cudaStream_t>(e.stream)>>>(dst, n, accumulate, f);
  SHORTCONV_CUDA_CHECK_LAUNCH(name);
}

// Block-wide tree sum of `v` over kBlock threads (shared memory, fixed order); thread 0 gets it.
template <int kBlock>
__device__ float block_sum(float v) {
  __shared__ float s[kBlock];
  s[threadIdx.x] = v;
  __syncthreads();
#pragma unroll
  for (int half = kBlock / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) s[threadIdx.x] += s[threadIdx.x + half];
    __syncthreads();
  }
  return s[0];
}

template <class F>
__global__ void __launch_bounds__(kThreads) reduce_partial_kernel(float* __restrict__ partials, std::int64_t n, F f) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kThreads;
  float acc = 0.0f;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) acc += f(i);
  const float total = block_sum<kThreads>(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

__global__ void __launch_bounds__(kFinalThreads)
    reduce_final_kernel(float* __restrict__ out, const float* __restrict__ partials, int count, float scale) {
  const float total = block_sum<kFinalThreads>(static_cast<int>(threadIdx.x) < count ? partials[threadIdx.x] : 0.0f);
  if (threadIdx.x == 0) out[0] = scale * total;
}

template <class F>
void launch_reduce(const Exec& e, const char* name, float* out, std::int64_t n, float scale, float* workspace, F f) {
  ::shortconv::cuda::DeviceGuard guard(e.device);
  const auto stream = static_cast<cudaStream_t>(e.stream);
  const int g = reduce_blocks(n);
  reduce_partial_kernel<<<g, kThreads, 0, stream>>>(workspace, n, f);
  SHORTCONV_CUDA_CHECK_LAUNCH(name);
  reduce_final_kernel<<<1, kFinalThreads, 0, stream>>>(out, workspace, g, scale);
  SHORTCONV_CUDA_CHECK_LAUNCH(name);
}

// partials[s, c] = sum of dy[r, c] over the rows of chunk s.
__global__ void __launch_bounds__(kThreads) column_partial_kernel(float* __restrict__ partials, const float* __restrict__ dy,
                                                                 std::int64_t rows, std::int64_t cols, std::int64_t chunk_rows) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= cols) return;
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.y) * chunk_rows;
  const std::int64_t r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
  float acc = 0.0f;
  for (std::int64_t r = r0; r < r1; ++r) acc += dy[r * cols + c];
  partials[static_cast<std::int64_t>(blockIdx.y) * cols + c] = acc;
}

__global__ void __launch_bounds__(kThreads) column_final_kernel(float* __restrict__ dst, const float* __restrict__ partials,
                                                               std::int64_t chunks, std::int64_t cols, bool accumulate) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= cols) return;
  float acc = 0.0f;
  for (std::int64_t s = 0; s < chunks; ++s) acc += partials[s * cols + c];
  dst[c] = accumulate ? dst[c] + acc : acc;
}

__global__ void __launch_bounds__(kThreads) bias_rows_kernel(float* __restrict__ y, const float* __restrict__ bias,
                                                            std::int64_t n, std::int64_t cols) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    y[i] += bias[i % cols];
}

__global__ void __launch_bounds__(kThreads) sgd_kernel(float* __restrict__ p, const float* __restrict__ grad,
                                                      float* __restrict__ v, std::int64_t n, float lr, float momentum,
                                                      float weight_decay) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    float g = grad[i] + weight_decay * p[i];
    if (v != nullptr) {
      g = momentum * v[i] + g;
      v[i] = g;
    }
    p[i] -= lr * g;
  }
}

__global__ void __launch_bounds__(kThreads) adamw_kernel(float* __restrict__ p, const float* __restrict__ grad,
                                                        float* __restrict__ m, float* __restrict__ v, std::int64_t n,
                                                        float lr, float beta1, float beta2, float eps, float decay,
                                                        float step_size, float bias_correction2_sqrt) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float g = grad[i];
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step_size * mi / (sqrtf(vi) / bias_correction2_sqrt + eps);
  }
}

// Functors (device lambdas would need --extended-lambda for the whole library).
struct Constant {
  float v;
  __device__ float operator()(std::int64_t) const { return v; }
};
struct Load {
  const float* x;
  __device__ float operator()(std::int64_t i) const { return x[i]; }
};
struct Add {
  const float *a, *b;
  __device__ float operator()(std::int64_t i) const { return a[i] + b[i]; }
};
struct Mul {
  const float *a, *b;
  __device__ float operator()(std::int64_t i) const { return a[i] * b[i]; }
};
struct Silu {
  const float* x;
  __device__ float operator()(std::int64_t i) const { return x[i] * sigmoid(x[i]); }
};
struct SiluGrad {
  const float *dy, *x;
  __device__ float operator()(std::int64_t i) const {
    const float s = sigmoid(x[i]);
    return dy[i] * s * (1.0f + x[i] * (1.0f - s));
  }
};
struct ScaledScalar {
  const float* g;
  float scale;
  __device__ float operator()(std::int64_t) const { return scale * g[0]; }
};
struct SquaredDiff {
  const float *a, *b;
  __device__ float operator()(std::int64_t i) const {
    const float d = a[i] - b[i];
    return d * d;
  }
};
struct DiffGrad {
  const float *g, *a, *b;
  float scale;
  __device__ float operator()(std::int64_t i) const { return scale * g[0] * (a[i] - b[i]); }
};
struct Normal {
  std::uint64_t seed;
  float scale;
  __device__ float operator()(std::int64_t i) const {  // element i: cosine (even) or sine (odd) of pair i / 2
    float u1, u2;
    uniform_pair(seed, static_cast<std::uint64_t>(i >> 1), u1, u2);
    const float a = 6.2831853071795865f * u2;
    return scale * sqrtf(-2.0f * logf(u1)) * ((i & 1) != 0 ? sinf(a) : cosf(a));
  }
};

}  // namespace

void fill(const Exec& e, float* dst, std::int64_t n, float value) { launch_map(e, "fill", dst, n, false, Constant{value}); }

void copy(const Exec& e, float* dst, const float* src, std::int64_t n, bool accumulate) {
  launch_map(e, "copy", dst, n, accumulate, Load{src});
}

void add(const Exec& e, float* y, const float* a, const float* b, std::int64_t n) { launch_map(e, "add", y, n, false, Add{a, b}); }

void mul(const Exec& e, float* y, const float* a, const float* b, std::int64_t n) { launch_map(e, "mul", y, n, false, Mul{a, b}); }

void mul_backward(const Exec& e, float* dst, const float* dy, const float* b, std::int64_t n, bool accumulate) {
  launch_map(e, "mul_backward", dst, n, accumulate, Mul{dy, b});
}

void silu(const Exec& e, float* y, const float* x, std::int64_t n) { launch_map(e, "silu", y, n, false, Silu{x}); }

void silu_backward(const Exec& e, float* dst, const float* dy, const float* x, std::int64_t n, bool accumulate) {
  launch_map(e, "silu_backward", dst, n, accumulate, SiluGrad{dy, x});
}

void broadcast_scalar(const Exec& e, float* dst, const float* g, float scale, std::int64_t n, bool accumulate) {
  launch_map(e, "broadcast_scalar", dst, n, accumulate, ScaledScalar{g, scale});
}

void add_bias_rows(const Exec& e, float* y, const float* bias, std::int64_t rows, std::int64_t cols) {
  const std::int64_t n = rows * cols;
  if (n <= 0) return;
  ::shortconv::cuda::DeviceGuard guard(e.device);
  bias_rows_kernel<<<blocks_for(n), kThreads, 0, static_cast<cudaStream_t>(e.stream)>>>(y, bias, n, cols);
  SHORTCONV_CUDA_CHECK_LAUNCH("add_bias_rows");
}

std::int64_t reduce_workspace(std::int64_t n, std::int64_t cols) {
  // sum / squared_error: G partials; column_sum(rows = n, cols): S x cols partials.
  return std::max<std::int64_t>(reduce_blocks(n), column_chunks(n) * cols);
}

void sum(const Exec& e, float* out, const float* x, std::int64_t n, float scale, float* workspace) {
  launch_reduce(e, "sum", out, n, scale, workspace, Load{x});
}

void squared_error(const Exec& e, float* out, const float* a, const float* b, std::int64_t n, float scale,
                   float* workspace) {
  launch_reduce(e, "squared_error", out, n, scale, workspace, SquaredDiff{a, b});
}

void squared_error_backward(const Exec& e, float* dst, const float* g, const float* a, const float* b, std::int64_t n,
                            float scale, bool accumulate) {
  launch_map(e, "squared_error_backward", dst, n, accumulate, DiffGrad{g, a, b, scale});
}

void column_sum(const Exec& e, float* dst, const float* dy, std::int64_t rows, std::int64_t cols, bool accumulate,
                float* workspace) {
  ::shortconv::cuda::DeviceGuard guard(e.device);
  const auto stream = static_cast<cudaStream_t>(e.stream);
  const std::int64_t chunks = column_chunks(rows);
  const std::int64_t chunk_rows = (rows + chunks - 1) / chunks;
  const unsigned col_blocks = static_cast<unsigned>((cols + kThreads - 1) / kThreads);
  column_partial_kernel<<<dim3(col_blocks, static_cast<unsigned>(chunks)), kThreads, 0, stream>>>(workspace, dy, rows,
                                                                                                  cols, chunk_rows);
  SHORTCONV_CUDA_CHECK_LAUNCH("column_sum");
  column_final_kernel<<<col_blocks, kThreads, 0, stream>>>(dst, workspace, chunks, cols, accumulate);
  SHORTCONV_CUDA_CHECK_LAUNCH("column_sum");
}

void randn(const Exec& e, float* dst, std::int64_t n, std::uint64_t seed, float scale) {
  launch_map(e, "randn", dst, n, false, Normal{seed, scale});
}

void sgd_step(const Exec& e, float* p, const float* grad, float* v, std::int64_t n, float lr, float momentum,
              float weight_decay) {
  if (n <= 0) return;
  ::shortconv::cuda::DeviceGuard guard(e.device);
  sgd_kernel<<<blocks_for(n), kThreads, 0, static_cast<cudaStream_t>(e.stream)>>>(p, grad, v, n, lr, momentum,
                                                                                   weight_decay);
  SHORTCONV_CUDA_CHECK_LAUNCH("sgd_step");
}

void adamw_step(const Exec& e, float* p, const float* grad, float* m, float* v, std::int64_t n, float lr, float beta1,
                float beta2, float eps, float weight_decay, float bias_correction1, float bias_correction2_sqrt) {
  if (n <= 0) return;
  ::shortconv::cuda::DeviceGuard guard(e.device);
  adamw_kernel<<<blocks_for(n), kThreads, 0, static_cast<cudaStream_t>(e.stream)>>>(
      p, grad, m, v, n, lr, beta1, beta2, eps, 1.0f - lr * weight_decay, lr / bias_correction1, bias_correction2_sqrt);
  SHORTCONV_CUDA_CHECK_LAUNCH("adamw_step");
}

}  // namespace shortconv::autograd::detail::cuda
