// Reverse-mode automatic differentiation over shortconv's conv1d and a few dense ops: enough to
// train a short-conv mixer block without a framework, on the CPU or one GPU.
//
//   Tape tape(device, stream);                      // bound to a device and a stream
//   Parameter w_in("w_in", {C, D}, device), w_conv("w_conv", {C, K}, device);
//   AdamW opt({&w_in, &w_conv}, {.lr = 1e-3f}, tape.stream());
//   for (int step = 0; step < steps; ++step) {
//     Var x = tape.randn({B, T, D}, seed + step);   // [B, T, D], drawn on the device
//     Var y = conv1d(linear(x, tape.param(w_in)), tape.param(w_conv), {.activation = Activation::silu});
//     Var loss = mse_loss(y, target);
//     tape.backward(loss);                          // w_in.grad(), w_conv.grad() = dloss/dw
//     opt.step();
//     tape.reset();                                 // drop the graph; its memory serves the next step
//   }
//
// Values are f32 and contiguous, on the tape's device. Ops run eagerly, in stream order, as they
// are recorded; the tape keeps what backward needs (the op, its inputs, their values).
// backward() enqueues every gradient kernel on the tape's stream with no synchronisation and no
// device-to-host copy, so on CUDA it returns before the GPU finishes (and can be captured into a
// CUDA graph). Gradients of a Var used more than once add up.
//
// Memory: activations, gradients and scratch come from a caching allocator owned by the tape (a
// free list per size bucket). reset() returns every block to the free lists, so a step that
// repeats the previous step's shapes allocates nothing from the device; allocator_stats() counts
// device allocations so that this can be checked. CUDA blocks come from cudaMallocAsync on the
// tape's stream and go back with cudaFreeAsync when the tape is destroyed or release_cached() is
// called: the stream must outlive the tape. (conv1d_backward's own small workspace is
// stream-ordered cudaMallocAsync inside the library and is not counted here.)
//
// A Tape is not thread-safe. Vars are handles into their tape: they must not outlive it, and
// reset() invalidates them (using one afterwards throws InvalidArgument). Misuse (backward twice,
// Vars of different tapes, shape mismatches) throws InvalidArgument naming the op and the shapes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "shortconv/device.hpp"
#include "shortconv/ops.hpp"
#include "shortconv/stream.hpp"
#include "shortconv/tensor.hpp"

namespace shortconv::autograd {

class Tape;
class Parameter;

/// Handle to a value recorded on a tape (an input, a bound parameter or an op's output).
class Var {
 public:
  Var() = default;

  /// False for a default-constructed Var.
  bool defined() const noexcept { return tape_ != nullptr; }
  /// The tape that recorded this Var; throws InvalidArgument when undefined or stale.
  Tape& tape() const;
  int rank() const;
  std::int64_t size(int dim) const;
  std::span<const std::int64_t> shape() const;
  std::int64_t numel() const;
  /// True when a gradient flows back to this Var (it is, or depends on, a leaf that requires one).
  bool requires_grad() const;
  /// The value: f32, contiguous, on the tape's device. Valid until reset().
  TensorView value() const;
  /// dL/dvalue after backward(); throws InvalidArgument when no gradient reached this Var.
  TensorView grad() const;
  /// Copies the value to the host (waits for the tape's stream).
  std::vector<float> to_host() const;
  /// Copies the gradient to the host (waits for the tape's stream); throws as grad() does.
  std::vector<float> grad_to_host() const;
  /// The value of a one-element Var (e.g. a loss) on the host (waits for the tape's stream).
  float item() const;

 private:
  friend class Tape;
  friend struct TapeAccess;
  Var(Tape* tape, std::int32_t index, std::uint64_t generation) : tape_(tape), index_(index), generation_(generation) {}

  Tape* tape_ = nullptr;
  std::int32_t index_ = -1;
  std::uint64_t generation_ = 0;
};

/// A persistent leaf: an f32 value and its gradient, owned outside any tape, updated in place by
/// the optimizers. Bind it into a graph with Tape::param(); backward() then writes dL/dvalue into
/// grad() (zeros when the loss does not depend on it). Move-only; a graph and an optimizer refer to
/// it by address, so do not move it while either uses it.
class Parameter {
 public:
  /// Zero-initialised value and gradient of `shape` on `device`. `requires_grad = false` makes a
  /// constant (e.g. a frozen teacher): no gradient buffer, never written by backward().
  Parameter(std::string name, std::span<const std::int64_t> shape, Device device = Device::cpu(),
            bool requires_grad = true);
  Parameter(std::string name, std::initializer_list<std::int64_t> shape, Device device = Device::cpu(),
            bool requires_grad = true)
      : Parameter(std::move(name), std::span<const std::int64_t>(shape.begin(), shape.size()), device, requires_grad) {}

  const std::string& name() const noexcept { return name_; }
  Device device() const noexcept { return value_.device(); }
  bool requires_grad() const noexcept { return requires_grad_; }
  std::int64_t numel() const noexcept { return value_.numel(); }
  const TensorView& value() const noexcept { return value_.view(); }
  /// The gradient buffer (same shape); throws InvalidArgument for a constant.
  const TensorView& grad() const;

  /// Copies numel() floats from the host into the value (synchronous).
  void copy_from_host(std::span<const float> values);
  /// The value on the host (waits for all work on the device first).
  std::vector<float> to_host() const;
  /// The gradient on the host (waits for all work on the device first).
  std::vector<float> grad_to_host() const;

 private:
  std::string name_;
  bool requires_grad_ = true;
  Tensor value_;
  Tensor grad_;
};

/// How a tape runs.
struct TapeOptions {
  /// Time every op (CUDA events on the stream, steady_clock on the CPU). reset() then
  /// synchronises the stream to read the timers; see Tape::profile().
  bool profile = false;
  /// CUDA: let cuBLAS use TF32 tensor cores in linear (about 10 mantissa bits in the products:
  /// roughly 1e-3 relative error, several times faster). Ignored on the CPU.
  bool tf32 = false;
};

/// Device allocations made by a tape's caching allocator.
struct AllocatorStats {
  std::int64_t device_allocations = 0;  // fresh cudaMallocAsync / aligned_alloc calls, ever
  std::int64_t device_frees = 0;        // blocks given back to the device (release_cached, destructor)
  std::int64_t cache_hits = 0;          // requests served from a free list
  std::int64_t bytes_reserved = 0;      // held from the device now (in use + cached)
  std::int64_t bytes_in_use = 0;        // handed out to the current graph
  std::int64_t peak_bytes_in_use = 0;
};

/// Accumulated time of one op and phase in profile mode.
struct OpTiming {
  std::string op;     // "linear", "conv1d", "silu", ..., or a name passed to profile_section()
  std::string phase;  // "forward", "backward" or "other"
  std::int64_t calls = 0;
  double ms = 0.0;
};

/// Records ops on Vars and runs their backward on one device and stream.
class Tape {
 public:
  /// A tape on `device` whose work goes to `stream` (default: the device's default stream).
  /// Throws DeviceError / Unsupported when the CUDA device is not available.
  explicit Tape(Device device = Device::cpu(), Stream stream = {}, TapeOptions options = {});
  ~Tape();
  Tape(const Tape&) = delete;
  Tape& operator=(const Tape&) = delete;
  Tape(Tape&&) = delete;  // Vars point at their tape
  Tape& operator=(Tape&&) = delete;

  Device device() const noexcept;
  const Stream& stream() const noexcept;

  /// A leaf holding a copy of `values` (numel(shape) floats from the host; synchronous upload).
  Var input(std::span<const std::int64_t> shape, std::span<const float> values, bool requires_grad = false);
  Var input(std::initializer_list<std::int64_t> shape, std::span<const float> values, bool requires_grad = false) {
    return input(std::span<const std::int64_t>(shape.begin(), shape.size()), values, requires_grad);
  }
  /// A leaf that refers to `value` (f32, contiguous, on the tape's device) without copying it; the
  /// memory must stay valid and unchanged until reset().
  Var view(const TensorView& value, bool requires_grad = false);
  /// A leaf of standard normal samples times `scale`, drawn on the device: Box-Muller on a
  /// counter-based hash of (seed, element index / 2), so the same values (to a few ulps of libm)
  /// on every device, thread count and launch.
  Var randn(std::span<const std::int64_t> shape, std::uint64_t seed, float scale = 1.0f);
  Var randn(std::initializer_list<std::int64_t> shape, std::uint64_t seed, float scale = 1.0f) {
    return randn(std::span<const std::int64_t>(shape.begin(), shape.size()), seed, scale);
  }
  /// Binds a parameter into the current graph (the same Var for repeated calls until reset()).
  Var param(Parameter& parameter);

  /// Runs the backward pass from `loss` (one element) on the tape's stream, without synchronising.
  /// Writes the gradient of every bound parameter that requires one (zeros when unreached) and of
  /// every Var on the path. Throws InvalidArgument when called twice on one graph.
  void backward(const Var& loss);
  /// Drops the graph: every Var recorded so far becomes invalid and its memory returns to the
  /// allocator's free lists for the next step. Parameters are untouched. In profile mode, waits
  /// for the stream and adds the op timings of this graph to profile().
  void reset();

  /// Enqueues a copy of `v`'s value into `dst` (f32, contiguous, v.numel() elements, on the tape's
  /// device) on the tape's stream without waiting: e.g. each step's loss into a history buffer.
  void copy_value(const Var& v, const TensorView& dst);

  /// Number of Vars recorded since the last reset().
  std::size_t size() const noexcept;
  AllocatorStats allocator_stats() const noexcept;
  /// Gives every cached (free) block back to the device; blocks in use stay.
  void release_cached();

  /// Op timings accumulated over the graphs reset() so far in profile mode (empty otherwise),
  /// one entry per (op, phase) in first-seen order.
  std::vector<OpTiming> profile() const;
  void clear_profile();
  /// In profile mode, times `fn` (work enqueued on this tape's stream, e.g. an optimizer step) as
  /// the op `name` with phase "other"; otherwise just runs it.
  template <class Fn>
  void profile_section(const char* name, Fn&& fn) {
    const std::int64_t token = profile_begin(name);
    fn();
    profile_end(token);
  }

  struct Impl;  // internal: src/autograd/tape_impl.hpp

 private:
  friend class Var;
  friend struct TapeAccess;
  std::int64_t profile_begin(const char* name);
  void profile_end(std::int64_t token);

  std::unique_ptr<Impl> impl_;
};

/// Options of conv1d beyond x and weight.
struct Conv1dOptions {
  std::optional<Var> bias;           // [C]
  Activation activation = Activation::none;
  std::optional<Var> initial_state;  // [B, K-1, C]: the K-1 inputs before t = 0 (K >= 2)
};

/// y = act(causal_conv1d(x, weight) + bias) with x [B, T, C], weight [C, K] (shortconv's kernels).
Var conv1d(const Var& x, const Var& weight, const Conv1dOptions& options = {});
/// y = x · weightᵀ + bias: x [..., in], weight [out, in], bias [out] or undefined; y [..., out].
/// BLAS sgemm on the CPU (OpenBLAS), cuBLAS on CUDA.
Var linear(const Var& x, const Var& weight, const Var& bias = {});
/// y = x · sigmoid(x), elementwise.
Var silu(const Var& x);
/// Elementwise product of two Vars of the same shape.
Var mul(const Var& a, const Var& b);
/// Elementwise sum of two Vars of the same shape.
Var add(const Var& a, const Var& b);
/// Sum of all elements: shape [1].
Var sum(const Var& x);
/// Mean of all elements: shape [1].
Var mean(const Var& x);
/// mean((prediction - target)²): shape [1]; both sides may require a gradient.
Var mse_loss(const Var& prediction, const Var& target);

/// The BLAS behind linear on the CPU.
struct CpuBlasInfo {
  std::string name;     // "OpenBLAS", or "CBLAS" for another implementation
  std::string version;  // "0.3.21" (OpenBLAS only)
  std::string kernels;  // the core OpenBLAS picked at load time, e.g. "SkylakeX" (OpenBLAS only)
};
CpuBlasInfo cpu_blas_info();

inline Var operator*(const Var& a, const Var& b) { return mul(a, b); }
inline Var operator+(const Var& a, const Var& b) { return add(a, b); }

}  // namespace shortconv::autograd
