// CPU implementations of src/autograd/kernels.hpp (OpenMP loops over flat f32 arrays, cblas_sgemm)
// and the dispatch to the CUDA versions in kernels_cuda.hpp.
//
// Reductions split the input into fixed chunks (kChunk elements, or per column) whose partial
// sums are kept in double and added in chunk order, so the result depends on n only, not on the
// thread count.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <string>

#include "kernels.hpp"
#include "kernels_cuda.hpp"
#include "shortconv/autograd.hpp"
#include "shortconv/error.hpp"

namespace shortconv::autograd::detail {
namespace {

constexpr std::int64_t kParallelMin = std::int64_t{1} << 15;  // below this a loop runs on one thread
constexpr std::int64_t kChunk = std::int64_t{1} << 14;        // reduction chunk (elements)
constexpr std::int64_t kColumnBlock = 64;                     // columns a thread sums at once

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// dst (=|+=) f(i) over [0, n): the accumulate branch is hoisted out of the loop.
template <class F>
void write_or_add(float* dst, std::int64_t n, bool accumulate, F f) {
  if (accumulate) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (std::int64_t i = 0; i < n; ++i) dst[i] += f(i);
  } else {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (std::int64_t i = 0; i < n; ++i) dst[i] = f(i);
  }
}

template <class F>
void map(float* y, std::int64_t n, F f) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (std::int64_t i = 0; i < n; ++i) y[i] = f(i);
}

// scale * Σ f(i), chunked as described at the top; `partials` holds ceil(n / kChunk) doubles.
template <class F>
float chunked_sum(std::int64_t n, float scale, double* partials, F f) {
  const std::int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (std::int64_t c = 0; c < chunks; ++c) {
    const std::int64_t lo = c * kChunk, hi = std::min(n, lo + kChunk);
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (std::int64_t i = lo; i < hi; ++i) s += static_cast<double>(f(i));
    partials[c] = s;
  }
  double total = 0.0;
  for (std::int64_t c = 0; c < chunks; ++c) total += partials[c];
  return static_cast<float>(static_cast<double>(scale) * total);
}

constexpr std::int64_t kGemmRowsMin = 64;  // rows of C below which a GEMM is not split over threads

// Sets OpenBLAS to one thread for its lifetime (a no-op for other BLAS libraries, which run
// single-threaded inside an OpenMP region or are single-threaded anyway).
class BlasSingleThreaded {
 public:
  BlasSingleThreaded() {
#if defined(OPENBLAS_VERSION)
    if ((saved_ = openblas_get_num_threads()) != 1) openblas_set_num_threads(1);
#endif
  }
  ~BlasSingleThreaded() {
#if defined(OPENBLAS_VERSION)
    if (saved_ > 1) openblas_set_num_threads(saved_);
#endif
  }
  BlasSingleThreaded(const BlasSingleThreaded&) = delete;
  BlasSingleThreaded& operator=(const BlasSingleThreaded&) = delete;

 private:
  int saved_ = 1;
};

int blas_int(std::int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX)
    throw InvalidArgument(std::string("linear: ") + what + " = " + std::to_string(v) +
                          " exceeds the 32-bit BLAS integer range");
  return static_cast<int>(v);
}

}  // namespace

void fill(const Exec& e, float* dst, std::int64_t n, float value) {
  if (e.cuda()) return cuda::fill(e, dst, n, value);
  map(dst, n, [=](std::int64_t) { return value; });
}

void copy(const Exec& e, float* dst, const float* src, std::int64_t n, bool accumulate) {
  if (e.cuda()) return cuda::copy(e, dst, src, n, accumulate);
  write_or_add(dst, n, accumulate, [=](std::int64_t i) { return src[i]; });
}

void add(const Exec& e, float* y, const float* a, const float* b, std::int64_t n) {
  if (e.cuda()) return cuda::add(e, y, a, b, n);
  map(y, n, [=](std::int64_t i) { return a[i] + b[i]; });
}

void mul(const Exec& e, float* y, const float* a, const float* b, std::int64_t n) {
  if (e.cuda()) return cuda::mul(e, y, a, b, n);
  map(y, n, [=](std::int64_t i) { return a[i] * b[i]; });
}

void mul_backward(const Exec& e, float* dst, const float* dy, const float* b, std::int64_t n, bool accumulate) {
  if (e.cuda()) return cuda::mul_backward(e, dst, dy, b, n, accumulate);
  write_or_add(dst, n, accumulate, [=](std::int64_t i) { return dy[i] * b[i]; });
}

void silu(const Exec& e, float* y, const float* x, std::int64_t n) {
  if (e.cuda()) return cuda::silu(e, y, x, n);
  map(y, n, [=](std::int64_t i) { return x[i] * sigmoid(x[i]); });
}

void silu_backward(const Exec& e, float* dst, const float* dy, const float* x, std::int64_t n, bool accumulate) {
  if (e.cuda()) return cuda::silu_backward(e, dst, dy, x, n, accumulate);
  write_or_add(dst, n, accumulate, [=](std::int64_t i) {
    const float s = sigmoid(x[i]);
    return dy[i] * s * (1.0f + x[i] * (1.0f - s));
  });
}

void broadcast_scalar(const Exec& e, float* dst, const float* g, float scale, std::int64_t n, bool accumulate) {
  if (e.cuda()) return cuda::broadcast_scalar(e, dst, g, scale, n, accumulate);
  const float v = scale * g[0];
  write_or_add(dst, n, accumulate, [=](std::int64_t) { return v; });
}

void add_bias_rows(const Exec& e, float* y, const float* bias, std::int64_t rows, std::int64_t cols) {
  if (e.cuda()) return cuda::add_bias_rows(e, y, bias, rows, cols);
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
  for (std::int64_t r = 0; r < rows; ++r) {
    float* row = y + r * cols;
#pragma omp simd
    for (std::int64_t c = 0; c < cols; ++c) row[c] += bias[c];
  }
}

std::int64_t reduce_workspace(const Exec& e, std::int64_t n, std::int64_t cols) {
  if (e.cuda()) return cuda::reduce_workspace(n, cols);
  return 2 * ((n + kChunk - 1) / kChunk) + 2;  // doubles, as pairs of floats (the block is 64-byte aligned)
}

void sum(const Exec& e, float* out, const float* x, std::int64_t n, float scale, float* workspace) {
  if (e.cuda()) return cuda::sum(e, out, x, n, scale, workspace);
  out[0] = chunked_sum(n, scale, reinterpret_cast<double*>(workspace), [=](std::int64_t i) { return x[i]; });
}

void squared_error(const Exec& e, float* out, const float* a, const float* b, std::int64_t n, float scale,
                   float* workspace) {
  if (e.cuda()) return cuda::squared_error(e, out, a, b, n, scale, workspace);
  out[0] = chunked_sum(n, scale, reinterpret_cast<double*>(workspace), [=](std::int64_t i) {
    const float d = a[i] - b[i];
    return d * d;
  });
}

void squared_error_backward(const Exec& e, float* dst, const float* g, const float* a, const float* b, std::int64_t n,
                            float scale, bool accumulate) {
  if (e.cuda()) return cuda::squared_error_backward(e, dst, g, a, b, n, scale, accumulate);
  const float s = scale * g[0];
  write_or_add(dst, n, accumulate, [=](std::int64_t i) { return s * (a[i] - b[i]); });
}

void column_sum(const Exec& e, float* dst, const float* dy, std::int64_t rows, std::int64_t cols, bool accumulate,
                float* workspace) {
  if (e.cuda()) return cuda::column_sum(e, dst, dy, rows, cols, accumulate, workspace);
  const std::int64_t blocks = (cols + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
  for (std::int64_t blk = 0; blk < blocks; ++blk) {
    const std::int64_t c0 = blk * kColumnBlock, nc = std::min(kColumnBlock, cols - c0);
    double acc[kColumnBlock] = {};
    for (std::int64_t r = 0; r < rows; ++r) {
      const float* row = dy + r * cols + c0;
#pragma omp simd
      for (std::int64_t c = 0; c < nc; ++c) acc[c] += row[c];
    }
    for (std::int64_t c = 0; c < nc; ++c)
      dst[c0 + c] = static_cast<float>(acc[c]) + (accumulate ? dst[c0 + c] : 0.0f);
  }
}

void randn(const Exec& e, float* dst, std::int64_t n, std::uint64_t seed, float scale) {
  if (e.cuda()) return cuda::randn(e, dst, n, seed, scale);
  // Box-Muller gives two samples per hash: elements 2p and 2p+1 are the cosine and sine of pair p.
  const std::int64_t pairs = (n + 1) / 2;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (std::int64_t p = 0; p < pairs; ++p) {
    float u1, u2;
    uniform_pair(seed, static_cast<std::uint64_t>(p), u1, u2);
    const float r = scale * std::sqrt(-2.0f * std::log(u1)), a = 6.2831853071795865f * u2;
    dst[2 * p] = r * std::cos(a);
    if (2 * p + 1 < n) dst[2 * p + 1] = r * std::sin(a);
  }
}

void gemm(const Exec& e, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
          const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  if (e.cuda()) return cuda::gemm(e, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  const int mi = blas_int(m, "m"), ni = blas_int(n, "n"), ki = blas_int(k, "k"), ldai = blas_int(lda, "lda"),
            ldbi = blas_int(ldb, "ldb"), ldci = blas_int(ldc, "ldc");
  const auto ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
  // One thread pool: each OpenMP thread makes a single-threaded BLAS call on its block of C's rows.
  // Debian's OpenBLAS is the pthreads build, whose workers busy-wait after a call while the OpenMP
  // threads of the next op want the same cores (and OpenMP's spin the other way round); on the
  // 2-core dev VM that interplay cost half the step rate. OpenBLAS's thread count is therefore 1
  // for the duration of the call and restored afterwards.
  const int threads = m >= 2 * kGemmRowsMin ? std::min<int>(omp_get_max_threads(), static_cast<int>(m / kGemmRowsMin)) : 1;
  const BlasSingleThreaded single_threaded;
  if (threads <= 1) {
    cblas_sgemm(CblasRowMajor, ta, tb, mi, ni, ki, alpha, a, ldai, b, ldbi, beta, c, ldci);
    return;
  }
  const std::int64_t per = ((m + threads - 1) / threads + 15) / 16 * 16;  // rows per thread, whole 16-row tiles
#pragma omp parallel for schedule(static, 1) num_threads(threads)
  for (int t = 0; t < threads; ++t) {
    const std::int64_t r0 = t * per, r1 = std::min(m, r0 + per);
    if (r0 < r1)
      cblas_sgemm(CblasRowMajor, ta, tb, static_cast<int>(r1 - r0), ni, ki, alpha, trans_a ? a + r0 : a + r0 * lda,
                  ldai, b, ldbi, beta, c + r0 * ldc, ldci);
  }
}

void sgd_step(const Exec& e, float* p, const float* grad, float* v, std::int64_t n, float lr, float momentum,
              float weight_decay) {
  if (e.cuda()) return cuda::sgd_step(e, p, grad, v, n, lr, momentum, weight_decay);
  if (v != nullptr) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (std::int64_t i = 0; i < n; ++i) {
      v[i] = momentum * v[i] + (grad[i] + weight_decay * p[i]);
      p[i] -= lr * v[i];
    }
  } else {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (std::int64_t i = 0; i < n; ++i) p[i] -= lr * (grad[i] + weight_decay * p[i]);
  }
}

void adamw_step(const Exec& e, float* p, const float* grad, float* m, float* v, std::int64_t n, float lr, float beta1,
                float beta2, float eps, float weight_decay, float bias_correction1, float bias_correction2_sqrt) {
  if (e.cuda())
    return cuda::adamw_step(e, p, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, bias_correction1,
                            bias_correction2_sqrt);
  const float decay = 1.0f - lr * weight_decay, step_size = lr / bias_correction1;
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (std::int64_t i = 0; i < n; ++i) {
    const float g = grad[i];
    m[i] = beta1 * m[i] + (1.0f - beta1) * g;
    v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
    p[i] = p[i] * decay - step_size * m[i] / (std::sqrt(v[i]) / bias_correction2_sqrt + eps);
  }
}

}  // namespace shortconv::autograd::detail

namespace shortconv::autograd {

CpuBlasInfo cpu_blas_info() {
  CpuBlasInfo info;
#if defined(OPENBLAS_VERSION)
  info.name = "OpenBLAS";
  info.version = OPENBLAS_VERSION;
  while (!info.version.empty() && info.version.front() == ' ') info.version.erase(0, 1);
  while (!info.version.empty() && info.version.back() == ' ') info.version.pop_back();
  if (info.version.rfind("OpenBLAS ", 0) == 0) info.version.erase(0, 9);
  const char* core = openblas_get_corename();
  info.kernels = core != nullptr ? core : "";
#else
  info.name = "CBLAS";
#endif
  return info;
}

}  // namespace shortconv::autograd
