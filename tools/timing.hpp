// Device-side measurement for `shortconv bench`: per-call timers, CUDA-graph replay timers and the
// copy-bandwidth probe. The CUDA implementations live behind SHORTCONV_TOOL_CUDA in timing.cpp;
// callers never include CUDA headers.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "shortconv/shortconv.hpp"

namespace shortconv::tool {

/// Measured bandwidth of a plain copy on one device, counting bytes read plus bytes written.
struct CopyBandwidth {
  double gbps = 0.0;              // decimal GB/s, median over the runs
  std::int64_t buffer_bytes = 0;  // size of the copied buffer
  std::string method;             // how it was measured, for the report header
  int runs = 0;                   // timed copies behind the median
};

/// Copies a large buffer a few times on `device` and returns the median bandwidth.
CopyBandwidth measure_copy_bandwidth(Device device);

/// Name of a CUDA device from cudaGetDeviceProperties; throws Unsupported without CUDA.
std::string cuda_device_name(int index);

/// Makes `device` current for the calling thread (CUDA only; a no-op on the CPU).
void make_current(Device device);

/// Times one call at a time: steady_clock on the CPU, a pair of CUDA events on `stream`.
class CallTimer {
 public:
  explicit CallTimer(const Stream& stream);
  ~CallTimer();
  CallTimer(const CallTimer&) = delete;
  CallTimer& operator=(const CallTimer&) = delete;

  /// Marks the start of the call (enqueues an event on CUDA).
  void start();
  /// Marks the end, waits for the device and returns the elapsed milliseconds.
  double stop_ms();

 private:
  Stream stream_;
  std::int64_t start_ns_ = 0;    // CPU
  void* start_event_ = nullptr;  // cudaEvent_t
  void* stop_event_ = nullptr;   // cudaEvent_t
};

/// A CUDA graph of `calls` back-to-back calls, captured once and replayed between two events, so
/// that host launch overhead drops out of the timing (the calls inside a replay are launched by
/// the device, one after another, as a busy stream would run them).
class GraphTimer {
 public:
  /// Captures call(0), ..., call(calls - 1) on `stream` (a non-default CUDA stream) and
  /// instantiates the graph. `call` must only enqueue work: no synchronisation, no host reads.
  /// Throws DeviceError when capture or instantiation fails (the stream is then out of capture
  /// mode again), InvalidArgument for a CPU or default stream, Unsupported without CUDA.
  GraphTimer(const Stream& stream, const std::function<void(int)>& call, int calls);
  ~GraphTimer();
  GraphTimer(const GraphTimer&) = delete;
  GraphTimer& operator=(const GraphTimer&) = delete;

  int calls() const noexcept { return calls_; }
  /// Launches the graph once and waits for it (warm-up).
  void replay();
  /// Launches the graph once between two events, waits, and returns the milliseconds of the
  /// whole replay (divide by calls() for the time per call).
  double replay_ms();

 private:
  void launch();

  Stream stream_;
  int calls_ = 0;
  CallTimer timer_;
  void* graph_ = nullptr;  // cudaGraph_t
  void* exec_ = nullptr;   // cudaGraphExec_t
};

}  // namespace shortconv::tool
