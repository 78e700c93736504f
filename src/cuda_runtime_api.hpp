// The small slice of the CUDA runtime the front end needs, behind a C++ interface, so that code
// outside src/cuda never includes CUDA headers. Builds without CUDA link src/no_cuda.cpp instead,
// whose functions report zero devices and throw Unsupported.
#pragma once

#include <cstddef>

namespace shortconv::cuda {

int device_count() noexcept;
void* malloc_device(int device, std::size_t nbytes);
void free_device(int device, void* ptr) noexcept;
void memcpy_to_device(int device, void* dst, const void* src, std::size_t nbytes);
void memcpy_to_host(int device, void* dst, const void* src, std::size_t nbytes);
void synchronize(int device, void* stream);
/// Copies device memory to the host in `stream`'s order and waits for it.
void copy_to_host_on_stream(int device, void* stream, void* dst, const void* src, std::size_t nbytes);
void* create_stream(int device);
void destroy_stream(int device, void* stream) noexcept;

}  // namespace shortconv::cuda
