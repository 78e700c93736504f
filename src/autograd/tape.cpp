// The autograd tape: graph bookkeeping, leaves, the backward driver, reset and profiling; Var and
// Parameter. The ops themselves (forward and backward) are in ops.cpp.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <sstream>

#include "kernels_cuda.hpp"
#include "shortconv/version.hpp"
#include "tape_impl.hpp"

namespace shortconv::autograd {
namespace {

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Shape checks for leaves: rank 1..kMaxRank, every dimension >= 1, element count without overflow.
std::int64_t checked_numel(const char* op, std::span<const std::int64_t> shape) {
  if (shape.empty() || shape.size() > static_cast<std::size_t>(kMaxRank))
    throw InvalidArgument(std::string(op) + ": shape " + shape_str(shape) + " must have 1 to " +
                          std::to_string(kMaxRank) + " dimensions");
  std::int64_t n = 1;
  for (std::int64_t d : shape) {
    if (d < 1) throw InvalidArgument(std::string(op) + ": shape " + shape_str(shape) + " has a zero or negative dimension");
    if (n > (std::int64_t{1} << 40) / d) throw InvalidArgument(std::string(op) + ": shape " + shape_str(shape) + " is too large");
    n *= d;
  }
  return n;
}

Node leaf_node(std::span<const std::int64_t> shape, std::int64_t numel, bool requires_grad) {
  Node n;
  n.op = OpKind::leaf;
  n.rank = static_cast<int>(shape.size());
  std::copy(shape.begin(), shape.end(), n.shape.begin());
  n.numel = numel;
  n.requires_grad = requires_grad;
  return n;
}

void check_device_usable(const char* what, Device device) {
  if (!device.is_cuda()) return;
  if (!built_with_cuda())
    throw Unsupported(std::string(what) + ": cuda:" + std::to_string(device.index) +
                      " requested but this build of shortconv has no CUDA backend");
  const int count = cuda_device_count();
  if (device.index < 0 || device.index >= count)
    throw DeviceError(std::string(what) + ": cuda:" + std::to_string(device.index) + " is not available (" +
                      std::to_string(count) + " CUDA devices visible)");
}

}  // namespace

const char* op_name(OpKind op) noexcept {
  switch (op) {
    case OpKind::leaf: return "leaf";
    case OpKind::conv1d: return "conv1d";
    case OpKind::linear: return "linear";
    case OpKind::silu: return "silu";
    case OpKind::mul: return "mul";
    case OpKind::add: return "add";
    case OpKind::sum: return "sum";
    case OpKind::mean: return "mean";
    case OpKind::mse_loss: return "mse_loss";
  }
  return "?";
}

std::string shape_str(std::span<const std::int64_t> shape) {
  std::ostringstream os;
  os << '[';
  for (std::size_t d = 0; d < shape.size(); ++d) os << (d ? ", " : "") << shape[d];
  os << ']';
  return os.str();
}

// ---------------------------------------------------------------------------------------------
// Tape::Impl

Tape::Impl::Impl(Device device_, Stream stream_, TapeOptions options_)
    : device(device_), stream(stream_), options(options_), allocator(device_, stream_.handle) {
  exec.on_cuda = device.is_cuda();
  exec.device = device.index;
  exec.stream = stream.handle;
  if (device.is_cuda()) exec.blas = detail::cuda::blas_create(device.index, stream.handle, options.tf32);
  nodes.reserve(64);
}

Tape::Impl::~Impl() {
  if (device.is_cuda()) {
    for (void* ev : events) detail::cuda::event_destroy(device.index, ev);
    detail::cuda::blas_destroy(device.index, exec.blas);
  }
  // The allocator's destructor then frees the blocks in stream order.
}

Node& Tape::Impl::node(const Var& v, const char* op, const char* arg) {
  Tape* owner = TapeAccess::tape_of(v);
  if (owner == nullptr) throw InvalidArgument(std::string(op) + ": " + arg + " is an undefined Var");
  if (&TapeAccess::impl(*owner) != this)
    throw InvalidArgument(std::string(op) + ": " + arg +
                          " belongs to a different tape (Vars of two tapes cannot be mixed in one graph)");
  const std::int32_t i = TapeAccess::index(v);
  if (TapeAccess::generation(v) != generation || i < 0 || static_cast<std::size_t>(i) >= nodes.size())
    throw InvalidArgument(std::string(op) + ": " + arg + " was recorded before the last reset() and is no longer valid");
  return nodes[static_cast<std::size_t>(i)];
}

Var Tape::Impl::record(Tape* tape, Node n, float* value) {
  if (nodes.size() >= static_cast<std::size_t>(INT32_MAX)) throw InvalidArgument("autograd: too many Vars on one tape");
  nodes.reserve(nodes.size() + 1);  // may throw before anything is allocated
  n.value = value != nullptr ? value : allocator.allocate_floats(n.numel);
  nodes.push_back(n);
  return TapeAccess::make_var(tape, static_cast<std::int32_t>(nodes.size() - 1), generation);
}

std::pair<float*, bool> Tape::Impl::grad_target(std::int32_t i) {
  Node& n = nodes[static_cast<std::size_t>(i)];
  if (n.grad == nullptr)
    n.grad = n.param != nullptr ? static_cast<float*>(n.param->grad().data()) : allocator.allocate_floats(n.numel);
  const bool accumulate = n.grad_written;
  n.grad_written = true;
  return {n.grad, accumulate};
}

std::int64_t Tape::Impl::profile_begin(const char* op, const char* phase) {
  if (!options.profile) return -1;
  std::size_t t = 0;
  while (t < timings.size() && (timings[t].op != op || timings[t].phase != phase)) ++t;
  if (t == timings.size()) timings.push_back({op, phase, 0, 0.0});
  ++timings[t].calls;
  if (!device.is_cuda()) {
    cpu_start_ns.push_back(now_ns());
    pending.push_back({t, nullptr, nullptr});
    return static_cast<std::int64_t>(pending.size() - 1);
  }
  while (events.size() < events_used + 2) events.push_back(detail::cuda::event_create(device.index));
  Pending p{t, events[events_used], events[events_used + 1]};
  events_used += 2;
  detail::cuda::event_record(device.index, p.start, stream.handle);
  pending.push_back(p);
  return static_cast<std::int64_t>(pending.size() - 1);
}

void Tape::Impl::profile_end(std::int64_t token) {
  // A section still open across reset() (which collected and cleared the intervals) is dropped.
  if (token < 0 || static_cast<std::size_t>(token) >= pending.size()) return;
  const Pending& p = pending[static_cast<std::size_t>(token)];
  if (!device.is_cuda()) {
    timings[p.timing].ms += static_cast<double>(now_ns() - cpu_start_ns[static_cast<std::size_t>(token)]) * 1e-6;
    return;
  }
  detail::cuda::event_record(device.index, p.stop, stream.handle);
}

void Tape::Impl::collect_profile() {
  if (device.is_cuda() && !pending.empty()) {
    synchronize(stream);
    for (const Pending& p : pending) timings[p.timing].ms += detail::cuda::event_elapsed_ms(p.start, p.stop);
  }
  pending.clear();
  cpu_start_ns.clear();
  events_used = 0;
}

// ---------------------------------------------------------------------------------------------
// Tape

Tape::Tape(Device device, Stream stream, TapeOptions options) {
  check_device_usable("Tape", device);
  if (stream.device.is_cpu() && stream.handle == nullptr) stream = default_stream(device);
  if (stream.device != device)
    throw InvalidArgument("Tape: the stream is on " + stream.device.str() + " but the tape is on " + device.str());
  impl_ = std::make_unique<Impl>(device, stream, options);
}

Tape::~Tape() = default;

Device Tape::device() const noexcept { return impl_->device; }
const Stream& Tape::stream() const noexcept { return impl_->stream; }
std::size_t Tape::size() const noexcept { return impl_->nodes.size(); }
AllocatorStats Tape::allocator_stats() const noexcept { return impl_->allocator.stats(); }
void Tape::release_cached() { impl_->allocator.release_cached(); }

Var Tape::input(std::span<const std::int64_t> shape, std::span<const float> values, bool requires_grad) {
  Impl& t = *impl_;
  const std::int64_t n = checked_numel("Tape::input", shape);
  if (static_cast<std::int64_t>(values.size()) != n)
    throw InvalidArgument("Tape::input: shape " + shape_str(shape) + " has " + std::to_string(n) + " elements but " +
                          std::to_string(values.size()) + " values were given");
  ProfileScope scope(t, "input", "forward");
  Var v = t.record(this, leaf_node(shape, n, requires_grad));
  float* dst = t.nodes.back().value;
  const std::size_t bytes = static_cast<std::size_t>(n) * sizeof(float);
  if (t.device.is_cuda()) {
    detail::cuda::copy_from_host(t.device.index, t.stream.handle, dst, values.data(), bytes);
  } else {
    std::memcpy(dst, values.data(), bytes);
  }
  return v;
}

Var Tape::view(const TensorView& value, bool requires_grad) {
  Impl& t = *impl_;
  const std::int64_t n = checked_numel("Tape::view", value.shape());
  if (value.dtype() != DType::f32) throw InvalidArgument("Tape::view: value is " + value.str() + " but must be f32");
  if (value.device() != t.device)
    throw InvalidArgument("Tape::view: value is on " + value.device().str() + " but the tape is on " + t.device.str());
  if (!value.is_contiguous()) throw InvalidArgument("Tape::view: value " + value.str() + " must be contiguous");
  if (value.data() == nullptr) throw InvalidArgument("Tape::view: value has a null data pointer");
  return t.record(this, leaf_node(value.shape(), n, requires_grad), static_cast<float*>(value.data()));
}

Var Tape::randn(std::span<const std::int64_t> shape, std::uint64_t seed, float scale) {
  Impl& t = *impl_;
  const std::int64_t n = checked_numel("Tape::randn", shape);
  ProfileScope scope(t, "randn", "forward");
  Var v = t.record(this, leaf_node(shape, n, false));
  detail::randn(t.exec, t.nodes.back().value, n, seed, scale);
  return v;
}

Var Tape::param(Parameter& p) {
  Impl& t = *impl_;
  if (p.device() != t.device)
    throw InvalidArgument("Tape::param: parameter '" + p.name() + "' is on " + p.device().str() + " but the tape is on " +
                          t.device.str());
  for (const auto& [bound, index] : t.bound)
    if (bound == &p) return TapeAccess::make_var(this, index, t.generation);
  t.bound.reserve(t.bound.size() + 1);
  Node n = leaf_node(p.value().shape(), p.numel(), p.requires_grad());
  n.param = &p;
  Var v = t.record(this, n, static_cast<float*>(p.value().data()));
  t.bound.emplace_back(&p, TapeAccess::index(v));
  return v;
}

void Tape::copy_value(const Var& v, const TensorView& dst) {
  Impl& t = *impl_;
  const Node& n = t.node(v, "Tape::copy_value", "v");
  if (dst.dtype() != DType::f32 || dst.device() != t.device || !dst.is_contiguous() || dst.numel() != n.numel ||
      dst.data() == nullptr)
    throw InvalidArgument("Tape::copy_value: dst is " + dst.str() + " but must be f32, contiguous, on " +
                          t.device.str() + ", with the " + std::to_string(n.numel) + " elements of v " +
                          shape_str(n.dims()));
  detail::copy(t.exec, static_cast<float*>(dst.data()), n.value, n.numel, false);
}

void Tape::backward(const Var& loss) {
  Impl& t = *impl_;
  Node& root = t.node(loss, "backward", "loss");
  if (root.numel != 1)
    throw InvalidArgument("backward: loss is " + shape_str(root.dims()) + " but must have one element (reduce it with "
                          "sum, mean or mse_loss)");
  if (!root.requires_grad)
    throw InvalidArgument("backward: the loss does not depend on any Var that requires a gradient");
  if (t.backward_done)
    throw InvalidArgument("backward: called twice on the same graph; call reset() before recording the next step");
  t.backward_done = true;

  const std::int32_t r = TapeAccess::index(loss);
  {
    ProfileScope scope(t, "backward seed", "backward");
    auto [g, accumulate] = t.grad_target(r);
    (void)accumulate;  // the root's first contribution
    detail::fill(t.exec, g, 1, 1.0f);
  }
  for (std::int32_t i = r; i >= 0; --i) {
    const Node& n = t.nodes[static_cast<std::size_t>(i)];
    if (n.op == OpKind::leaf || !n.requires_grad || !n.grad_written) continue;
    ProfileScope scope(t, op_name(n.op), "backward");
    t.run_backward(i);
  }
  // Bound parameters the loss does not reach get zero gradients, so an optimizer step sees
  // this graph's gradients and nothing older.
  for (const auto& [p, index] : t.bound) {
    Node& n = t.nodes[static_cast<std::size_t>(index)];
    if (!n.requires_grad || n.grad_written) continue;
    auto [g, accumulate] = t.grad_target(index);
    (void)accumulate;
    detail::fill(t.exec, g, n.numel, 0.0f);
  }
}

void Tape::reset() {
  Impl& t = *impl_;
  if (t.options.profile) t.collect_profile();
  t.nodes.clear();
  t.bound.clear();
  t.allocator.release_all();
  ++t.generation;
  t.backward_done = false;
}

std::vector<OpTiming> Tape::profile() const {
  std::vector<OpTiming> out;
  for (const Impl::Timing& tm : impl_->timings) out.push_back({tm.op, tm.phase, tm.calls, tm.ms});
  return out;
}

void Tape::clear_profile() {
  impl_->collect_profile();
  impl_->timings.clear();
}

std::int64_t Tape::profile_begin(const char* name) { return impl_->profile_begin(name, "other"); }
void Tape::profile_end(std::int64_t token) { impl_->profile_end(token); }

// ---------------------------------------------------------------------------------------------
// Var

namespace {
const Node& checked_node(const Var& v, const char* what) {
  Tape* tape = TapeAccess::tape_of(v);
  if (tape == nullptr) throw InvalidArgument(std::string(what) + ": undefined Var");
  return TapeAccess::impl(*tape).node(v, what, "the Var");
}
}  // namespace

Tape& Var::tape() const {
  checked_node(*this, "Var::tape");
  return *tape_;
}
int Var::rank() const { return checked_node(*this, "Var::rank").rank; }
std::int64_t Var::size(int dim) const {
  const Node& n = checked_node(*this, "Var::size");
  const int d = dim < 0 ? dim + n.rank : dim;
  if (d < 0 || d >= n.rank)
    throw InvalidArgument("Var::size: dimension " + std::to_string(dim) + " out of range for " + shape_str(n.dims()));
  return n.shape[static_cast<std::size_t>(d)];
}
std::span<const std::int64_t> Var::shape() const { return checked_node(*this, "Var::shape").dims(); }
std::int64_t Var::numel() const { return checked_node(*this, "Var::numel").numel; }
bool Var::requires_grad() const { return checked_node(*this, "Var::requires_grad").requires_grad; }

TensorView Var::value() const {
  const Node& n = checked_node(*this, "Var::value");
  return TapeAccess::impl(*tape_).view_of(n.value, n.dims());
}

TensorView Var::grad() const {
  const Node& n = checked_node(*this, "Var::grad");
  if (n.grad == nullptr || !n.grad_written)
    throw InvalidArgument("Var::grad: no gradient reached this " + shape_str(n.dims()) +
                          " Var (call backward() on a loss that depends on it)");
  return TapeAccess::impl(*tape_).view_of(n.grad, n.dims());
}

namespace {
std::vector<float> copy_out(const Tape::Impl& t, const float* src, std::int64_t numel) {
  std::vector<float> out(static_cast<std::size_t>(numel));
  const std::size_t bytes = out.size() * sizeof(float);
  if (t.device.is_cuda()) {
    detail::cuda::copy_to_host(t.device.index, t.stream.handle, out.data(), src, bytes);
  } else {
    std::memcpy(out.data(), src, bytes);
  }
  return out;
}
}  // namespace

std::vector<float> Var::to_host() const {
  const Node& n = checked_node(*this, "Var::to_host");
  return copy_out(TapeAccess::impl(*tape_), n.value, n.numel);
}

std::vector<float> Var::grad_to_host() const {
  const TensorView g = grad();
  return copy_out(TapeAccess::impl(*tape_), static_cast<const float*>(g.data()), g.numel());
}

float Var::item() const {
  const Node& n = checked_node(*this, "Var::item");
  if (n.numel != 1) throw InvalidArgument("Var::item: the Var is " + shape_str(n.dims()) + ", not one element");
  return to_host()[0];
}

// ---------------------------------------------------------------------------------------------
// Parameter

Parameter::Parameter(std::string name, std::span<const std::int64_t> shape, Device device, bool requires_grad)
    : name_(std::move(name)), requires_grad_(requires_grad) {
  check_device_usable("Parameter", device);
  const std::int64_t n = checked_numel(("Parameter '" + name_ + "'").c_str(), shape);
  value_ = Tensor(DType::f32, shape, device);
  const std::vector<float> zeros(static_cast<std::size_t>(n), 0.0f);
  value_.copy_from_host(zeros.data());
  if (requires_grad_) {
    grad_ = Tensor(DType::f32, shape, device);
    grad_.copy_from_host(zeros.data());
  }
}

const TensorView& Parameter::grad() const {
  if (!requires_grad_) throw InvalidArgument("Parameter::grad: '" + name_ + "' is a constant (requires_grad = false)");
  return grad_.view();
}

void Parameter::copy_from_host(std::span<const float> values) {
  if (static_cast<std::int64_t>(values.size()) != numel())
    throw InvalidArgument("Parameter::copy_from_host: '" + name_ + "' is " + shape_str(value_.view().shape()) +
                          " (" + std::to_string(numel()) + " elements) but " + std::to_string(values.size()) +
                          " values were given");
  if (device().is_cuda()) detail::cuda::device_synchronize(device().index);  // no step may still read it
  value_.copy_from_host(values.data());
}

std::vector<float> Parameter::to_host() const {
  std::vector<float> out(static_cast<std::size_t>(numel()));
  if (device().is_cuda()) detail::cuda::device_synchronize(device().index);
  value_.copy_to_host(out.data());
  return out;
}

std::vector<float> Parameter::grad_to_host() const {
  std::vector<float> out(static_cast<std::size_t>(numel()));
  if (device().is_cuda()) detail::cuda::device_synchronize(device().index);
  grad().data();  // throws for a constant
  grad_.copy_to_host(out.data());
  return out;
}

}  // namespace shortconv::autograd
