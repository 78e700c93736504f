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

/// The sequence-model features a run turns on. The default is the plain op without a bias.
struct Features {
  bool silu = false;        // Activation::silu
  bool bias = false;        // a bias [C]; dbias in backward
  bool state = false;       // forward: initial_state in, final_state out; backward: d_final_state in, d_initial_state out
  std::int64_t varlen = 0;  // > 0: pack this many sequences of random lengths into x [total, C] with cu_seqlens
  bool decode = false;      // conv1d_update on x [B, T_new, C] with a conv_state of B slots, instead of forward/backward
  bool tensor_cores = true;  // Conv1d{Forward,Backward}Args::tensor_cores (--no-tensor-cores: the FMA kernels only)

  /// What Variant::naive runs: no activation, states, cu_seqlens or decode (a bias is fine).
  bool plain() const { return !silu && !state && varlen == 0 && !decode; }
  /// "silu+bias+state+varlen8", "decode+silu", or "none".
  std::string str() const;
};

/// Options of `shortconv check`; unset optionals take the subcommand's defaults.
struct CheckOptions {
  std::optional<std::string> device;  // "cpu", "cuda", "cuda:N"; default: default_device()
  std::string dtype = "all";          // "f32", "bf16", "f16" or "all"
  std::int64_t batch = 2;             // B
  std::int64_t seqlen = 300;          // T
  std::int64_t channels = 130;        // C
  std::int64_t width = 4;             // K
  std::uint64_t seed = 0;
  // Set field by field: a designated initializer would warn about every field it leaves out.
  Features features = [] {
    Features f;
    f.bias = true;  // check always used a bias before --no-bias existed
    return f;
  }();
};

/// Options of `shortconv bench`; sizes left unset take per-device defaults.
struct BenchOptions {
  std::optional<std::string> device;
  std::optional<std::string> dtype;   // default: bf16 on CUDA, f32 on the CPU
  std::optional<std::int64_t> batch, seqlen, channels, width;
  int iters = 20;                     // timed calls, or timed graph replays
  bool graph = true;                  // CUDA: time graph replays; false: events around each call
  std::optional<std::string> csv;     // append result rows to this file
  Features features;                  // bias off unless --bias
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

/// Lengths of `count` sequences summing to `total` tokens (each at least 1), drawn from a
/// mt19937_64 seeded with `seed`, in shuffled order. count = 2: {1, total - 1}. count >= 3: one of
/// length 1, one of length 2..K-1 (1 when K <= 2 or the total leaves no room), and the rest split
/// what is left at random cut points. So with count >= 2 one is of length 1, which is also < K for
/// K >= 2. Throws InvalidArgument unless 1 <= count <= total.
std::vector<std::int64_t> varlen_lengths(std::int64_t total, std::int64_t count, std::int64_t width,
                                         std::uint64_t seed);

/// state_indices for a decode step of `batch` rows over `batch` slots: a random permutation of
/// the slots (seeded with `seed`) in which, when batch >= 2, one row is -1 (a padding row), so one
/// slot is left untouched.
std::vector<std::int64_t> decode_slots(std::int64_t batch, std::uint64_t seed);

/// A 1-D index tensor (cu_seqlens, state indices) of `dtype` (i32 or i64) on `device`.
Tensor index_tensor(const std::vector<std::int64_t>& values, DType dtype, Device device);

/// Element `i` of a host buffer of floating `dtype`, widened exactly to double (Unsupported for
/// the index types).
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
