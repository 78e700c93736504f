// Error checking for CUDA runtime calls: every failure becomes a shortconv::DeviceError naming
// the call and the op. Host-only; included by .cpp and .cu files of the CUDA backend.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "shortconv/error.hpp"

namespace shortconv::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  throw DeviceError(std::string(what) + " failed: " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) +
                    ") at " + file + ":" + std::to_string(line));
}

/// Makes `device` current for the scope and restores the previous device on exit.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    cudaGetDevice(&previous_);
    if (previous_ != device) {
      const cudaError_t err = cudaSetDevice(device);
      if (err != cudaSuccess) throw_cuda_error(err, ("cudaSetDevice(" + std::to_string(device) + ")").c_str(), __FILE__, __LINE__);
    }
  }
  ~DeviceGuard() {
    int now = previous_;
    cudaGetDevice(&now);
    if (now != previous_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace shortconv::cuda

#define SHORTCONV_CUDA_CHECK(call)                                                  \
  do {                                                                              \
    const cudaError_t shortconv_err_ = (call);                                      \
    if (shortconv_err_ != cudaSuccess)                                              \
      ::shortconv::cuda::throw_cuda_error(shortconv_err_, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: launch-configuration errors surface here.
#define SHORTCONV_CUDA_CHECK_LAUNCH(name)                                           \
  do {                                                                              \
    const cudaError_t shortconv_err_ = cudaGetLastError();                          \
    if (shortconv_err_ != cudaSuccess)                                              \
      ::shortconv::cuda::throw_cuda_error(shortconv_err_, name, __FILE__, __LINE__); \
  } while (0)
