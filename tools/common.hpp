// Shared pieces of the `shortconv` tool: subcommand options, device resolution, host-side
// element conversion and formatting. Nothing here includes CLI11 or CUDA headers.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "shortconv/shortconv.hpp"

namespace shortconv::tool {

/// Options of `shortconv check`; unset optionals take the subcommand's defaults.
struct CheckOptions {
  std::optional<std::string> device;  // "cpu", "cuda", "cuda:N"; default: default_device()
  std::string dtype = "all";          // "f32", "bf16", "f16" or "all"
  std::int64_t batch = 2;             // B
  std::int64_t seqlen = 300;          // T
  std::int64_t channels = 130;        // C
  std::int64_t width = 4;             // K
  std::uint64_t seed = 0;
};

/// Options of `shortconv bench`; sizes left unset take per-device defaults.
struct BenchOptions {
  std::optional<std::string> device;
  std::optional<std::string> dtype;   // default: bf16 on CUDA, f32 on the CPU
  std::optional<std::int64_t> batch, seqlen, channels, width;
  int iters = 20;                     // timed calls, or timed graph replays
  bool graph = true;                  // CUDA: time graph replays; false: events around each call
  std::optional<std::string> csv;     // append result rows to this file
};

/// Runs `shortconv check`; returns the process exit code (0 pass, 1 fail).
int run_check(const CheckOptions& options);

/// Runs `shortconv bench`; returns the process exit code.
int run_bench(const BenchOptions& options);

/// Parses a device name (or takes default_device()) and checks that it can run here.
Device resolve_device(const std::optional<std::string>& name);

/// "cpu (<model name>, N threads)" or "cuda:N (<GPU name>)".
std::string describe_device(Device device);

/// Throws InvalidArgument unless B*T*C*dtype_size fits comfortably in int64.
void check_shape_size(const char* op, std::int64_t batch, std::int64_t seqlen, std::int64_t channels,
                      std::int64_t width);

/// Element `i` of a host buffer of `dtype`, widened exactly to double.
double load_host(const void* data, DType dtype, std::int64_t i);

/// Rounds `value` to `dtype` (nearest even) and stores it as element `i`.
void store_host(void* data, DType dtype, std::int64_t i, float value);

/// `value` rounded to `dtype` and widened back to float.
float round_to(DType dtype, float value);

/// "[2, 300, 130]".
std::string shape_str(std::span<const std::int64_t> shape);

/// printf into a std::string.
std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace shortconv::tool
