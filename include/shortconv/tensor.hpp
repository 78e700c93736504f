// Tensors: a non-owning strided view (what every op takes) and an owning buffer.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>

#include "shortconv/device.hpp"
#include "shortconv/dtype.hpp"

namespace shortconv {

inline constexpr int kMaxRank = 4;

/// Non-owning view: pointer, dtype, device, shape and element strides (int64, never bytes).
class TensorView {
 public:
  TensorView() = default;
  /// Contiguous row-major view of `shape`.
  TensorView(void* data, DType dtype, Device device, std::span<const std::int64_t> shape);
  TensorView(void* data, DType dtype, Device device, std::initializer_list<std::int64_t> shape)
      : TensorView(data, dtype, device, std::span<const std::int64_t>(shape.begin(), shape.size())) {}
  /// Strided view; strides are in elements and must have one entry per dimension.
  TensorView(void* data, DType dtype, Device device, std::span<const std::int64_t> shape,
             std::span<const std::int64_t> strides);
  TensorView(void* data, DType dtype, Device device, std::initializer_list<std::int64_t> shape,
             std::initializer_list<std::int64_t> strides)
      : TensorView(data, dtype, device, std::span<const std::int64_t>(shape.begin(), shape.size()),
                   std::span<const std::int64_t>(strides.begin(), strides.size())) {}

  void* data() const noexcept { return data_; }
  DType dtype() const noexcept { return dtype_; }
  Device device() const noexcept { return device_; }
  int rank() const noexcept { return rank_; }
  std::int64_t size(int dim) const { return shape_.at(check_dim(dim)); }
  std::int64_t stride(int dim) const { return strides_.at(check_dim(dim)); }
  std::span<const std::int64_t> shape() const noexcept { return {shape_.data(), std::size_t(rank_)}; }
  std::span<const std::int64_t> strides() const noexcept { return {strides_.data(), std::size_t(rank_)}; }
  std::int64_t numel() const noexcept;
  bool is_contiguous() const noexcept;

  /// View of `length` entries of dimension `dim` starting at `start` (a slice, no copy).
  TensorView narrow(int dim, std::int64_t start, std::int64_t length) const;

  /// "[4, 4096, 2048] bf16 cuda:0" and, when not contiguous, the strides.
  std::string str() const;

 private:
  int check_dim(int dim) const;

  void* data_ = nullptr;
  DType dtype_ = DType::f32;
  Device device_{};
  int rank_ = 0;
  std::array<std::int64_t, kMaxRank> shape_{};
  std::array<std::int64_t, kMaxRank> strides_{};
};

/// Owning, contiguous tensor on a device. Move-only; the destructor never throws.
class Tensor {
 public:
  Tensor() = default;
  Tensor(DType dtype, std::initializer_list<std::int64_t> shape, Device device = Device::cpu());
  Tensor(DType dtype, std::span<const std::int64_t> shape, Device device = Device::cpu());
  ~Tensor();
  Tensor(Tensor&& other) noexcept;
  Tensor& operator=(Tensor&& other) noexcept;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  const TensorView& view() const noexcept { return view_; }
  operator const TensorView&() const noexcept { return view_; }  // NOLINT: a tensor is usable as its view
  void* data() const noexcept { return view_.data(); }
  DType dtype() const noexcept { return view_.dtype(); }
  Device device() const noexcept { return view_.device(); }
  std::int64_t numel() const noexcept { return view_.numel(); }
  std::size_t nbytes() const noexcept { return nbytes_; }
  std::int64_t size(int dim) const { return view_.size(dim); }

  /// Copies `nbytes()` bytes from host memory into the tensor (synchronous).
  void copy_from_host(const void* src);
  /// Copies the tensor into `nbytes()` bytes of host memory (synchronous).
  void copy_to_host(void* dst) const;

 private:
  TensorView view_;
  std::size_t nbytes_ = 0;
};

/// Allocates `nbytes` on `device` (64-byte aligned on the CPU). Throws DeviceError on failure.
void* device_alloc(Device device, std::size_t nbytes);
/// Frees memory from device_alloc. Never throws.
void device_free(Device device, void* ptr) noexcept;

}  // namespace shortconv
