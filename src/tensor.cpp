// Devices, dtypes, tensor views and owning tensors.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "cuda_runtime_api.hpp"
#include "shortconv/error.hpp"
#include "shortconv/stream.hpp"
#include "shortconv/tensor.hpp"

namespace shortconv {

DType parse_dtype(std::string_view name) {
  if (name == "f32" || name == "float32" || name == "float") return DType::f32;
  if (name == "bf16" || name == "bfloat16") return DType::bf16;
  if (name == "f16" || name == "float16" || name == "half") return DType::f16;
  if (name == "i32" || name == "int32") return DType::i32;
  if (name == "i64" || name == "int64") return DType::i64;
  throw InvalidArgument("unknown dtype '" + std::string(name) + "' (expected f32, bf16 or f16)");
}

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

Device parse_device(std::string_view name) {
  if (name == "cpu") return Device::cpu();
  if (name == "cuda") return Device::cuda(0);
  if (name.starts_with("cuda:") && name.size() > 5) {
    int index = 0;
    for (char ch : name.substr(5)) {
      if (ch < '0' || ch > '9' || index > 1'000'000) throw InvalidArgument("bad device '" + std::string(name) + "'");
      index = index * 10 + (ch - '0');
    }
    return Device::cuda(index);
  }
  throw InvalidArgument("unknown device '" + std::string(name) + "' (expected cpu, cuda or cuda:N)");
}

int cuda_device_count() noexcept { return cuda::device_count(); }
bool cuda_available() noexcept { return cuda_device_count() > 0; }
Device default_device() noexcept { return cuda_available() ? Device::cuda(0) : Device::cpu(); }

// ---------------------------------------------------------------------------------------------
// TensorView

namespace {
void check_rank(std::size_t rank) {
  if (rank > static_cast<std::size_t>(kMaxRank))
    throw InvalidArgument("TensorView: rank " + std::to_string(rank) + " exceeds the maximum of " +
                          std::to_string(kMaxRank));
}
}  // namespace

TensorView::TensorView(void* data, DType dtype, Device device, std::span<const std::int64_t> shape)
    : data_(data), dtype_(dtype), device_(device), rank_(static_cast<int>(shape.size())) {
  check_rank(shape.size());
  std::int64_t stride = 1;
  for (int d = rank_ - 1; d >= 0; --d) {
    shape_[d] = shape[d];
    strides_[d] = stride;
    stride *= std::max<std::int64_t>(shape[d], 1);
  }
}

TensorView::TensorView(void* data, DType dtype, Device device, std::span<const std::int64_t> shape,
                       std::span<const std::int64_t> strides)
    : data_(data), dtype_(dtype), device_(device), rank_(static_cast<int>(shape.size())) {
  check_rank(shape.size());
  if (strides.size() != shape.size())
    throw InvalidArgument("TensorView: " + std::to_string(shape.size()) + " sizes but " +
                          std::to_string(strides.size()) + " strides");
  std::copy(shape.begin(), shape.end(), shape_.begin());
  std::copy(strides.begin(), strides.end(), strides_.begin());
}

int TensorView::check_dim(int dim) const {
  if (dim < 0) dim += rank_;
  if (dim < 0 || dim >= rank_)
    throw InvalidArgument("TensorView: dimension " + std::to_string(dim) + " out of range for rank " +
                          std::to_string(rank_));
  return dim;
}

std::int64_t TensorView::numel() const noexcept {
  // Saturates instead of overflowing: views of absurd sizes (rejected later by the front end,
  // which reports them) must be describable without undefined behaviour.
  std::int64_t n = 1;
  for (int d = 0; d < rank_; ++d)
    if (__builtin_mul_overflow(n, shape_[d], &n)) return INT64_MAX;
  return n;
}

bool TensorView::is_contiguous() const noexcept {
  std::int64_t expected = 1;
  for (int d = rank_ - 1; d >= 0; --d) {
    if (shape_[d] != 1 && strides_[d] != expected) return false;
    if (__builtin_mul_overflow(expected, shape_[d], &expected)) return d == 0;  // nothing left to compare
  }
  return true;
}

TensorView TensorView::narrow(int dim, std::int64_t start, std::int64_t length) const {
  dim = check_dim(dim);
  if (start < 0 || length < 0 || start + length > shape_[dim])
    throw InvalidArgument("TensorView::narrow: [" + std::to_string(start) + ", " +
                          std::to_string(start + length) + ") is outside dimension " + std::to_string(dim) +
                          " of " + str());
  TensorView out = *this;
  out.shape_[dim] = length;
  out.data_ = static_cast<char*>(data_) + start * strides_[dim] * static_cast<std::int64_t>(dtype_size(dtype_));
  return out;
}

// No iostreams here (see shape_str in ops.cpp): every error message goes through this.
std::string TensorView::str() const {
  std::string s = "[";
  for (int d = 0; d < rank_; ++d) s += (d ? ", " : "") + std::to_string(shape_[d]);
  s += "] " + std::string(dtype_name(dtype_)) + ' ' + device_.str();
  if (!is_contiguous()) {
    s += " strides (";
    for (int d = 0; d < rank_; ++d) s += (d ? ", " : "") + std::to_string(strides_[d]);
    s += ')';
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Allocation and owning tensors

void* device_alloc(Device device, std::size_t nbytes) {
  if (device.is_cuda()) return cuda::malloc_device(device.index, nbytes);
  const std::size_t rounded = (std::max<std::size_t>(nbytes, 1) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) throw DeviceError("cpu: failed to allocate " + std::to_string(nbytes) + " bytes");
  return p;
}

void device_free(Device device, void* ptr) noexcept {
  if (ptr == nullptr) return;
  if (device.is_cuda()) {
    cuda::free_device(device.index, ptr);
  } else {
    std::free(ptr);
  }
}

Tensor::Tensor(DType dtype, std::initializer_list<std::int64_t> shape, Device device)
    : Tensor(dtype, std::span<const std::int64_t>(shape.begin(), shape.size()), device) {}

Tensor::Tensor(DType dtype, std::span<const std::int64_t> shape, Device device) {
  check_rank(shape.size());
  std::int64_t n = 1;
  for (std::int64_t s : shape) {
    if (s < 0) throw InvalidArgument("Tensor: negative dimension " + std::to_string(s));
    if (s != 0 && n > (std::int64_t{1} << 60) / s) throw InvalidArgument("Tensor: element count overflows");
    n *= s;
  }
  nbytes_ = static_cast<std::size_t>(n) * dtype_size(dtype);
  void* data = device_alloc(device, nbytes_);
  view_ = TensorView(data, dtype, device, shape);
}

Tensor::~Tensor() { device_free(view_.device(), view_.data()); }

Tensor::Tensor(Tensor&& other) noexcept
    : view_(std::exchange(other.view_, TensorView{})), nbytes_(std::exchange(other.nbytes_, 0)) {}

Tensor& Tensor::operator=(Tensor&& other) noexcept {
  if (this != &other) {
    device_free(view_.device(), view_.data());
    view_ = std::exchange(other.view_, TensorView{});
    nbytes_ = std::exchange(other.nbytes_, 0);
  }
  return *this;
}

void Tensor::copy_from_host(const void* src) {
  if (nbytes_ == 0) return;
  if (device().is_cuda()) {
    cuda::memcpy_to_device(device().index, data(), src, nbytes_);
  } else {
    std::memcpy(data(), src, nbytes_);
  }
}

void Tensor::copy_to_host(void* dst) const {
  if (nbytes_ == 0) return;
  if (device().is_cuda()) {
    cuda::memcpy_to_host(device().index, dst, data(), nbytes_);
  } else {
    std::memcpy(dst, data(), nbytes_);
  }
}

// ---------------------------------------------------------------------------------------------
// Streams

void synchronize(const Stream& stream) {
  if (stream.device.is_cuda()) cuda::synchronize(stream.device.index, stream.handle);
}

OwnedStream::OwnedStream(Device device) : stream_{device, nullptr} {
  if (device.is_cuda()) stream_.handle = cuda::create_stream(device.index);
}

OwnedStream::~OwnedStream() {
  if (stream_.device.is_cuda()) cuda::destroy_stream(stream_.device.index, stream_.handle);
}

}  // namespace shortconv
