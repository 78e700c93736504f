// The CUDA side of src/autograd/kernels.hpp plus the runtime pieces the tape needs (stream-ordered
// memory, cuBLAS, events), behind plain C++ so that no CUDA header leaks into the rest. Defined in
// kernels_cuda.cu and cuda_runtime.cpp; builds without CUDA link no_cuda.cpp, whose functions
// throw Unsupported (a CUDA tape cannot be constructed there, so they are never reached).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels.hpp"

namespace shortconv::autograd::detail::cuda {

// ---- kernels (kernels_cuda.cu); same contracts as the dispatchers in kernels.hpp ----
void fill(const Exec& e, float* dst, std::int64_t n, float value);
void copy(const Exec& e, float* dst, const float* src, std::int64_t n, bool accumulate);
void add(const Exec& e, float* y, const float* a, const float* b, std::int64_t n);
void mul(const Exec& e, float* y, const float* a, const float* b, std::int64_t n);
void mul_backward(const Exec& e, float* dst, const float* dy, const float* b, std::int64_t n, bool accumulate);
void silu(const Exec& e, float* y, const float* x, std::int64_t n);
void silu_backward(const Exec& e, float* dst, const float* dy, const float* x, std::int64_t n, bool accumulate);
void broadcast_scalar(const Exec& e, float* dst, const float* g, float scale, std::int64_t n, bool accumulate);
void add_bias_rows(const Exec& e, float* y, const float* bias, std::int64_t rows, std::int64_t cols);
std::int64_t reduce_workspace(std::int64_t n, std::int64_t cols);
void sum(const Exec& e, float* out, const float* x, std::int64_t n, float scale, float* workspace);
void squared_error(const Exec& e, float* out, const float* a, const float* b, std::int64_t n, float scale,
                   float* workspace);
void squared_error_backward(const Exec& e, float* dst, const float* g, const float* a, const float* b, std::int64_t n,
                            float scale, bool accumulate);
void column_sum(const Exec& e, float* dst, const float* dy, std::int64_t rows, std::int64_t cols, bool accumulate,
                float* workspace);
void randn(const Exec& e, float* dst, std::int64_t n, std::uint64_t seed, float scale);
void sgd_step(const Exec& e, float* p, const float* grad, float* v, std::int64_t n, float lr, float momentum,
              float weight_decay);
void adamw_step(const Exec& e, float* p, const float* grad, float* m, float* v, std::int64_t n, float lr, float beta1,
                float beta2, float eps, float weight_decay, float bias_correction1, float bias_correction2_sqrt);

// ---- runtime (cuda_runtime.cpp) ----
/// cudaMallocAsync on `stream`; throws DeviceError when out of memory.
void* malloc_async(int device, void* stream, std::size_t nbytes);
/// cudaFreeAsync on `stream`; never throws.
void free_async(int device, void* stream, void* ptr) noexcept;
/// A cuBLAS handle bound to `stream`, with its own workspace (so cuBLAS never allocates behind the
/// tape's back, and calls can be graph-captured) and TF32 tensor-op math when `tf32`.
void* blas_create(int device, void* stream, bool tf32);
void blas_destroy(int device, void* blas) noexcept;
void gemm(const Exec& e, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
          const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc);
void* event_create(int device);
void event_destroy(int device, void* event) noexcept;
void event_record(int device, void* event, void* stream);
/// Milliseconds between two recorded events (both must have completed).
float event_elapsed_ms(void* start, void* stop);
/// Waits for all work on `device`.
void device_synchronize(int device);
/// Host <-> device copies in `stream`'s order; both wait for the copy (and the work before it).
void copy_from_host(int device, void* stream, void* dst, const void* src, std::size_t nbytes);
void copy_to_host(int device, void* stream, void* dst, const void* src, std::size_t nbytes);

}  // namespace shortconv::autograd::detail::cuda
