// `shortconv bench`: times forward and backward for Variant::fast and Variant::naive (or, with
// --decode, the decode step conv1d_update) and reports them against the copy bandwidth measured on
// the same device in the same run.
//
// Features (--silu, --bias, --state, --varlen N, --decode) change the op that is timed; the naive
// variant runs the plain op only (a bias is fine), so with any other feature its rows are skipped.
//
// Bytes are the floor traffic in decimal GB: forward reads x and writes y; backward reads x and dy
// and writes dx (weights, bias, dweight, dbias and the [N, K-1, C] states ignored: they are small);
// varlen counts its total tokens, B*T. Decode reads and writes the state of each row and reads x
// and writes y: (2*B*(K-1)*C + 2*B*T*C) elements, the padding row counted as if it were real. The
// floor time is those bytes at the measured copy bandwidth; "% of floor" = floor time / measured
// time (= GB/s as % of the copy).
//
// Times are medians after warm-up. CPU: steady_clock around each call. CUDA (default): R calls
// (R = 20, fewer for slow calls, whole rotations of the buffer sets) are captured into one CUDA
// graph on the tool's non-blocking stream; each replay is timed with a pair of events and the time
// per call is replay / R, so host launch overhead is not counted. CUDA with --no-graph: a pair of
// events around each call, launch overhead included.
// When one buffer set (x, y, dy, dx; for decode x, y and the conv_state) fits in 50 MB, calls
// rotate over enough sets to span 100 MB, so timings do not come from a warm L2; a graph captures
// the same rotation. The small states, cu_seqlens and state indices are shared by all sets.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <numeric>
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
// New columns go at the end, so scripts reading columns by name or by position keep working.
constexpr const char* kCsvHeader = "device,dtype,B,T,C,K,op,variant,ms,GBps,pct_copy,copy_GBps,floor_ms,features";
constexpr const char* kCsvHeaderV1 = "device,dtype,B,T,C,K,op,variant,ms,GBps,pct_copy,copy_GBps,floor_ms";
constexpr int kCudaWarmup = 3;
constexpr double kCpuBudgetMs = 3000.0;  // per op and variant; slow CPU runs get fewer iterations
constexpr int kGraphCalls = 20;          // calls captured per graph (before rounding to whole rotations)
constexpr double kGraphBudgetMs = 20.0;  // slow calls get fewer per graph, at least 1
constexpr double kGraphMaxReplayMs = 200.0;  // cap on a replay grown to whole rotations of the sets
constexpr int kGraphWarmup = 2;          // untimed replays after instantiation
constexpr int kEstimateCalls = 3;        // eager calls timed one by one to size the graph
constexpr std::uint64_t kLayoutSeed = 0;  // varlen lengths and decode slots: the same every run

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
  Tensor x, dy, y, dx;  // [B, T, C] or, varlen, [B*T, C]; decode: x and y [B, T_new, C] only
  Tensor conv_state;    // decode: [B, K-1, C], updated in place by every call
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
  const Features& f = o.features;
  if (f.decode && (f.state || f.varlen > 0))
    throw InvalidArgument("bench: --decode always reads and updates a conv_state; --state and --varlen are for "
                          "forward and backward");
  const DType dtype = o.dtype ? parse_dtype(*o.dtype) : (cuda ? DType::bf16 : DType::f32);
  if (!is_floating(dtype))
    throw InvalidArgument("bench: --dtype " + *o.dtype + " is an index type; activations take f32, bf16 or f16");
  const DType wdtype = dtype;  // weights and bias in the activation dtype, as models usually keep them
  // Decode defaults are serving shapes: one new token for many rows, wide channels.
  const std::int64_t B = o.batch.value_or(f.decode ? (cuda ? 256 : 64) : (cuda ? 4 : 1));
  const std::int64_t T = o.seqlen.value_or(f.decode ? 1 : (cuda ? 4096 : 65536));
  const std::int64_t C = o.channels.value_or(f.decode ? (cuda ? 8192 : 4096) : (cuda ? 4096 : 1024));
  const std::int64_t K = o.width.value_or(4);
  check_shape_size("bench", B, T, C, K);
  const std::int64_t total = B * T;  // tokens
  const std::vector<std::int64_t> lengths = f.varlen > 0 ? varlen_lengths(total, f.varlen, K, kLayoutSeed)
                                                         : std::vector<std::int64_t>{};
  const std::int64_t N = f.varlen > 0 ? f.varlen : B;  // sequences, the first dimension of the states
  const DType cu_dtype = total <= std::numeric_limits<std::int32_t>::max() ? DType::i32 : DType::i64;

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
      if (header == kCsvHeaderV1)
        throw InvalidArgument("bench: '" + *o.csv + "' was written by an older shortconv (no features column); "
                              "use a new file");
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

  const auto elem = static_cast<std::int64_t>(dtype_size(dtype));
  const std::int64_t act_bytes = total * C * elem;            // one [B, T, C] (or [B*T, C])
  const std::int64_t state_bytes = B * (K - 1) * C * elem;    // decode: one conv_state of B slots
  const double set_bytes = f.decode ? 2.0 * static_cast<double>(act_bytes) + static_cast<double>(state_bytes)
                                    : 4.0 * static_cast<double>(act_bytes);
  const int sets = set_bytes >= kRotateBelowBytes
                       ? 1
                       : static_cast<int>(std::clamp(std::ceil(kRotateSpanBytes / set_bytes), 2.0, double(kMaxSets)));
  const std::vector<std::int64_t> act_shape =
      f.varlen > 0 ? std::vector<std::int64_t>{total, C} : std::vector<std::int64_t>{B, T, C};
  const std::span<const std::int64_t> act(act_shape);

  std::vector<BufferSet> bufs;
  bufs.reserve(static_cast<std::size_t>(sets));
  for (int i = 0; i < sets; ++i) {
    BufferSet set;
    set.x = Tensor(dtype, act, device);
    set.y = Tensor(dtype, act, device);
    fill_random(set.x, 2 * static_cast<std::uint64_t>(i) + 1);
    if (f.decode) {
      set.conv_state = Tensor(dtype, {B, K - 1, C}, device);
      fill_random(set.conv_state, 2 * static_cast<std::uint64_t>(i) + 2);
    } else {
      set.dy = Tensor(dtype, act, device);
      set.dx = Tensor(dtype, act, device);
      fill_random(set.dy, 2 * static_cast<std::uint64_t>(i) + 2);
    }
    bufs.push_back(std::move(set));
  }
  Tensor w(wdtype, {C, K}, device), bias(wdtype, {C}, device), dw(wdtype, {C, K}, device), db(wdtype, {C}, device);
  fill_random(w, 1000);
  fill_random(bias, 1001);
  // Shared by every set: states [N, K-1, C] (small next to x), cu_seqlens, decode slots.
  Tensor init, fin, dfin, dinit, cu, slots;
  if (f.state) {
    init = Tensor(dtype, {N, K - 1, C}, device);
    fin = Tensor(dtype, {N, K - 1, C}, device);
    dfin = Tensor(dtype, {N, K - 1, C}, device);
    dinit = Tensor(dtype, {N, K - 1, C}, device);
    fill_random(init, 1002);
    fill_random(dfin, 1003);
  }
  if (f.varlen > 0) {
    std::vector<std::int64_t> offsets(lengths.size() + 1, 0);
    std::partial_sum(lengths.begin(), lengths.end(), offsets.begin() + 1);
    cu = index_tensor(offsets, cu_dtype, device);
  }
  const std::vector<std::int64_t> slot_list = f.decode ? decode_slots(B, kLayoutSeed) : std::vector<std::int64_t>{};
  if (f.decode) slots = index_tensor(slot_list, DType::i32, device);
  synchronize(default_stream(device));  // the timed calls run on a non-blocking stream

  const OwnedStream owned(device);  // a CUDA stream; on the CPU just {cpu, null}
  const Stream& stream = owned.get();

  const double fwd_bytes = 2.0 * static_cast<double>(act_bytes);  // read x, write y
  const double bwd_bytes = 3.0 * static_cast<double>(act_bytes);  // read x and dy, write dx
  const double dec_bytes = 2.0 * static_cast<double>(state_bytes + act_bytes);  // state read + write, x, y
  const auto floor_ms = [&](double bytes) { return bytes / (copy.gbps * 1e6); };  // GB/s = 1e6 bytes per ms
  const bool use_graph = cuda && o.graph;
  const bool run_naive = f.plain();
  const std::string features = f.str();

  // One summary line (device, dtype, shape, features, copy bandwidth), then how each number was obtained.
  std::printf("shortconv bench: %s | %s (weights %s) | B=%lld T=%lld C=%lld K=%lld | features %s | copy %.1f GB/s\n",
              device_desc.c_str(), std::string(dtype_name(dtype)).c_str(), std::string(dtype_name(wdtype)).c_str(),
              static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(C),
              static_cast<long long>(K), features.c_str(), copy.gbps);
  std::printf("  copy    %s, median of %d\n", copy.method.c_str(), copy.runs);
  if (f.varlen > 0) {
    const auto [lo, hi] = std::minmax_element(lengths.begin(), lengths.end());
    std::printf("  varlen  x [%lld, C]: %lld sequences of %lld to %lld tokens (fixed seed), cu_seqlens %s\n",
                static_cast<long long>(total), static_cast<long long>(N), static_cast<long long>(*lo),
                static_cast<long long>(*hi), std::string(dtype_name(cu_dtype)).c_str());
  }
  if (f.decode) {
    std::printf("  decode  x [B, T_new, C] = [%lld, %lld, %lld], conv_state [%lld, %lld, %lld] updated in place, "
                "state_indices i32: a permutation of the slots%s\n",
                static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(C),
                static_cast<long long>(B), static_cast<long long>(K - 1), static_cast<long long>(C),
                B >= 2 ? " with one -1 padding row" : "");
    std::printf("  bytes   state read + write + x + y = (2*B*(K-1)*C + 2*B*T*C) * %lld = %s (weights ignored); "
                "%d buffer set%s\n",
                static_cast<long long>(elem), bytes_str(dec_bytes).c_str(), sets, sets == 1 ? "" : "s, rotated");
    std::printf("  floor   bytes at the copy bandwidth: decode %.4f ms\n", floor_ms(dec_bytes));
  } else {
    std::printf("  bytes   forward x + y = %s; backward x + dy + dx = %s (weights%s ignored); %d buffer set%s\n",
                bytes_str(fwd_bytes).c_str(), bytes_str(bwd_bytes).c_str(), f.state ? " and states" : "", sets,
                sets == 1 ? "" : "s, rotated");
    std::printf("  floor   bytes at the copy bandwidth: forward %.4f ms, backward %.4f ms\n", floor_ms(fwd_bytes),
                floor_ms(bwd_bytes));
  }
  std::printf("  timing  median after warm-up; %s\n",
              use_graph ? "CUDA graph of R calls on a non-blocking stream, events around each replay, "
                          "time per call = replay / R (host launch overhead excluded)"
              : cuda    ? "CUDA events around each call on a non-blocking stream (host launch overhead included)"
                        : "steady_clock around each call; runs capped at ~3 s per row, at least 1");
  if (!run_naive) std::printf("  naive   n/a (plain op only)\n");
  std::fflush(stdout);

  const Activation act_fn = f.silu ? Activation::silu : Activation::none;
  std::vector<Result> results;
  std::vector<Variant> variants{Variant::fast};
  if (run_naive) variants.push_back(Variant::naive);
  for (const Variant variant : variants) {
    const char* vname = variant == Variant::fast ? "fast" : "naive";
    // Fields are set one by one, so options added to the args structs later keep their defaults
    // without -Wmissing-field-initializers noise.
    auto fwd = [&](int s) {
      Conv1dForwardArgs a;
      a.x = bufs[s].x;
      a.weight = w;
      if (f.bias) a.bias = bias.view();
      a.y = bufs[s].y;
      a.activation = act_fn;
      if (f.state) {
        a.initial_state = init.view();
        a.final_state = fin.view();
      }
      if (f.varlen > 0) a.cu_seqlens = cu.view();
      a.variant = variant;
      a.tensor_cores = f.tensor_cores;
      conv1d_forward(a, stream);
    };
    auto bwd = [&](int s) {
      Conv1dBackwardArgs a;
      a.x = bufs[s].x;
      a.weight = w;
      if (f.bias) a.bias = bias.view();  // needed to recompute z under silu
      a.dy = bufs[s].dy;
      a.activation = act_fn;
      if (f.state) {
        a.initial_state = init.view();
        a.d_final_state = dfin.view();
        a.d_initial_state = dinit.view();
      }
      if (f.varlen > 0) a.cu_seqlens = cu.view();
      a.dx = bufs[s].dx.view();
      a.dweight = dw.view();
      if (f.bias) a.dbias = db.view();
      a.variant = variant;
      a.tensor_cores = f.tensor_cores;
      conv1d_backward(a, stream);
    };
    auto upd = [&](int s) {
      Conv1dUpdateArgs a;
      a.x = bufs[s].x;
      a.conv_state = bufs[s].conv_state;
      a.weight = w;
      if (f.bias) a.bias = bias.view();
      a.y = bufs[s].y;
      a.activation = act_fn;
      a.state_indices = slots.view();
      conv1d_update(a, stream);
    };
    using Row = std::tuple<const char*, std::function<void(int)>, double>;
    const std::vector<Row> rows =
        f.decode ? std::vector<Row>{Row{"decode", upd, dec_bytes}}
                 : std::vector<Row>{Row{"forward", fwd, fwd_bytes}, Row{"backward", bwd, bwd_bytes}};
    for (const auto& [op, call, bytes] : rows) {
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
      for (const Result& fr : results)
        if (std::string(fr.op) == r.op && std::string(fr.variant) == "fast") ratio = format("%.2fx", r.ms / fr.ms);
    }
    std::string line =
        format("%-9s %-7s %5d %12.4f %10.2f %9.1f%% %11s", r.op, r.variant, r.runs, r.ms, r.gbps, r.pct, ratio.c_str());
    line.erase(line.find_last_not_of(' ') + 1);
    std::printf("%s\n", line.c_str());
    if (csv) {
      csv << csv_field(device_desc) << ',' << dtype_name(dtype) << ',' << B << ',' << T << ',' << C << ',' << K << ','
          << r.op << ',' << r.variant << ','
          << format("%.6g,%.6g,%.4g,%.6g,%.6g", r.ms, r.gbps, r.pct, copy.gbps, r.floor_ms) << ','
          << csv_field(features) << '\n';
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
