// Internals of the autograd tape shared by tape.cpp (graph, backward driver, profiling) and
// ops.cpp (each op's forward and backward).
//
// The graph is a vector of nodes in recording order, which is a topological order: an op's inputs
// are always recorded before it. backward() walks it from the loss down; a node whose gradient
// buffer has received a contribution runs its op's backward, which writes (first contribution) or
// adds (later ones) into the gradient buffers of its inputs that require one.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "allocator.hpp"
#include "kernels.hpp"
#include "shortconv/autograd.hpp"
#include "shortconv/error.hpp"

namespace shortconv::autograd {

enum class OpKind : std::uint8_t { leaf, conv1d, linear, silu, mul, add, sum, mean, mse_loss };

/// Name of an op in messages and profiles.
const char* op_name(OpKind op) noexcept;

struct Node {
  OpKind op = OpKind::leaf;
  int rank = 0;
  std::array<std::int64_t, kMaxRank> shape{};
  std::int64_t numel = 1;
  float* value = nullptr;
  float* grad = nullptr;          // allocated at the first contribution (or the parameter's buffer)
  bool requires_grad = false;
  bool grad_written = false;      // a contribution has been written: later ones accumulate
  std::array<std::int32_t, 4> inputs{-1, -1, -1, -1};  // conv1d: x, weight, bias, state; linear: x, weight, bias
  Activation activation = Activation::none;            // conv1d
  Parameter* param = nullptr;                          // a leaf bound with Tape::param

  std::span<const std::int64_t> dims() const { return {shape.data(), static_cast<std::size_t>(rank)}; }
};

/// "[2, 5, 6]".
std::string shape_str(std::span<const std::int64_t> shape);

/// Access to the private parts of Tape and Var for the implementation files.
struct TapeAccess {
  static Tape::Impl& impl(Tape& t) { return *t.impl_; }
  static Tape* tape_of(const Var& v) { return v.tape_; }
  static std::int32_t index(const Var& v) { return v.index_; }
  static std::uint64_t generation(const Var& v) { return v.generation_; }
  static Var make_var(Tape* t, std::int32_t index, std::uint64_t generation) { return Var(t, index, generation); }
};

struct Tape::Impl {
  Impl(Device device, Stream stream, TapeOptions options);
  ~Impl();

  Device device;
  Stream stream;
  TapeOptions options;
  detail::Exec exec;
  detail::CachingAllocator allocator;
  std::vector<Node> nodes;
  std::vector<std::pair<const Parameter*, std::int32_t>> bound;  // parameters bound in this graph
  std::uint64_t generation = 1;
  bool backward_done = false;

  // ---- profiling ----
  struct Timing {
    std::string op, phase;
    std::int64_t calls = 0;
    double ms = 0.0;
  };
  struct Pending {  // an interval of this graph, read at reset() (CUDA)
    std::size_t timing;
    void* start;
    void* stop;
  };
  std::vector<Timing> timings;
  std::vector<Pending> pending;
  std::vector<void*> events;  // CUDA event pool, reused graph after graph
  std::size_t events_used = 0;
  std::vector<std::int64_t> cpu_start_ns;  // by token (CPU)

  std::int64_t profile_begin(const char* op, const char* phase);
  void profile_end(std::int64_t token);
  void collect_profile();

  /// The node of `v`, after checking that it is defined, belongs to this tape and is current.
  Node& node(const Var& v, const char* op, const char* arg);
  std::int32_t index_of(const Var& v) const { return TapeAccess::index(v); }
  /// Appends a node with a fresh value buffer (unless `value` is given) and returns its Var.
  Var record(Tape* tape, Node node, float* value = nullptr);
  /// The gradient buffer of node `i` and whether a contribution must be added (true) or written.
  std::pair<float*, bool> grad_target(std::int32_t i);
  TensorView view_of(const float* data, std::span<const std::int64_t> shape) const {
    return TensorView(const_cast<float*>(data), DType::f32, device, shape);
  }
  void run_backward(std::int32_t i);  // ops.cpp
};

/// Times one op interval in profile mode (no-op otherwise).
class ProfileScope {
 public:
  ProfileScope(Tape::Impl& t, const char* op, const char* phase) : t_(t), token_(t.profile_begin(op, phase)) {}
  ~ProfileScope() {
    try {
      t_.profile_end(token_);
    } catch (...) {  // a destructor never throws; a failed event record only loses a timing
    }
  }
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  Tape::Impl& t_;
  std::int64_t token_;
};

}  // namespace shortconv::autograd
