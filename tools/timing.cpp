// Per-call timers and copy-bandwidth probes for the CPU and, when built with it, CUDA, plus the
// CUDA-graph replay timer.
//
// CPU copy: one 256 MiB buffer copied by all OpenMP threads, each memcpy-ing its own contiguous
// slice (first-touched by the same thread). CUDA copy: a 1 GiB cudaMemcpyAsync device-to-device
// timed with events. Both count bytes read + bytes written and report the median of several runs.
//
// GraphTimer captures in cudaStreamCaptureModeThreadLocal: the tool makes every CUDA call from one
// thread, so thread-local mode still rejects an unsafe call (a synchronous cudaMalloc, a
// cudaMemcpy) made by the op during capture, without tripping over unrelated threads. The
// library's backward allocates its workspace with cudaMallocAsync / cudaFreeAsync, which capture
// as graph memory nodes.
#include "timing.hpp"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#if SHORTCONV_TOOL_CUDA
#include <cuda_runtime_api.h>
#endif

namespace shortconv::tool {
namespace {

constexpr int kCopyRuns = 7;  // timed copies after one warm-up; the median is reported

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Memory from device_alloc, freed on scope exit.
class Buffer {
 public:
  Buffer(Device device, std::size_t nbytes) : device_(device), data_(device_alloc(device, nbytes)) {}
  ~Buffer() { device_free(device_, data_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void* data() const noexcept { return data_; }
  char* bytes() const noexcept { return static_cast<char*>(data_); }

 private:
  Device device_;
  void* data_;
};

// Byte range [lo, hi) of thread `tid` of `threads` over `nbytes`, in 4 KiB pages.
std::pair<std::size_t, std::size_t> thread_slice(std::size_t nbytes, int tid, int threads) {
  constexpr std::size_t kPage = 4096;
  const std::size_t pages = (nbytes + kPage - 1) / kPage;
  const std::size_t per = (pages + static_cast<std::size_t>(threads) - 1) / static_cast<std::size_t>(threads);
  const std::size_t lo = std::min(nbytes, per * kPage * static_cast<std::size_t>(tid));
  const std::size_t hi = std::min(nbytes, lo + per * kPage);
  return {lo, hi};
}

CopyBandwidth cpu_copy_bandwidth() {
  constexpr std::size_t kBytes = std::size_t{256} << 20;
  Buffer src(Device::cpu(), kBytes), dst(Device::cpu(), kBytes);
#pragma omp parallel
  {
    const auto [lo, hi] = thread_slice(kBytes, omp_get_thread_num(), omp_get_num_threads());
    std::memset(src.bytes() + lo, 0x5a, hi - lo);  // first touch by the thread that copies it
    std::memset(dst.bytes() + lo, 0, hi - lo);
  }
  std::vector<double> gbps;
  for (int run = 0; run <= kCopyRuns; ++run) {
    const std::int64_t t0 = now_ns();
#pragma omp parallel
    {
      const auto [lo, hi] = thread_slice(kBytes, omp_get_thread_num(), omp_get_num_threads());
      std::memcpy(dst.bytes() + lo, src.bytes() + lo, hi - lo);
    }
    const std::int64_t t1 = now_ns();
    const double ns = static_cast<double>(std::max<std::int64_t>(t1 - t0, 1));
    if (run > 0) gbps.push_back(2.0 * static_cast<double>(kBytes) / ns);  // bytes per ns = GB/s
  }
  return {median(gbps), static_cast<std::int64_t>(kBytes),
          "memcpy of 256 MiB split over " + std::to_string(omp_get_max_threads()) + " threads, read+write", kCopyRuns};
}

#if SHORTCONV_TOOL_CUDA
void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw DeviceError(std::string("shortconv bench: ") + what + " failed: " + cudaGetErrorString(err));
  }
}

CopyBandwidth cuda_copy_bandwidth(Device device) {
  constexpr std::size_t kBytes = std::size_t{1} << 30;
  make_current(device);
  Buffer src(device, kBytes), dst(device, kBytes);
  check_cuda(cudaMemset(src.data(), 0x5a, kBytes), "cudaMemset");
  check_cuda(cudaMemset(dst.data(), 0, kBytes), "cudaMemset");
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");  // the copies run on a non-blocking stream
  const OwnedStream stream(device);
  const auto s = static_cast<cudaStream_t>(stream.get().handle);
  CallTimer timer(stream.get());
  std::vector<double> gbps;
  for (int run = 0; run <= kCopyRuns; ++run) {
    timer.start();
    check_cuda(cudaMemcpyAsync(dst.data(), src.data(), kBytes, cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync");
    const double ms = timer.stop_ms();
    if (run > 0) gbps.push_back(2.0 * static_cast<double>(kBytes) / (ms * 1e6));
  }
  return {median(gbps), static_cast<std::int64_t>(kBytes), "cudaMemcpyAsync D2D of 1 GiB, read+write", kCopyRuns};
}
#endif

}  // namespace

CopyBandwidth measure_copy_bandwidth(Device device) {
#if SHORTCONV_TOOL_CUDA
  if (device.is_cuda()) return cuda_copy_bandwidth(device);
#endif
  if (device.is_cuda()) throw Unsupported("shortconv bench: this tool was built without CUDA");
  return cpu_copy_bandwidth();
}

std::string cuda_device_name(int index) {
#if SHORTCONV_TOOL_CUDA
  cudaDeviceProp prop{};
  check_cuda(cudaGetDeviceProperties(&prop, index), "cudaGetDeviceProperties");
  return prop.name;
#else
  (void)index;
  throw Unsupported("shortconv: this tool was built without CUDA");
#endif
}

void make_current(Device device) {
#if SHORTCONV_TOOL_CUDA
  if (device.is_cuda()) check_cuda(cudaSetDevice(device.index), "cudaSetDevice");
#else
  if (device.is_cuda()) throw Unsupported("shortconv: this tool was built without CUDA");
#endif
}

CallTimer::CallTimer(const Stream& stream) : stream_(stream) {
#if SHORTCONV_TOOL_CUDA
  if (stream_.device.is_cuda()) {
    make_current(stream_.device);
    cudaEvent_t a = nullptr, b = nullptr;
    check_cuda(cudaEventCreate(&a), "cudaEventCreate");
    start_event_ = a;
    check_cuda(cudaEventCreate(&b), "cudaEventCreate");
    stop_event_ = b;
  }
#else
  if (stream_.device.is_cuda()) throw Unsupported("shortconv: this tool was built without CUDA");
#endif
}

CallTimer::~CallTimer() {
#if SHORTCONV_TOOL_CUDA
  if (start_event_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(start_event_));
  if (stop_event_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(stop_event_));
#endif
}

void CallTimer::start() {
#if SHORTCONV_TOOL_CUDA
  if (stream_.device.is_cuda()) {
    check_cuda(cudaEventRecord(static_cast<cudaEvent_t>(start_event_), static_cast<cudaStream_t>(stream_.handle)),
               "cudaEventRecord");
    return;
  }
#endif
  start_ns_ = now_ns();
}

double CallTimer::stop_ms() {
#if SHORTCONV_TOOL_CUDA
  if (stream_.device.is_cuda()) {
    const auto stop = static_cast<cudaEvent_t>(stop_event_);
    check_cuda(cudaEventRecord(stop, static_cast<cudaStream_t>(stream_.handle)), "cudaEventRecord");
    check_cuda(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0.0f;
    check_cuda(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start_event_), stop), "cudaEventElapsedTime");
    return ms;
  }
#endif
  return static_cast<double>(now_ns() - start_ns_) * 1e-6;
}

GraphTimer::GraphTimer(const Stream& stream, const std::function<void(int)>& call, int calls)
    : stream_(stream), calls_(calls), timer_(stream) {
#if SHORTCONV_TOOL_CUDA
  if (!stream.device.is_cuda() || stream.handle == nullptr)
    throw InvalidArgument("shortconv bench: graph timing needs a non-default CUDA stream, got " + stream.device.str());
  if (calls < 1) throw InvalidArgument("shortconv bench: graph timing needs at least one call");
  make_current(stream.device);
  const auto s = static_cast<cudaStream_t>(stream.handle);
  check_cuda(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
  cudaGraph_t graph = nullptr;
  try {
    for (int i = 0; i < calls; ++i) call(i);
  } catch (...) {
    // Leave capture mode whatever happened, so the stream stays usable; drop the partial graph.
    if (cudaStreamEndCapture(s, &graph) == cudaSuccess && graph != nullptr) cudaGraphDestroy(graph);
    cudaGetLastError();
    throw;
  }
  check_cuda(cudaStreamEndCapture(s, &graph), "cudaStreamEndCapture");
  cudaGraphExec_t exec = nullptr;
  const cudaError_t err = cudaGraphInstantiateWithFlags(&exec, graph, 0);  // same signature on CUDA 11.4+ and 12+
  if (err != cudaSuccess) {
    cudaGraphDestroy(graph);
    check_cuda(err, "cudaGraphInstantiateWithFlags");
  }
  graph_ = graph;
  exec_ = exec;
#else
  (void)call;
  throw Unsupported("shortconv: this tool was built without CUDA");
#endif
}

GraphTimer::~GraphTimer() {
#if SHORTCONV_TOOL_CUDA
  // Replays are synchronised before they return, so nothing is in flight here.
  if (exec_ != nullptr) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
  if (graph_ != nullptr) cudaGraphDestroy(static_cast<cudaGraph_t>(graph_));
#endif
}

void GraphTimer::launch() {
#if SHORTCONV_TOOL_CUDA
  check_cuda(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), static_cast<cudaStream_t>(stream_.handle)),
             "cudaGraphLaunch");
#endif
}

void GraphTimer::replay() {
  launch();
  synchronize(stream_);
}

double GraphTimer::replay_ms() {
  timer_.start();
  launch();
  return timer_.stop_ms();
}

}  // namespace shortconv::tool
