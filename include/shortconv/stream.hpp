// Execution streams. On CUDA a Stream wraps a cudaStream_t; on the CPU ops run immediately.
#pragma once

#include "shortconv/device.hpp"

namespace shortconv {

/// Non-owning handle: `handle` is a cudaStream_t (nullptr = the default stream) or unused on the CPU.
struct Stream {
  Device device = Device::cpu();
  void* handle = nullptr;

  static constexpr Stream cpu() noexcept { return {}; }
  static constexpr Stream cuda_default(int index = 0) noexcept { return {Device::cuda(index), nullptr}; }
};

/// The default stream of `device`.
constexpr Stream default_stream(Device device) noexcept { return {device, nullptr}; }

/// Blocks until all work queued on `stream` has finished. Throws DeviceError on a device failure.
void synchronize(const Stream& stream);

/// Owning CUDA stream (non-blocking). Throws Unsupported without CUDA; the destructor never throws.
class OwnedStream {
 public:
  explicit OwnedStream(Device device);
  ~OwnedStream();
  OwnedStream(const OwnedStream&) = delete;
  OwnedStream& operator=(const OwnedStream&) = delete;
  const Stream& get() const noexcept { return stream_; }
  operator const Stream&() const noexcept { return stream_; }  // NOLINT

 private:
  Stream stream_;
};

}  // namespace shortconv
