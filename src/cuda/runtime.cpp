// The CUDA runtime behind src/cuda_runtime_api.hpp: devices, memory, copies and streams.
#include "../cuda_runtime_api.hpp"

#include <string>

#include "check.hpp"
#include "shortconv/version.hpp"

namespace shortconv {
bool built_with_cuda() noexcept { return true; }
}  // namespace shortconv

namespace shortconv::cuda {

int device_count() noexcept {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device / no driver" error
    return 0;
  }
  return n;
}

namespace {
void check_device(int device, const char* what) {
  const int n = device_count();
  if (device < 0 || device >= n)
    throw DeviceError(std::string(what) + ": cuda:" + std::to_string(device) + " is not available (" +
                      std::to_string(n) + " CUDA devices visible)");
}
}  // namespace

void* malloc_device(int device, std::size_t nbytes) {
  check_device(device, "allocate");
  DeviceGuard guard(device);
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, nbytes == 0 ? 1 : nbytes);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw DeviceError("cuda:" + std::to_string(device) + ": failed to allocate " + std::to_string(nbytes) +
                      " bytes: " + cudaGetErrorString(err));
  }
  return p;
}

void free_device(int device, void* ptr) noexcept {
  if (ptr == nullptr) return;
  int previous = 0;
  cudaGetDevice(&previous);
  cudaSetDevice(device);
  cudaFree(ptr);
  cudaSetDevice(previous);
}

void memcpy_to_device(int device, void* dst, const void* src, std::size_t nbytes) {
  check_device(device, "copy to device");
  DeviceGuard guard(device);
  SHORTCONV_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, cudaMemcpyHostToDevice));
  // From pageable memory cudaMemcpy may return before the DMA lands; work queued afterwards on a
  // non-blocking stream must see the data, so wait for it.
  SHORTCONV_CUDA_CHECK(cudaStreamSynchronize(nullptr));
}

void memcpy_to_host(int device, void* dst, const void* src, std::size_t nbytes) {
  check_device(device, "copy to host");
  DeviceGuard guard(device);
  SHORTCONV_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, cudaMemcpyDeviceToHost));
}

void synchronize(int device, void* stream) {
  check_device(device, "synchronize");
  DeviceGuard guard(device);
  SHORTCONV_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
}

void copy_to_host_on_stream(int device, void* stream, void* dst, const void* src, std::size_t nbytes) {
  check_device(device, "copy to host");
  DeviceGuard guard(device);
  const auto s = static_cast<cudaStream_t>(stream);
  SHORTCONV_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, s));
  SHORTCONV_CUDA_CHECK(cudaStreamSynchronize(s));
}

void* create_stream(int device) {
  check_device(device, "create stream");
  DeviceGuard guard(device);
  cudaStream_t s = nullptr;
  SHORTCONV_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return s;
}

void destroy_stream(int device, void* stream) noexcept {
  if (stream == nullptr) return;
  int previous = 0;
  cudaGetDevice(&previous);
  cudaSetDevice(device);
  cudaStreamDestroy(static_cast<cudaStream_t>(stream));
  cudaSetDevice(previous);
}

}  // namespace shortconv::cuda
