// Registers the CUDA kernels and caches per-device properties.
#include <array>
#include <mutex>

#include "../registry.hpp"
#include "check.hpp"
#include "launch.hpp"

namespace shortconv::cuda {

int sm_count(int device) {
  static std::array<int, 64> cache{};
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (device < 0 || device >= static_cast<int>(cache.size())) device = 0;
  if (cache[device] == 0) {
    int n = 0;
    SHORTCONV_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    cache[device] = n;
  }
  return cache[device];
}

namespace {
template <DType kDtype>
void add_dtype(detail::Registry& r) {
  using detail::Op;
  r.add({DeviceType::cuda, Op::forward, kDtype, Variant::fast}, detail::ForwardFn{&forward_fast<kDtype>});
  r.add({DeviceType::cuda, Op::backward, kDtype, Variant::fast}, detail::BackwardFn{&backward_fast<kDtype>});
  r.add({DeviceType::cuda, Op::update, kDtype, Variant::fast}, detail::UpdateFn{&update_fast<kDtype>});
  r.add({DeviceType::cuda, Op::forward, kDtype, Variant::naive}, detail::ForwardFn{&forward_naive<kDtype>});
  r.add({DeviceType::cuda, Op::backward, kDtype, Variant::naive}, detail::BackwardFn{&backward_naive<kDtype>});
}
}  // namespace

void register_kernels(detail::Registry& registry) {
  add_dtype<DType::f32>(registry);
  add_dtype<DType::bf16>(registry);
  add_dtype<DType::f16>(registry);
}

}  // namespace shortconv::cuda
