// The tape's caching allocator: device blocks in size buckets, handed out to one graph and put
// back on per-bucket free lists when the graph is reset, so a step that repeats the previous
// step's shapes is served entirely from the lists.
//
// Buckets: sizes up to 512 bytes share one bucket; above, a size is rounded up to a multiple of a
// quarter of its power of two (at most 25% slack). A request takes a block of exactly its bucket
// (no splitting, no coalescing): simple, and in a training loop every step asks for the same
// sizes. CPU blocks come from device_alloc (64-byte aligned); CUDA blocks from cudaMallocAsync on
// the tape's stream, freed with cudaFreeAsync on it. A block released while kernels that use it
// are still queued may be handed out again at once: every user of it is enqueued on the same
// stream, so stream order keeps the uses apart.
//
// The bookkeeping (in-use list, free lists) keeps its capacity across steps, so a warm step makes
// no host allocations here either.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

#include "shortconv/autograd.hpp"
#include "shortconv/device.hpp"

namespace shortconv::autograd::detail {

class CachingAllocator {
 public:
  CachingAllocator(Device device, void* stream) : device_(device), stream_(stream) {}
  ~CachingAllocator();  // gives every block (in use or cached) back to the device
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  /// A block of at least `bytes` bytes (at least 64-byte aligned). Throws DeviceError when the
  /// device is out of memory.
  void* allocate(std::size_t bytes);
  float* allocate_floats(std::int64_t n) { return static_cast<float*>(allocate(static_cast<std::size_t>(n) * sizeof(float))); }
  /// Puts one block from allocate() back on its free list.
  void release(void* ptr) noexcept;
  /// Puts every block in use back on the free lists.
  void release_all() noexcept;
  /// Gives the cached (free) blocks back to the device.
  void release_cached() noexcept;
  const AllocatorStats& stats() const noexcept { return stats_; }

  static std::size_t bucket_size(std::size_t bytes) noexcept;

 private:
  struct Block {
    void* ptr;
    std::size_t bytes;
  };
  void free_block(void* ptr) noexcept;

  Device device_;
  void* stream_;
  std::vector<Block> in_use_;                          // most recent last
  std::map<std::size_t, std::vector<void*>> free_;     // bucket size -> cached blocks
  AllocatorStats stats_;
};

}  // namespace shortconv::autograd::detail
