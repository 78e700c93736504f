// Stand-ins for src/cuda in builds without the CUDA backend: same API, no devices.
#include "cuda_runtime_api.hpp"
#include "registry.hpp"
#include "shortconv/error.hpp"

namespace shortconv::cuda {
namespace {
[[noreturn]] void no_cuda(const char* what) {
  throw Unsupported(std::string(what) + ": this build of shortconv has no CUDA backend (configure with SHORTCONV_CUDA=ON)");
}
}  // namespace

int device_count() noexcept { return 0; }
void* malloc_device(int, std::size_t) { no_cuda("allocate"); }
void free_device(int, void*) noexcept {}
void memcpy_to_device(int, void*, const void*, std::size_t) { no_cuda("copy to device"); }
void memcpy_to_host(int, void*, const void*, std::size_t) { no_cuda("copy to host"); }
void synchronize(int, void*) { no_cuda("synchronize"); }
void copy_to_host_on_stream(int, void*, void*, const void*, std::size_t) { no_cuda("copy to host"); }
void* create_stream(int) { no_cuda("create stream"); }
void destroy_stream(int, void*) noexcept {}
void register_kernels(detail::Registry&) {}

}  // namespace shortconv::cuda

namespace shortconv {
bool built_with_cuda() noexcept { return false; }
}  // namespace shortconv
