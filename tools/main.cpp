// `shortconv`: command-line front end. Parses arguments with CLI11 (only this file includes it, to
// keep compile time down) and dispatches to `check` (numerics), `bench` (timings) or `train` (the
// autograd distillation demo).
//
// Exit codes: 0 success; 1 `check` found an output outside tolerance, or `train` ended with a
// non-finite loss; 2 a runtime error (bad device, library exception); CLI11's own codes (non-zero)
// for malformed arguments.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <iostream>
#include <string>

#include "common.hpp"
#include "train.hpp"

namespace {

using shortconv::tool::BenchOptions;
using shortconv::tool::CheckOptions;

// CLI::PositiveNumber checks the same thing, but its message prints DBL_MAX in full (300+
// digits); this validator keeps the error to one readable line.
const CLI::Validator kPositive(
    [](std::string& s) -> std::string {
      long long v = 0;
      if (!CLI::detail::lexical_cast(s, v) || v < 1) return "must be a positive integer, got '" + s + "'";
      return {};
    },
    "POSITIVE");

// Accepts the floating dtypes shortconv::parse_dtype accepts (and "all" for check); the index
// types (i32, i64) hold cu_seqlens and state indices, never activations.
CLI::Validator dtype_validator(bool allow_all) {
  return CLI::Validator(
      [allow_all](std::string& s) -> std::string {
        if (allow_all && s == "all") return {};
        shortconv::DType dtype{};
        try {
          dtype = shortconv::parse_dtype(s);
        } catch (const shortconv::InvalidArgument& e) {
          return allow_all ? "unknown dtype '" + s + "' (expected f32, bf16, f16 or all)" : std::string(e.what());
        }
        if (!shortconv::is_floating(dtype))
          return "dtype '" + s + "' is an index type; activations and weights take f32, bf16 or f16";
        return {};
      },
      allow_all ? "f32|bf16|f16|all" : "f32|bf16|f16");
}

// Accepts what shortconv::parse_device accepts; whether the device exists is checked at run time.
const CLI::Validator kDevice(
    [](std::string& s) -> std::string {
      try {
        shortconv::parse_device(s);
      } catch (const shortconv::InvalidArgument& e) {
        return e.what();
      }
      return {};
    },
    "cpu|cuda|cuda:N");

std::string version_string() {
  std::string s = "shortconv " + std::to_string(shortconv::kVersionMajor) + "." +
                  std::to_string(shortconv::kVersionMinor) + "." + std::to_string(shortconv::kVersionPatch) + "\n";
  if (!shortconv::built_with_cuda()) return s + "CUDA backend: not built";
  const int n = shortconv::cuda_device_count();
  return s + "CUDA backend: built; " +
         (n == 0 ? std::string("not available (no visible device)")
                 : "available (" + std::to_string(n) + " device" + (n == 1 ? "" : "s") + ")");
}

void add_shape_options(CLI::App* cmd, std::int64_t& batch, std::int64_t& seqlen, std::int64_t& channels,
                       std::int64_t& width) {
  cmd->add_option("--batch,-B", batch, "batch size B")->check(kPositive)->capture_default_str();
  cmd->add_option("--seqlen,-T", seqlen, "sequence length T")->check(kPositive)->capture_default_str();
  cmd->add_option("--channels,-C", channels, "channels C")->check(kPositive)->capture_default_str();
  cmd->add_option("--width,-K", width, "filter width K")->check(kPositive)->capture_default_str();
}

// --silu, --bias/--no-bias, --state, --varlen N and --decode, shared by check and bench.
void add_feature_options(CLI::App* cmd, shortconv::tool::Features& f, const char* bias_help, const char* decode_help) {
  cmd->add_flag("--silu", f.silu, "fused SiLU epilogue: y = silu(conv + bias)");
  cmd->add_flag("--tensor-cores,!--no-tensor-cores", f.tensor_cores,
                "CUDA bf16/f16: the forward (24 <= K <= 128) and the backward without SiLU (17 <= K <= 112) may use "
                "tensor cores (default on); off: FMA kernels only");
  cmd->add_flag("--bias,!--no-bias", f.bias, bias_help);
  CLI::Option* state = cmd->add_flag(
      "--state", f.state,
      "forward takes initial_state and writes final_state [N, K-1, C]; backward takes d_final_state and writes "
      "d_initial_state");
  CLI::Option* varlen =
      cmd->add_option("--varlen", f.varlen,
                      "pack N sequences of random lengths (fixed seed; one of length 1 and one shorter than K) "
                      "summing to B*T tokens into x [B*T, C], with cu_seqlens i32 on the device")
          ->check(kPositive)
          ->type_name("N");
  CLI::Option* decode = cmd->add_flag("--decode", f.decode, decode_help);
  decode->excludes(state);
  decode->excludes(varlen);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"shortconv: depthwise causal 1-D convolution - numerics check, benchmark and autograd demo", "shortconv"};
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return "shortconv: error: " + std::string(e.what()) + " (see --help)\n";
  });
  CheckOptions check;
  BenchOptions bench;
  shortconv::tool::TrainOptions train;
  bool no_graph = false;
  try {
    app.set_version_flag("--version", &version_string, "print the version and the CUDA status, then exit");
    app.require_subcommand(1);

    CLI::App* check_cmd = app.add_subcommand(
        "check",
        "run forward and backward (or the decode step) on a device and compare every output with an fp64 "
        "reference; exit 1 on failure");
    check_cmd->add_option("--device", check.device, "cpu, cuda or cuda:N (default: CUDA when available)")
        ->check(kDevice);
    check_cmd->add_option("--dtype", check.dtype, "activation and weight dtype, or all")
        ->check(dtype_validator(true))
        ->capture_default_str();
    add_shape_options(check_cmd, check.batch, check.seqlen, check.channels, check.width);
    check_cmd->add_option("--seed", check.seed, "seed of the input generator")->capture_default_str();
    add_feature_options(check_cmd, check.features, "with a bias [C] and dbias (default; --no-bias: without)",
                        "check conv1d_update instead: x [B, T_new=T, C], conv_state of B slots, state_indices a "
                        "random permutation with one -1 padding row (B >= 2)");

    CLI::App* bench_cmd = app.add_subcommand(
        "bench",
        "time forward and backward (fast, and naive for the plain op), or the decode step, against the measured "
        "copy bandwidth");
    bench_cmd->add_option("--device", bench.device, "cpu, cuda or cuda:N (default: CUDA when available)")
        ->check(kDevice);
    bench_cmd->add_option("--dtype", bench.dtype, "activation and weight dtype (default: bf16 on CUDA, f32 on CPU)")
        ->check(dtype_validator(false));
    bench_cmd
        ->add_option("--batch,-B", bench.batch,
                     "batch size B (default: 4 on CUDA, 1 on CPU; --decode: 256 on CUDA, 64 on CPU)")
        ->check(kPositive);
    bench_cmd
        ->add_option("--seqlen,-T", bench.seqlen,
                     "sequence length T (default: 4096 on CUDA, 65536 on CPU; --decode: T_new = 1)")
        ->check(kPositive);
    bench_cmd
        ->add_option("--channels,-C", bench.channels,
                     "channels C (default: 4096 on CUDA, 1024 on CPU; --decode: 8192 on CUDA, 4096 on CPU)")
        ->check(kPositive);
    bench_cmd->add_option("--width,-K", bench.width, "filter width K (default: 4)")->check(kPositive);
    bench_cmd->add_option("--iters", bench.iters,
                          "timed runs per op and variant (median reported); on CUDA, timed graph replays")
        ->check(kPositive)
        ->capture_default_str();
    bench_cmd->add_flag("--no-graph", no_graph,
                        "CUDA: time each call with its own events (host launch overhead included) instead of "
                        "replaying a CUDA graph of R calls");
    bench_cmd->add_option("--csv", bench.csv, "append result rows to this CSV file (header when new)")
        ->type_name("FILE");
    add_feature_options(bench_cmd, bench.features, "with a bias [C] and dbias (default: without)",
                        "time conv1d_update instead: x [B, T_new=T, C], conv_state of B slots, state_indices a "
                        "random permutation with one -1 padding row (B >= 2)");

    CLI::App* train_cmd = app.add_subcommand(
        "train",
        "autograd demo: train a student short-conv mixer W_o (silu(conv_K(W_in x)) * (W_g x)) to match a fixed random "
        "teacher of the same shape (AdamW on the MSE, x ~ N(0, 1) drawn each step)");
    train_cmd->add_option("--d-model", train.d_model, "model width d_model")->check(kPositive)->capture_default_str();
    train_cmd->add_option("--channels,-C", train.channels, "conv channels C")->check(kPositive)->capture_default_str();
    train_cmd->add_option("--width,-K", train.width, "conv width K")->check(kPositive)->capture_default_str();
    train_cmd->add_option("--seqlen,-T", train.seqlen, "sequence length T")->check(kPositive)->capture_default_str();
    train_cmd->add_option("--batch,-B", train.batch, "batch size B")->check(kPositive)->capture_default_str();
    train_cmd->add_option("--steps", train.steps, "training steps (the lr schedule spans them)")
        ->check(kPositive)
        ->capture_default_str();
    train_cmd->add_option("--lr", train.lr, "peak AdamW learning rate (linear warm-up, then cosine decay to 5%)")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    train_cmd->add_option("--warmup", train.warmup, "linear warm-up steps")->check(CLI::NonNegativeNumber)->capture_default_str();
    train_cmd->add_option("--weight-decay", train.weight_decay, "AdamW decoupled weight decay")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    train_cmd->add_option("--device", train.device, "cpu, cuda or cuda:N (default: CUDA when available)")->check(kDevice);
    train_cmd->add_option("--csv", train.csv, "write the loss curve (step, loss, lr, seconds) to this CSV file")
        ->type_name("FILE");
    train_cmd->add_option("--svg", train.svg, "plot the loss curve (log scale) to this SVG file")->type_name("FILE");
    train_cmd->add_option("--seed", train.seed, "seed of the weights and inputs")->capture_default_str();
    train_cmd->add_option("--time-limit", train.time_limit, "stop after this many seconds (0: no limit)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    train_cmd->add_flag("--profile", train.profile,
                        "time every op (CUDA events / host clock) and print each op's share of the step");
    train_cmd->add_flag("--tf32", train.tf32, "CUDA: run the GEMMs on TF32 tensor cores (default: FP32)");

    app.parse(argc, argv);
    if (check_cmd->parsed()) return shortconv::tool::run_check(check);
    if (train_cmd->parsed()) {
      shortconv::tool::restart_for_blas_kernels(train, argv);
      return shortconv::tool::run_train(train);
    }
    if (bench_cmd->parsed()) {
      bench.graph = !no_graph;
      return shortconv::tool::run_bench(bench);
    }
    return 2;  // unreachable: require_subcommand(1)
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const shortconv::Error& e) {
    std::fflush(stdout);
    std::cerr << "shortconv: error: " << e.what() << '\n';
    return 2;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::cerr << "shortconv: error: " << e.what() << '\n';
    return 2;
  }
}
