// The small kernels behind the autograd tape: elementwise maps, deterministic reductions, the
// counter-based normal generator, optimizer updates and row-major GEMM. Each entry point takes an
// Exec (device, stream, BLAS handle) and dispatches to src/autograd/kernels_cpu.cpp (OpenMP loops,
// cblas) or src/autograd/kernels_cuda.cu + cuda_runtime.cpp (grid-stride kernels, cuBLAS).
//
// Conventions: f32, contiguous, n elements. `accumulate` selects dst += v (true) or dst = v.
// Reductions write one float to device memory (never read back on the host) and sum in a fixed
// order that depends only on n, so results are bitwise reproducible run to run (and on the CPU
// for any thread count). Scalars that arrive as gradients (`g`) are device pointers to one float.
#pragma once

#include <cstdint>

namespace shortconv::autograd::detail {

/// Where kernels run: the tape's device and stream, and its cuBLAS handle (null on the CPU). Plain
/// fields rather than shortconv::Device: this header is also compiled as C++17 by nvcc.
struct Exec {
  bool on_cuda = false;
  int device = 0;          // CUDA ordinal
  void* stream = nullptr;  // cudaStream_t
  void* blas = nullptr;    // cublasHandle_t
  bool cuda() const noexcept { return on_cuda; }
};

/// dst[i] = value.
void fill(const Exec& e, float* dst, std::int64_t n, float value);
/// dst (=|+=) src.
void copy(const Exec& e, float* dst, const float* src, std::int64_t n, bool accumulate);
/// y = a + b.
void add(const Exec& e, float* y, const float* a, const float* b, std::int64_t n);
/// y = a * b.
void mul(const Exec& e, float* y, const float* a, const float* b, std::int64_t n);
/// dst (=|+=) dy * b.
void mul_backward(const Exec& e, float* dst, const float* dy, const float* b, std::int64_t n, bool accumulate);
/// y = x * sigmoid(x).
void silu(const Exec& e, float* y, const float* x, std::int64_t n);
/// dst (=|+=) dy * sigmoid(x) * (1 + x * (1 - sigmoid(x))).
void silu_backward(const Exec& e, float* dst, const float* dy, const float* x, std::int64_t n, bool accumulate);
/// dst (=|+=) scale * g[0].
void broadcast_scalar(const Exec& e, float* dst, const float* g, float scale, std::int64_t n, bool accumulate);
/// y[r, :] += bias for r < rows (y [rows, cols]).
void add_bias_rows(const Exec& e, float* y, const float* bias, std::int64_t rows, std::int64_t cols);

/// Floats of scratch the reductions below need for n elements (rows for column_sum).
std::int64_t reduce_workspace(const Exec& e, std::int64_t n, std::int64_t cols = 1);
/// out[0] = scale * sum(x).
void sum(const Exec& e, float* out, const float* x, std::int64_t n, float scale, float* workspace);
/// out[0] = scale * sum((a - b)²).
void squared_error(const Exec& e, float* out, const float* a, const float* b, std::int64_t n, float scale,
                   float* workspace);
/// dst (=|+=) sign * scale * g[0] * (a - b): the gradient of scale·Σ(a-b)² is 2·scale·(a-b)
/// for a (sign +1) and its negative for b; the caller folds the 2 into `scale`.
void squared_error_backward(const Exec& e, float* dst, const float* g, const float* a, const float* b, std::int64_t n,
                            float scale, bool accumulate);
/// dst[c] (=|+=) sum_r dy[r, c] (dy [rows, cols]).
void column_sum(const Exec& e, float* dst, const float* dy, std::int64_t rows, std::int64_t cols, bool accumulate,
                float* workspace);

/// dst[i] = scale * N(0, 1) sample number i of stream `seed`: Box-Muller on a splitmix64 hash of
/// (seed, i / 2), the cosine for even i and the sine for odd i.
void randn(const Exec& e, float* dst, std::int64_t n, std::uint64_t seed, float scale);

/// Row-major C[m, n] = alpha · op(A) · op(B) + beta · C, op(A) [m, k], op(B) [k, n]; lda/ldb/ldc
/// are row strides of A, B, C as stored. beta = 0 ignores C's contents (NaN included).
void gemm(const Exec& e, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
          const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc);

/// SGD: g = grad + wd·p; v = momentum·v + g (when v != null); p -= lr·(v or g).
void sgd_step(const Exec& e, float* p, const float* grad, float* v, std::int64_t n, float lr, float momentum,
              float weight_decay);
/// AdamW (see shortconv/optim.hpp); bias_correction1 = 1 - β1^t, bias_correction2_sqrt = sqrt(1 - β2^t).
void adamw_step(const Exec& e, float* p, const float* grad, float* m, float* v, std::int64_t n, float lr, float beta1,
                float beta2, float eps, float weight_decay, float bias_correction1, float bias_correction2_sqrt);

// ---- shared element math (host and device) --------------------------------------------------

#if defined(__CUDACC__)
#define SHORTCONV_AG_HD __host__ __device__ __forceinline__
#else
#define SHORTCONV_AG_HD inline
#endif

/// splitmix64: a bijective 64-bit mix; successive counters give independent-looking outputs.
SHORTCONV_AG_HD std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/// Two uniforms from one hash of (seed, i): u1 in (0, 1] (safe for log), u2 in [0, 1), 24 bits each.
SHORTCONV_AG_HD void uniform_pair(std::uint64_t seed, std::uint64_t i, float& u1, float& u2) {
  const std::uint64_t h = splitmix64(splitmix64(seed) ^ (i * 0xd1342543de82ef95ull));
  u1 = (static_cast<float>(h >> 40) + 1.0f) * 0x1.0p-24f;
  u2 = static_cast<float>((h >> 16) & 0xffffffull) * 0x1.0p-24f;
}

}  // namespace shortconv::autograd::detail
