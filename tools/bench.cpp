// `shortconv bench`: times forward and backward for Variant::fast and Variant::naive and reports
// them against the copy bandwidth measured on the same device in the same run.
//
// Bytes are the floor traffic in decimal GB: forward reads x and writes y; backward reads x and dy
// and writes dx (weights, bias, dweight and dbias ignored). The floor time is those bytes at the
// measured copy bandwidth; "% of floor" = floor time / measured time (= GB/s as % of the copy).
//
// Times are medians after warm-up. CPU: steady_clock around each call. CUDA (default): R calls
// (R = 20, fewer for slow calls, whole rotations of the buffer sets) are captured into one CUDA
// graph on the tool's non-blocking stream; each replay is timed with a pair of events and the time
// per call is replay / R, so host launch overhead is not counted. CUDA with --no-graph: a pair of
// events around each call, launch overhead included.
// When one buffer set (x, y, dy, dx) fits in 50 MB, calls rotate over enough sets to span 100 MB,
// so timings do not come from a warm L2; a graph captures the same rotation.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include "common.hpp"
#include "timing.hpp"

namespace shortconv::tool {
namespace {

constexpr double kRotateBelowBytes = 50e6;  // a buffer set this small could stay in L2
constexpr double kRotateSpanBytes = 100e6;  // rotated sets then span at least this much
constexpr int kMaxSets = 1024;
constexpr const char* kCsvHeader = "device,dtype,B,T,C,K,op,variant,ms,GBps,pct_copy,copy_GBps,floor_ms";
constexpr int kCudaWarmup = 3;
constexpr double kCpuBudgetMs = 3000.0;  // per op and variant; slow CPU runs get fewer iterations
constexpr int kGraphCalls = 20;          // calls captured per graph (before rounding to whole rotations)
constexpr double kGraphBudgetMs = 20.0;  // slow calls get fewer per graph, at least 1
constexpr double kGraphMaxReplayMs = 200.0;  // cap on a replay grown to whole rotations of the sets
constexpr int kGraphWarmup = 2;          // untimed replays after instantiation
constexpr int kEstimateCalls = 3;        // eager calls timed one by one to size the graph

// Value in (-1, 1), never 0, for element `i`: splitmix64 of (seed, i), so fills run in parallel.
float hash_uniform(std::uint64_t seed, std::int64_t i) {
  std::uint64_t z = seed + (static_cast<std::uint64_t>(i) + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return (static_cast<float>(z >> 40) + 0.5f) * 0x1p-23f - 1.0f;  // odd multiples of 2^-24
}

void fill_random(Tensor& t, std::uint64_t seed) {
  // CPU tensors are filled in place, which also first-touches them from the OpenMP threads.
  std::vector<unsigned char> staging(t.device().is_cpu() ? 0 : t.nbytes());
  void* dst = t.device().is_cpu() ? t.data() : staging.data();
  const std::int64_t n = t.numel();
  const DType dtype = t.dtype();
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i) store_host(dst, dtype, i, hash_uniform(seed, i));
  if (!t.device().is_cpu()) t.copy_from_host(staging.data());
}

struct BufferSet {
  Tensor x, dy, y, dx;  // [B, T, C]
};

struct Result {
  const char* op;
  const char* variant;
  int runs = 0;         // timed calls, or timed graph replays
  int calls = 1;        // calls per graph replay (1 when each call is timed)
  bool graph = false;   // timed by graph replays
  double ms = 0.0;      // median per call
  double gbps = 0.0;    // floor bytes / median time
  double pct = 0.0;     // of the copy bandwidth = floor time / median time
  double floor_ms = 0.0;  // floor bytes at the copy bandwidth
};

struct Timing {
  double ms = 0.0;  // median per call
  int runs = 0;
  int calls = 1;
  bool graph = false;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Times `call(set)` one call at a time after warm-up: steady_clock on the CPU, events on CUDA.
Timing time_each_call(const std::function<void(int)>& call, int sets, int iters, const Stream& stream) {
  CallTimer timer(stream);
  int runs = iters;
  if (stream.device.is_cpu()) {
    // One warm-up call, which also sizes the run: a slow variant (the naive one on a large
    // shape) still runs at least once but no more than the budget allows.
    timer.start();
    call(0);
    const double warm_ms = timer.stop_ms();
    runs = static_cast<int>(std::clamp(std::floor(kCpuBudgetMs / std::max(warm_ms, 1e-3)), 1.0, double(iters)));
  } else {
    for (int i = 0; i < kCudaWarmup; ++i) call(i % sets);
    synchronize(stream);
  }
  std::vector<double> ms;
  ms.reserve(static_cast<std::size_t>(runs));
  for (int i = 0; i < runs; ++i) {
    timer.start();
    call((i + 1) % sets);
    ms.push_back(timer.stop_ms());
  }
  return {median(ms), runs, 1, false};
}

// Times `call(set)` by CUDA-graph replays: eager warm-up, a few eager calls to size the graph,
// capture of R calls over the sets in order, kGraphWarmup untimed replays, then `iters` timed
// replays. Returns the median replay time / R.
Timing time_graph(const std::function<void(int)>& call, int sets, int iters, const Stream& stream) {
  for (int i = 0; i < kCudaWarmup; ++i) call(i % sets);  // also loads the kernels before capture
  synchronize(stream);
  std::vector<double> est;
  {
    CallTimer timer(stream);
    for (int i = 0; i < kEstimateCalls; ++i) {
      timer.start();
      call((kCudaWarmup + i) % sets);
      est.push_back(timer.stop_ms());
    }
  }
  // Eager times include launch overhead, so R errs on the small side for the slowest calls only.
  int calls = static_cast<int>(std::clamp(std::floor(kGraphBudgetMs / std::max(median(est), 1e-4)), 1.0,
                                          double(kGraphCalls)));
  // Whole rotations: every replay touches each set equally, and consecutive calls, across the
  // replay boundary too, never reuse the set just written. Not for a call so slow (a naive kernel
  // on a long, narrow shape) that a rotation would take long; its time hardly depends on L2.
  const int rotated = (calls + sets - 1) / sets * sets;
  if (sets > 1 && rotated * median(est) <= kGraphMaxReplayMs) calls = rotated;
  GraphTimer graph(stream, [&](int j) { call(j % sets); }, calls);
  for (int i = 0; i < kGraphWarmup; ++i) graph.replay();
  std::vector<double> ms;
  ms.reserve(static_cast<std::size_t>(iters));
  for (int i = 0; i < iters; ++i) ms.push_back(graph.replay_ms() / calls);
  return {median(ms), iters, calls, true};
}

// "805.3 MB", "16.4 kB": decimal units, as the GB/s column.
std::string bytes_str(double bytes) {
  if (bytes >= 1e9) return format("%.2f GB", bytes / 1e9);
  if (bytes >= 1e6) return format("%.1f MB", bytes / 1e6);
  if (bytes >= 1e3) return format("%.1f kB", bytes / 1e3);
  return format("%.0f B", bytes);
}

// A CSV field, quoted when it holds a separator or a quote.
std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char ch : s) out += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return out + "\"";
}

}  // namespace

int run_bench(const BenchOptions& o) {
  const Device device = resolve_device(o.device);
  const bool cuda = device.is_cuda();
  const DType dtype = o.dtype ? parse_dtype(*o.dtype) : (cuda ? DType::bf16 : DType::f32);
  const DType wdtype = dtype;  // weights and bias in the activation dtype, as models usually keep them
  const std::int64_t B = o.batch.value_or(cuda ? 4 : 1);
  const std::int64_t T = o.seqlen.value_or(cuda ? 4096 : 65536);
  const std::int64_t C = o.channels.value_or(cuda ? 4096 : 1024);
  const std::int64_t K = o.width.value_or(4);
  check_shape_size("bench", B, T, C, K);

  // Open the CSV first so that an unwritable path fails before minutes of benchmarking.
  std::ofstream csv;
  if (o.csv) {
    std::error_code ec;
    const bool is_new = !std::filesystem::exists(*o.csv, ec) || std::filesystem::file_size(*o.csv, ec) == 0;
    if (!is_new) {
      // Appending rows under another header (an older tool's) would shift every column.
      std::ifstream in(*o.csv);
      std::string header;
      std::getline(in, header);
      if (!header.empty() && header.back() == '\r') header.pop_back();
      if (header != kCsvHeader)
        throw InvalidArgument("bench: '" + *o.csv + "' has the header '" + header + "', not '" + kCsvHeader +
                              "'; use a new file");
    }
    csv.open(*o.csv, std::ios::app);
    if (!csv) throw InvalidArgument("bench: cannot open '" + *o.csv + "' for appending");
    if (is_new) csv << kCsvHeader << '\n';
  }

  make_current(device);
  const std::string device_desc = describe_device(device);
  const CopyBandwidth copy = measure_copy_bandwidth(device);

  const std::int64_t act_bytes = B * T * C * static_cast<std::int64_t>(dtype_size(dtype));  // one [B, T, C]
  const double set_bytes = 4.0 * static_cast<double>(act_bytes);
  const int sets = set_bytes >= kRotateBelowBytes
                       ? 1
                       : static_cast<int>(std::clamp(std::ceil(kRotateSpanBytes / set_bytes), 2.0, double(kMaxSets)));

  std::vector<BufferSet> bufs;
  bufs.reserve(static_cast<std::size_t>(sets));
  for (int i = 0; i < sets; ++i) {
    BufferSet set{Tensor(dtype, {B, T, C}, device), Tensor(dtype, {B, T, C}, device), Tensor(dtype, {B, T, C}, device),
                  Tensor(dtype, {B, T, C}, device)};
    fill_random(set.x, 2 * static_cast<std::uint64_t>(i) + 1);
    fill_random(set.dy, 2 * static_cast<std::uint64_t>(i) + 2);
    bufs.push_back(std::move(set));
  }
  Tensor w(wdtype, {C, K}, device), bias(wdtype, {C}, device), dw(wdtype, {C, K}, device), db(wdtype, {C}, device);
  fill_random(w, 1000);
  fill_random(bias, 1001);
  synchronize(default_stream(device));  // the timed calls run on a non-blocking stream

  const OwnedStream owned(device);  // a CUDA stream; on the CPU just {cpu, null}
  const Stream& stream = owned.get();

  const double fwd_bytes = 2.0 * static_cast<double>(act_bytes);  // read x, write y
  const double bwd_bytes = 3.0 * static_cast<double>(act_bytes);  // read x and dy, write dx
  const auto floor_ms = [&](double bytes) { return bytes / (copy.gbps * 1e6); };  // GB/s = 1e6 bytes per ms
  const bool use_graph = cuda && o.graph;

  // One summary line (device, dtype, shape, copy bandwidth), then how each number was obtained.
  std::printf("shortconv bench: %s | %s (weights %s) | B=%lld T=%lld C=%lld K=%lld | copy %.1f GB/s\n",
              device_desc.c_str(), std::string(dtype_name(dtype)).c_str(), std::string(dtype_name(wdtype)).c_str(),
              static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(C),
              static_cast<long long>(K), copy.gbps);
  std::printf("  copy    %s, median of %d\n", copy.method.c_str(), copy.runs);
  std::printf("  bytes   forward x + y = %s; backward x + dy + dx = %s (weights ignored); %d buffer set%s\n",
              bytes_str(fwd_bytes).c_str(), bytes_str(bwd_bytes).c_str(), sets, sets == 1 ? "" : "s, rotated");
  std::printf("  floor   bytes at the copy bandwidth: forward %.4f ms, backward %.4f ms\n", floor_ms(fwd_bytes),
              floor_ms(bwd_bytes));
  std::printf("  timing  median after warm-up; %s\n",
              use_graph ? "CUDA graph of R calls on a non-blocking stream, events around each replay, "
                          "time per call = replay / R (host launch overhead excluded)"
              : cuda    ? "CUDA events around each call on a non-blocking stream (host launch overhead included)"
                        : "steady_clock around each call; runs capped at ~3 s per row, at least 1");
  std::fflush(stdout);

  std::vector<Result> results;
  for (const Variant variant : {Variant::fast, Variant::naive}) {
    const char* vname = variant == Variant::fast ? "fast" : "naive";
    // The plain op: fields are set one by one, so options added to the args structs later keep
    // their defaults without -Wmissing-field-initializers noise.
    auto fwd = [&](int s) {
      Conv1dForwardArgs a;
      a.x = bufs[s].x;
      a.weight = w;
      a.bias = bias.view();
      a.y = bufs[s].y;
      a.variant = variant;
      conv1d_forward(a, stream);
    };
    auto bwd = [&](int s) {
      Conv1dBackwardArgs a;
      a.x = bufs[s].x;
      a.weight = w;
      a.dy = bufs[s].dy;
      a.dx = bufs[s].dx.view();
      a.dweight = dw.view();
      a.dbias = db.view();
      a.variant = variant;
      conv1d_backward(a, stream);
    };
    for (const auto& [op, call, bytes] : {std::tuple{"forward", std::function<void(int)>(fwd), fwd_bytes},
                                          std::tuple{"backward", std::function<void(int)>(bwd), bwd_bytes}}) {
      Timing t;
      if (use_graph) {
        try {
          t = time_graph(call, sets, o.iters, stream);
        } catch (const DeviceError& e) {
          // A failed capture leaves the stream usable (GraphTimer ends it); time this row per call.
          std::fprintf(stderr, "shortconv bench: warning: %s %s: graph timing failed (%s); timing each call\n", op,
                       vname, e.what());
          t = time_each_call(call, sets, o.iters, stream);
        }
      } else {
        t = time_each_call(call, sets, o.iters, stream);
      }
      const double gbps = bytes / (t.ms * 1e6);
      results.push_back({op, vname, t.runs, t.calls, t.graph, t.ms, gbps, 100.0 * gbps / copy.gbps, floor_ms(bytes)});
    }
  }
  // Forward rows first, then backward, each fast then naive.
  std::stable_sort(results.begin(), results.end(),
                   [](const Result& a, const Result& b) { return std::string(a.op) > std::string(b.op); });

  std::printf("\n%-9s %-7s %5s %12s %10s %10s %11s\n", "op", "variant", "runs", "median ms", "GB/s", "% of floor",
              "naive/fast");
  for (const Result& r : results) {
    std::string ratio;
    if (std::string(r.variant) == "naive") {
      for (const Result& f : results)
        if (std::string(f.op) == r.op && std::string(f.variant) == "fast") ratio = format("%.2fx", r.ms / f.ms);
    }
    std::string line =
        format("%-9s %-7s %5d %12.4f %10.2f %9.1f%% %11s", r.op, r.variant, r.runs, r.ms, r.gbps, r.pct, ratio.c_str());
    line.erase(line.find_last_not_of(' ') + 1);
    std::printf("%s\n", line.c_str());
    if (csv) {
      csv << csv_field(device_desc) << ',' << dtype_name(dtype) << ',' << B << ',' << T << ',' << C << ',' << K << ','
          << r.op << ',' << r.variant << ','
          << format("%.6g,%.6g,%.4g,%.6g,%.6g", r.ms, r.gbps, r.pct, copy.gbps, r.floor_ms) << '\n';
    }
  }
  if (use_graph) {
    // R per row: the runs column counts replays; a row whose capture failed was timed per call.
    std::string note;
    for (const Result& r : results)
      note += format("%s%s %s %s", note.empty() ? "" : ", ", r.op, r.variant,
                     r.graph ? std::to_string(r.calls).c_str() : "per call (capture failed)");
    std::printf("\n  graph   calls per replay: %s\n", note.c_str());
  }
  if (csv) {
    csv.flush();
    if (!csv) throw InvalidArgument("bench: failed writing '" + *o.csv + "'");
  }
  std::fflush(stdout);
  return 0;
}

}  // namespace shortconv::tool
