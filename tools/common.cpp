// Device resolution, host element conversion and formatting shared by the tool's subcommands.
#include "common.hpp"

#include <omp.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <random>
#include <set>

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

std::string Features::str() const {
  std::string s;
  const auto add = [&s](const std::string& name) { s += (s.empty() ? "" : "+") + name; };
  if (decode) add("decode");
  if (silu) add("silu");
  if (bias) add("bias");
  if (state) add("state");
  if (varlen > 0) add("varlen" + std::to_string(varlen));
  if (!tensor_cores) add("no-tensor-cores");
  return s.empty() ? "none" : s;
}

namespace {
// `k` distinct values of [lo, hi], sorted. When k is more than half the range, draws the values
// left out instead, so the number of draws stays near k either way.
std::vector<std::int64_t> distinct_sorted(std::int64_t lo, std::int64_t hi, std::int64_t k, std::mt19937_64& gen) {
  const std::int64_t n = hi - lo + 1;
  const bool complement = k > n / 2;
  std::uniform_int_distribution<std::int64_t> pick(lo, hi);
  std::set<std::int64_t> drawn;
  while (static_cast<std::int64_t>(drawn.size()) < (complement ? n - k : k)) drawn.insert(pick(gen));
  if (!complement) return {drawn.begin(), drawn.end()};
  std::vector<std::int64_t> out;
  out.reserve(static_cast<std::size_t>(k));
  for (std::int64_t v = lo; v <= hi; ++v)
    if (!drawn.contains(v)) out.push_back(v);
  return out;
}
}  // namespace

std::vector<std::int64_t> varlen_lengths(std::int64_t total, std::int64_t count, std::int64_t width,
                                         std::uint64_t seed) {
  if (count < 1 || count > total)
    throw InvalidArgument("--varlen " + std::to_string(count) + ": needs 1 <= N <= B*T = " + std::to_string(total) +
                          " (every sequence at least one token)");
  if (count == 1) return {total};
  if (count == 2) return {1, total - 1};  // the 1 is also the sequence shorter than K (K >= 2)
  std::mt19937_64 gen(seed);
  // One sequence of length 1, one of 2..K-1 (a partial state window) when there is room.
  const std::int64_t spare = total - count;  // tokens beyond one per sequence
  const std::int64_t short_max = std::min(width - 1, 1 + spare);
  const std::int64_t short_len =
      short_max >= 2 ? std::uniform_int_distribution<std::int64_t>(2, short_max)(gen) : std::int64_t{1};
  std::vector<std::int64_t> lengths{1, short_len};
  // The other count-2 sequences split the rest (>= count-2 tokens) at count-3 distinct cut points.
  const std::int64_t rest = total - 1 - short_len, parts = count - 2;
  std::int64_t prev = 0;
  for (std::int64_t cut : distinct_sorted(1, rest - 1, parts - 1, gen)) {
    lengths.push_back(cut - prev);
    prev = cut;
  }
  lengths.push_back(rest - prev);
  std::shuffle(lengths.begin(), lengths.end(), gen);  // the short ones anywhere in the pack
  return lengths;
}

std::vector<std::int64_t> decode_slots(std::int64_t batch, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<std::int64_t> slots(static_cast<std::size_t>(batch));
  std::iota(slots.begin(), slots.end(), std::int64_t{0});
  std::shuffle(slots.begin(), slots.end(), gen);
  if (batch >= 2) slots[std::uniform_int_distribution<std::size_t>(0, slots.size() - 1)(gen)] = -1;
  return slots;
}

Tensor index_tensor(const std::vector<std::int64_t>& values, DType dtype, Device device) {
  Tensor t(dtype, {static_cast<std::int64_t>(values.size())}, device);
  if (dtype == DType::i64) {
    t.copy_from_host(values.data());
  } else if (dtype == DType::i32) {
    const std::vector<std::int32_t> narrow(values.begin(), values.end());  // callers keep values in int32 range
    t.copy_from_host(narrow.data());
  } else {
    throw InvalidArgument("index_tensor: dtype " + std::string(dtype_name(dtype)) + " is not i32 or i64");
  }
  return t;
}

// The element helpers handle the floating types; the index types have their own path
// (index_tensor), so reaching one of them here is a bug in the tool.
double load_host(const void* data, DType dtype, std::int64_t i) {
  switch (dtype) {
    case DType::f32: return static_cast<const float*>(data)[i];
    case DType::bf16: return bf16_to_float(static_cast<const std::uint16_t*>(data)[i]);
    case DType::f16: return f16_to_float(static_cast<const std::uint16_t*>(data)[i]);
    case DType::i32:
    case DType::i64: break;
  }
  throw Unsupported("load_host: dtype " + std::string(dtype_name(dtype)) + " is not a floating type");
}

void store_host(void* data, DType dtype, std::int64_t i, float value) {
  switch (dtype) {
    case DType::f32: static_cast<float*>(data)[i] = value; return;
    case DType::bf16: static_cast<std::uint16_t*>(data)[i] = float_to_bf16(value); return;
    case DType::f16: static_cast<std::uint16_t*>(data)[i] = float_to_f16(value); return;
    case DType::i32:
    case DType::i64: break;
  }
  throw Unsupported("store_host: dtype " + std::string(dtype_name(dtype)) + " is not a floating type");
}

float round_to(DType dtype, float value) {
  switch (dtype) {
    case DType::f32: return value;
    case DType::bf16: return bf16_to_float(float_to_bf16(value));
    case DType::f16: return f16_to_float(float_to_f16(value));
    case DType::i32:
    case DType::i64: break;
  }
  throw Unsupported("round_to: dtype " + std::string(dtype_name(dtype)) + " is not a floating type");
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
