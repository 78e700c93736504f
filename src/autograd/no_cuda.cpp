// Stand-ins for the CUDA side of the autograd tape in builds without the CUDA backend. A CUDA tape
// cannot be constructed there (no device), so none of these is reached in practice.
#include <string>

#include "kernels_cuda.hpp"
#include "shortconv/error.hpp"

namespace shortconv::autograd::detail::cuda {
namespace {
[[noreturn]] void no_cuda(const char* what) {
  throw Unsupported(std::string("autograd ") + what + ": this build of shortconv has no CUDA backend");
}
}  // namespace

void fill(const Exec&, float*, std::int64_t, float) { no_cuda("fill"); }
void copy(const Exec&, float*, const float*, std::int64_t, bool) { no_cuda("copy"); }
void add(const Exec&, float*, const float*, const float*, std::int64_t) { no_cuda("add"); }
void mul(const Exec&, float*, const float*, const float*, std::int64_t) { no_cuda("mul"); }
void mul_backward(const Exec&, float*, const float*, const float*, std::int64_t, bool) { no_cuda("mul"); }
void silu(const Exec&, float*, const float*, std::int64_t) { no_cuda("silu"); }
void silu_backward(const Exec&, float*, const float*, const float*, std::int64_t, bool) { no_cuda("silu"); }
void broadcast_scalar(const Exec&, float*, const float*, float, std::int64_t, bool) { no_cuda("sum"); }
void add_bias_rows(const Exec&, float*, const float*, std::int64_t, std::int64_t) { no_cuda("linear"); }
std::int64_t reduce_workspace(std::int64_t, std::int64_t) { no_cuda("reduce"); }
void sum(const Exec&, float*, const float*, std::int64_t, float, float*) { no_cuda("sum"); }
void squared_error(const Exec&, float*, const float*, const float*, std::int64_t, float, float*) { no_cuda("mse_loss"); }
void squared_error_backward(const Exec&, float*, const float*, const float*, const float*, std::int64_t, float, bool) {
  no_cuda("mse_loss");
}
void column_sum(const Exec&, float*, const float*, std::int64_t, std::int64_t, bool, float*) { no_cuda("linear"); }
void randn(const Exec&, float*, std::int64_t, std::uint64_t, float) { no_cuda("randn"); }
void sgd_step(const Exec&, float*, const float*, float*, std::int64_t, float, float, float) { no_cuda("SGD"); }
void adamw_step(const Exec&, float*, const float*, float*, float*, std::int64_t, float, float, float, float, float, float,
                float) {
  no_cuda("AdamW");
}
void* malloc_async(int, void*, std::size_t) { no_cuda("allocate"); }
void free_async(int, void*, void*) noexcept {}
void* blas_create(int, void*, bool) { no_cuda("cuBLAS"); }
void blas_destroy(int, void*) noexcept {}
void gemm(const Exec&, bool, bool, std::int64_t, std::int64_t, std::int64_t, float, const float*, std::int64_t,
          const float*, std::int64_t, float, float*, std::int64_t) {
  no_cuda("linear");
}
void* event_create(int) { no_cuda("profile"); }
void event_destroy(int, void*) noexcept {}
void event_record(int, void*, void*) { no_cuda("profile"); }
float event_elapsed_ms(void*, void*) { no_cuda("profile"); }
void device_synchronize(int) { no_cuda("synchronize"); }
void copy_from_host(int, void*, void*, const void*, std::size_t) { no_cuda("copy to device"); }
void copy_to_host(int, void*, void*, const void*, std::size_t) { no_cuda("copy to host"); }

}  // namespace shortconv::autograd::detail::cuda
