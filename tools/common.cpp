// Device resolution, host element conversion and formatting shared by the tool's subcommands.
#include "common.hpp"

#include <omp.h>

#include <cstdarg>
#include <cstdio>
#include <fstream>

#include "shortconv/half.hpp"
#include "timing.hpp"

namespace shortconv::tool {

Device resolve_device(const std::optional<std::string>& name) {
  const Device device = name ? parse_device(*name) : default_device();
  if (device.is_cuda()) {
    if (!built_with_cuda())
      throw Unsupported(device.str() + " requested but this build of shortconv has no CUDA backend");
    const int count = cuda_device_count();
    if (device.index >= count)
      throw InvalidArgument(device.str() + " requested but " +
                            (count == 0 ? std::string("no CUDA device is visible")
                                        : std::to_string(count) + " CUDA device(s) are visible"));
  }
  return device;
}

namespace {
std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    const auto colon = line.find(':');
    if (colon == std::string::npos) break;
    const auto first = line.find_first_not_of(" \t", colon + 1);
    return first == std::string::npos ? std::string("unknown CPU") : line.substr(first);
  }
  return "unknown CPU";
}
}  // namespace

std::string describe_device(Device device) {
  if (device.is_cuda()) return device.str() + " (" + cuda_device_name(device.index) + ")";
  return "cpu (" + cpu_model_name() + ", " + std::to_string(omp_get_max_threads()) + " threads)";
}

void check_shape_size(const char* op, std::int64_t batch, std::int64_t seqlen, std::int64_t channels,
                      std::int64_t width) {
  std::int64_t n = 0;
  if (batch < 1 || seqlen < 1 || channels < 1 || width < 1 || __builtin_mul_overflow(batch, seqlen, &n) ||
      __builtin_mul_overflow(n, channels, &n) || n > (std::int64_t{1} << 58) ||
      __builtin_mul_overflow(channels, width, &n))
    throw InvalidArgument(std::string(op) + ": shape B=" + std::to_string(batch) + " T=" + std::to_string(seqlen) +
                          " C=" + std::to_string(channels) + " K=" + std::to_string(width) +
                          " is not positive or too large");
}

double load_host(const void* data, DType dtype, std::int64_t i) {
  switch (dtype) {
    case DType::f32: return static_cast<const float*>(data)[i];
    case DType::bf16: return bf16_to_float(static_cast<const std::uint16_t*>(data)[i]);
    case DType::f16: return f16_to_float(static_cast<const std::uint16_t*>(data)[i]);
  }
  throw Unsupported("load_host: unknown dtype");
}

void store_host(void* data, DType dtype, std::int64_t i, float value) {
  switch (dtype) {
    case DType::f32: static_cast<float*>(data)[i] = value; return;
    case DType::bf16: static_cast<std::uint16_t*>(data)[i] = float_to_bf16(value); return;
    case DType::f16: static_cast<std::uint16_t*>(data)[i] = float_to_f16(value); return;
  }
  throw Unsupported("store_host: unknown dtype");
}

float round_to(DType dtype, float value) {
  switch (dtype) {
    case DType::f32: return value;
    case DType::bf16: return bf16_to_float(float_to_bf16(value));
    case DType::f16: return f16_to_float(float_to_f16(value));
  }
  throw Unsupported("round_to: unknown dtype");
}

std::string shape_str(std::span<const std::int64_t> shape) {
  std::string s = "[";
  for (std::size_t d = 0; d < shape.size(); ++d) s += (d ? ", " : "") + std::to_string(shape[d]);
  return s + "]";
}

std::string format(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  va_list copy;
  va_copy(copy, args);
  const int n = std::vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  std::string out(n > 0 ? static_cast<std::size_t>(n) : 0, '\0');
  if (n > 0) std::vsnprintf(out.data(), out.size() + 1, fmt, args);
  va_end(args);
  return out;
}

}  // namespace shortconv::tool
