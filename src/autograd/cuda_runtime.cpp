// CUDA runtime pieces of the autograd tape: stream-ordered memory, cuBLAS GEMM, events. Host code
// only (no kernels), compiled when the CUDA backend is built.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <climits>
#include <string>

#include "../cuda/check.hpp"
#include "kernels_cuda.hpp"

namespace shortconv::autograd::detail::cuda {
namespace {

using ::shortconv::cuda::DeviceGuard;

// cuBLAS recommends 32 MiB of workspace on Hopper (4 MiB on older cards); giving it its own
// buffer keeps it from allocating inside a step or a graph capture.
constexpr std::size_t kBlasWorkspaceBytes = std::size_t{32} << 20;

struct BlasHandle {
  cublasHandle_t handle = nullptr;
  void* workspace = nullptr;
};

void check_blas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw DeviceError(std::string("cuBLAS ") + what + " failed: " + cublasGetStatusName(status) + " (" +
                      cublasGetStatusString(status) + ")");
}

int blas_int(std::int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX)
    throw InvalidArgument(std::string("linear: ") + what + " = " + std::to_string(v) +
                          " exceeds the 32-bit cuBLAS integer range");
  return static_cast<int>(v);
}

}  // namespace

void* malloc_async(int device, void* stream, std::size_t nbytes) {
  DeviceGuard guard(device);
  void* p = nullptr;
  const cudaError_t err = cudaMallocAsync(&p, nbytes, static_cast<cudaStream_t>(stream));
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw DeviceError("autograd: cuda:" + std::to_string(device) + ": failed to allocate " + std::to_string(nbytes) +
                      " bytes: " + cudaGetErrorString(err));
  }
  return p;
}

void free_async(int device, void* stream, void* ptr) noexcept {
  if (ptr == nullptr) return;
  int previous = 0;
  cudaGetDevice(&previous);
  cudaSetDevice(device);
  if (cudaFreeAsync(ptr, static_cast<cudaStream_t>(stream)) != cudaSuccess) cudaGetLastError();
  cudaSetDevice(previous);
}

void* blas_create(int device, void* stream, bool tf32) {
  DeviceGuard guard(device);
  auto* h = new BlasHandle;
  try {
    check_blas(cublasCreate(&h->handle), "cublasCreate");
    check_blas(cublasSetStream(h->handle, static_cast<cudaStream_t>(stream)), "cublasSetStream");
    SHORTCONV_CUDA_CHECK(cudaMalloc(&h->workspace, kBlasWorkspaceBytes));
    // After cublasSetStream, which resets the workspace to cuBLAS's default pool.
    check_blas(cublasSetWorkspace(h->handle, h->workspace, kBlasWorkspaceBytes), "cublasSetWorkspace");
    check_blas(cublasSetMathMode(h->handle, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH),
               "cublasSetMathMode");
  } catch (...) {
    blas_destroy(device, h);
    throw;
  }
  return h;
}

void blas_destroy(int device, void* blas) noexcept {
  auto* h = static_cast<BlasHandle*>(blas);
  if (h == nullptr) return;
  int previous = 0;
  cudaGetDevice(&previous);
  cudaSetDevice(device);
  if (h->handle != nullptr) cublasDestroy(h->handle);  // waits for the handle's work
  if (h->workspace != nullptr) cudaFree(h->workspace);
  cudaSetDevice(previous);
  delete h;
}

void gemm(const Exec& e, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
          const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  // Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: swap the operands and m, n.
  DeviceGuard guard(e.device);
  const auto* h = static_cast<const BlasHandle*>(e.blas);
  check_blas(cublasSgemm(h->handle, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                         blas_int(n, "n"), blas_int(m, "m"), blas_int(k, "k"), &alpha, b, blas_int(ldb, "ldb"), a,
                         blas_int(lda, "lda"), &beta, c, blas_int(ldc, "ldc")),
             "cublasSgemm");
}

void* event_create(int device) {
  DeviceGuard guard(device);
  cudaEvent_t ev = nullptr;
  SHORTCONV_CUDA_CHECK(cudaEventCreate(&ev));
  return ev;
}

void event_destroy(int device, void* event) noexcept {
  if (event == nullptr) return;
  int previous = 0;
  cudaGetDevice(&previous);
  cudaSetDevice(device);
  cudaEventDestroy(static_cast<cudaEvent_t>(event));
  cudaSetDevice(previous);
}

void event_record(int device, void* event, void* stream) {
  DeviceGuard guard(device);
  SHORTCONV_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream)));
}

float event_elapsed_ms(void* start, void* stop) {
  float ms = 0.0f;
  SHORTCONV_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(stop)));
  return ms;
}

void device_synchronize(int device) {
  DeviceGuard guard(device);
  SHORTCONV_CUDA_CHECK(cudaDeviceSynchronize());
}

void copy_from_host(int device, void* stream, void* dst, const void* src, std::size_t nbytes) {
  DeviceGuard guard(device);
  const auto s = static_cast<cudaStream_t>(stream);
  SHORTCONV_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, s));
  SHORTCONV_CUDA_CHECK(cudaStreamSynchronize(s));  // `src` is pageable host memory the caller may free
}

void copy_to_host(int device, void* stream, void* dst, const void* src, std::size_t nbytes) {
  DeviceGuard guard(device);
  const auto s = static_cast<cudaStream_t>(stream);
  SHORTCONV_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, s));
  SHORTCONV_CUDA_CHECK(cudaStreamSynchronize(s));
}

}  // namespace shortconv::autograd::detail::cuda
