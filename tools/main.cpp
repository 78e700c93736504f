// `shortconv`: command-line front end. Parses arguments with CLI11 (only this file includes it, to
// keep compile time down) and dispatches to `check` (numerics) or `bench` (timings).
//
// Exit codes: 0 success; 1 `check` found an output outside tolerance; 2 a runtime error (bad
// device, library exception); CLI11's own codes (non-zero) for malformed arguments.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <iostream>
#include <string>

#include "common.hpp"

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

// Accepts what shortconv::parse_dtype accepts (and "all" for check); the message is the library's.
CLI::Validator dtype_validator(bool allow_all) {
  return CLI::Validator(
      [allow_all](std::string& s) -> std::string {
        if (allow_all && s == "all") return {};
        try {
          shortconv::parse_dtype(s);
        } catch (const shortconv::InvalidArgument& e) {
          return allow_all ? "unknown dtype '" + s + "' (expected f32, bf16, f16 or all)" : std::string(e.what());
        }
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"shortconv: depthwise causal 1-D convolution - numerics check and benchmark", "shortconv"};
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return "shortconv: error: " + std::string(e.what()) + " (see --help)\n";
  });
  CheckOptions check;
  BenchOptions bench;
  bool no_graph = false;
  try {
    app.set_version_flag("--version", &version_string, "print the version and the CUDA status, then exit");
    app.require_subcommand(1);

    CLI::App* check_cmd = app.add_subcommand(
        "check", "run forward and backward on a device and compare with an fp64 reference; exit 1 on failure");
    check_cmd->add_option("--device", check.device, "cpu, cuda or cuda:N (default: CUDA when available)")
        ->check(kDevice);
    check_cmd->add_option("--dtype", check.dtype, "activation and weight dtype, or all")
        ->check(dtype_validator(true))
        ->capture_default_str();
    add_shape_options(check_cmd, check.batch, check.seqlen, check.channels, check.width);
    check_cmd->add_option("--seed", check.seed, "seed of the input generator")->capture_default_str();

    CLI::App* bench_cmd = app.add_subcommand(
        "bench", "time forward and backward (fast and naive) against the measured copy bandwidth");
    bench_cmd->add_option("--device", bench.device, "cpu, cuda or cuda:N (default: CUDA when available)")
        ->check(kDevice);
    bench_cmd->add_option("--dtype", bench.dtype, "activation and weight dtype (default: bf16 on CUDA, f32 on CPU)")
        ->check(dtype_validator(false));
    bench_cmd->add_option("--batch,-B", bench.batch, "batch size B (default: 4 on CUDA, 1 on CPU)")->check(kPositive);
    bench_cmd->add_option("--seqlen,-T", bench.seqlen, "sequence length T (default: 4096 on CUDA, 65536 on CPU)")
        ->check(kPositive);
    bench_cmd->add_option("--channels,-C", bench.channels, "channels C (default: 4096 on CUDA, 1024 on CPU)")
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

    app.parse(argc, argv);
    if (check_cmd->parsed()) return shortconv::tool::run_check(check);
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
