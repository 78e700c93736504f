// Caching allocator of the autograd tape (see allocator.hpp).
#include "allocator.hpp"

#include <algorithm>
#include <bit>

#include "kernels_cuda.hpp"
#include "shortconv/tensor.hpp"

namespace shortconv::autograd::detail {

std::size_t CachingAllocator::bucket_size(std::size_t bytes) noexcept {
  constexpr std::size_t kMin = 512;
  if (bytes <= kMin) return kMin;
  const std::size_t step = std::max(kMin, std::bit_floor(bytes) / 4);
  return (bytes + step - 1) / step * step;
}

CachingAllocator::~CachingAllocator() {
  release_all();
  release_cached();
}

void* CachingAllocator::allocate(std::size_t bytes) {
  const std::size_t size = bucket_size(bytes);
  in_use_.reserve(in_use_.size() + 1);  // may throw: do it before taking a block
  void* ptr = nullptr;
  auto it = free_.find(size);
  if (it != free_.end() && !it->second.empty()) {
    ptr = it->second.back();
    it->second.pop_back();
    ++stats_.cache_hits;
  } else {
    if (it == free_.end()) free_.emplace(size, std::vector<void*>{});  // the list exists before the block returns
    ptr = device_.is_cuda() ? cuda::malloc_async(device_.index, stream_, size) : device_alloc(device_, size);
    ++stats_.device_allocations;
    stats_.bytes_reserved += static_cast<std::int64_t>(size);
  }
  in_use_.push_back({ptr, size});
  stats_.bytes_in_use += static_cast<std::int64_t>(size);
  stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
  return ptr;
}

void CachingAllocator::release(void* ptr) noexcept {
  // Temporaries are released soon after they are taken: search from the back.
  for (auto it = in_use_.rbegin(); it != in_use_.rend(); ++it) {
    if (it->ptr != ptr) continue;
    stats_.bytes_in_use -= static_cast<std::int64_t>(it->bytes);
    // The bucket's list was created when the block was first allocated. Growing it could throw:
    // a block that cannot be cached goes back to the device instead.
    const auto list = free_.find(it->bytes);
    bool cached = false;
    if (list != free_.end()) {
      try {
        list->second.push_back(ptr);
        cached = true;
      } catch (...) {
      }
    }
    if (!cached) {
      stats_.bytes_reserved -= static_cast<std::int64_t>(it->bytes);
      free_block(ptr);
    }
    in_use_.erase(std::next(it).base());
    return;
  }
}

void CachingAllocator::release_all() noexcept {
  while (!in_use_.empty()) release(in_use_.back().ptr);
}

void CachingAllocator::release_cached() noexcept {
  for (auto& [size, list] : free_) {
    for (void* ptr : list) {
      free_block(ptr);
      stats_.bytes_reserved -= static_cast<std::int64_t>(size);
    }
    list.clear();
  }
}

void CachingAllocator::free_block(void* ptr) noexcept {
  if (device_.is_cuda()) {
    cuda::free_async(device_.index, stream_, ptr);
  } else {
    device_free(device_, ptr);
  }
  ++stats_.device_frees;
}

}  // namespace shortconv::autograd::detail
