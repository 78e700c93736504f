// The ops of the autograd tape: shape checks and the forward at record time, and each op's
// backward (Tape::Impl::run_backward). Math, with g = dL/dy of the op's output:
//
//   conv1d   y = act(conv(x, w) + b)     dx, dw, db, dstate from shortconv::conv1d_backward
//   linear   y = x·Wᵀ + b  (x [M, in])   dx = g·W,  dW = gᵀ·x,  db = Σ_rows g
//   silu     y = x·σ(x)                  dx = g·σ(x)·(1 + x·(1 - σ(x)))
//   mul      y = a·b                     da = g·b,  db = g·a
//   add      y = a + b                   da = g,    db = g
//   sum      y = Σ x                     dx = g[0]
//   mean     y = Σ x / n                 dx = g[0] / n
//   mse_loss y = Σ (a - b)² / n          da = 2·g[0]·(a - b) / n,  db = -da
//
// Every contribution to an input's gradient is written when it is the first one and added
// otherwise (Tape::Impl::grad_target), which is how a Var used several times sums its gradients.
// Ops whose library call only writes (conv1d_backward) go through a scratch block when adding.
#include <string>

#include "shortconv/ops.hpp"
#include "tape_impl.hpp"

namespace shortconv::autograd {
namespace {

using detail::Exec;

Tape& owner(const Var& v, const char* op, const char* arg) {
  Tape* tape = TapeAccess::tape_of(v);
  if (tape == nullptr) throw InvalidArgument(std::string(op) + ": " + arg + " is an undefined Var");
  return *tape;
}

std::string msg(const char* op, const std::string& what) { return std::string(op) + ": " + what; }

bool same_shape(const Node& a, const Node& b) {
  if (a.rank != b.rank) return false;
  for (int d = 0; d < a.rank; ++d)
    if (a.shape[d] != b.shape[d]) return false;
  return true;
}

Node output_node(OpKind op, std::span<const std::int64_t> shape, std::int64_t numel) {
  Node n;
  n.op = op;
  n.rank = static_cast<int>(shape.size());
  std::copy(shape.begin(), shape.end(), n.shape.begin());
  n.numel = numel;
  return n;
}

const std::int64_t kScalarShape[1] = {1};

// Elementwise ops of two same-shape inputs share their checks.
Var binary(const Var& a, const Var& b, OpKind op, const char* name) {
  Tape& tape = owner(a, name, "a");
  Tape::Impl& t = TapeAccess::impl(tape);
  const Node an = t.node(a, name, "a");
  const Node bn = t.node(b, name, "b");
  if (!same_shape(an, bn))
    throw InvalidArgument(msg(name, "a is " + shape_str(an.dims()) + " but b is " + shape_str(bn.dims()) +
                                        " (shapes must match; there is no broadcasting)"));
  const bool scalar_out = op == OpKind::mse_loss;
  Node n = scalar_out ? output_node(op, kScalarShape, 1) : output_node(op, an.dims(), an.numel);
  n.inputs = {TapeAccess::index(a), TapeAccess::index(b), -1, -1};
  n.requires_grad = an.requires_grad || bn.requires_grad;
  ProfileScope scope(t, op_name(op), "forward");
  Var y = t.record(&tape, n);
  float* out = t.nodes.back().value;
  switch (op) {
    case OpKind::mul: detail::mul(t.exec, out, an.value, bn.value, an.numel); break;
    case OpKind::add: detail::add(t.exec, out, an.value, bn.value, an.numel); break;
    case OpKind::mse_loss: {
      float* ws = t.allocator.allocate_floats(detail::reduce_workspace(t.exec, an.numel));
      detail::squared_error(t.exec, out, an.value, bn.value, an.numel, 1.0f / static_cast<float>(an.numel), ws);
      t.allocator.release(ws);
      break;
    }
    default: break;
  }
  return y;
}

Var reduction(const Var& x, OpKind op, const char* name) {
  Tape& tape = owner(x, name, "x");
  Tape::Impl& t = TapeAccess::impl(tape);
  const Node xn = t.node(x, name, "x");
  Node n = output_node(op, kScalarShape, 1);
  n.inputs = {TapeAccess::index(x), -1, -1, -1};
  n.requires_grad = xn.requires_grad;
  ProfileScope scope(t, op_name(op), "forward");
  Var y = t.record(&tape, n);
  float* out = t.nodes.back().value;
  float* ws = t.allocator.allocate_floats(detail::reduce_workspace(t.exec, xn.numel));
  detail::sum(t.exec, out, xn.value, xn.numel, op == OpKind::mean ? 1.0f / static_cast<float>(xn.numel) : 1.0f, ws);
  t.allocator.release(ws);
  return y;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Forward (recording)

Var conv1d(const Var& x, const Var& weight, const Conv1dOptions& options) {
  const char* op = "autograd::conv1d";
  Tape& tape = owner(x, op, "x");
  Tape::Impl& t = TapeAccess::impl(tape);
  const Node xn = t.node(x, op, "x");
  const Node wn = t.node(weight, op, "weight");
  if (xn.rank != 3) throw InvalidArgument(msg(op, "x is " + shape_str(xn.dims()) + " but must be [B, T, C]"));
  const std::int64_t B = xn.shape[0], C = xn.shape[2];
  if (wn.rank != 2 || wn.shape[0] != C)
    throw InvalidArgument(msg(op, "weight is " + shape_str(wn.dims()) + " but x is " + shape_str(xn.dims()) +
                                      ": weight must be [C, K] with C = " + std::to_string(C)));
  const std::int64_t K = wn.shape[1];
  Node n = output_node(OpKind::conv1d, xn.dims(), xn.numel);
  n.inputs = {TapeAccess::index(x), TapeAccess::index(weight), -1, -1};
  n.activation = options.activation;
  n.requires_grad = xn.requires_grad || wn.requires_grad;
  Conv1dForwardArgs a;
  a.x = t.view_of(xn.value, xn.dims());
  a.weight = t.view_of(wn.value, wn.dims());
  a.activation = options.activation;
  if (options.bias) {
    const Node bn = t.node(*options.bias, op, "bias");
    if (bn.rank != 1 || bn.shape[0] != C)
      throw InvalidArgument(msg(op, "bias is " + shape_str(bn.dims()) + " but x is " + shape_str(xn.dims()) +
                                        ": bias must be [" + std::to_string(C) + "]"));
    n.inputs[2] = TapeAccess::index(*options.bias);
    n.requires_grad = n.requires_grad || bn.requires_grad;
    a.bias = t.view_of(bn.value, bn.dims());
  }
  if (options.initial_state) {
    const Node sn = t.node(*options.initial_state, op, "initial_state");
    if (K < 2) throw InvalidArgument(msg(op, "initial_state needs K >= 2 but weight is " + shape_str(wn.dims())));
    if (sn.rank != 3 || sn.shape[0] != B || sn.shape[1] != K - 1 || sn.shape[2] != C)
      throw InvalidArgument(msg(op, "initial_state is " + shape_str(sn.dims()) + " but must be [" + std::to_string(B) +
                                        ", " + std::to_string(K - 1) + ", " + std::to_string(C) + "] (B, K-1, C) for x " +
                                        shape_str(xn.dims()) + " and weight " + shape_str(wn.dims())));
    n.inputs[3] = TapeAccess::index(*options.initial_state);
    n.requires_grad = n.requires_grad || sn.requires_grad;
    a.initial_state = t.view_of(sn.value, sn.dims());
  }
  ProfileScope scope(t, "conv1d", "forward");
  Var y = t.record(&tape, n);
  a.y = t.view_of(t.nodes.back().value, xn.dims());
  conv1d_forward(a, t.stream);
  return y;
}

Var linear(const Var& x, const Var& weight, const Var& bias) {
  const char* op = "autograd::linear";
  Tape& tape = owner(x, op, "x");
  Tape::Impl& t = TapeAccess::impl(tape);
  const Node xn = t.node(x, op, "x");
  const Node wn = t.node(weight, op, "weight");
  const std::int64_t in = xn.shape[static_cast<std::size_t>(xn.rank - 1)];
  if (wn.rank != 2 || wn.shape[1] != in)
    throw InvalidArgument(msg(op, "weight is " + shape_str(wn.dims()) + " but x is " + shape_str(xn.dims()) +
                                      ": weight must be [out, " + std::to_string(in) + "]"));
  const std::int64_t out = wn.shape[0], rows = xn.numel / in;
  if (rows > (std::int64_t{1} << 40) / out)
    throw InvalidArgument(msg(op, "the output of x " + shape_str(xn.dims()) + " and weight " + shape_str(wn.dims()) +
                                      " is too large"));
  Node n = output_node(OpKind::linear, xn.dims(), rows * out);
  n.shape[static_cast<std::size_t>(n.rank - 1)] = out;
  n.inputs = {TapeAccess::index(x), TapeAccess::index(weight), -1, -1};
  n.requires_grad = xn.requires_grad || wn.requires_grad;
  const float* bias_value = nullptr;
  if (bias.defined()) {
    const Node bn = t.node(bias, op, "bias");
    if (bn.rank != 1 || bn.shape[0] != out)
      throw InvalidArgument(msg(op, "bias is " + shape_str(bn.dims()) + " but weight is " + shape_str(wn.dims()) +
                                        ": bias must be [" + std::to_string(out) + "]"));
    n.inputs[2] = TapeAccess::index(bias);
    n.requires_grad = n.requires_grad || bn.requires_grad;
    bias_value = bn.value;
  }
  ProfileScope scope(t, "linear", "forward");
  Var y = t.record(&tape, n);
  float* yv = t.nodes.back().value;
  // y [rows, out] = x [rows, in] · Wᵀ
  detail::gemm(t.exec, false, true, rows, out, in, 1.0f, xn.value, in, wn.value, in, 0.0f, yv, out);
  if (bias_value != nullptr) detail::add_bias_rows(t.exec, yv, bias_value, rows, out);
  return y;
}

Var silu(const Var& x) {
  const char* op = "autograd::silu";
  Tape& tape = owner(x, op, "x");
  Tape::Impl& t = TapeAccess::impl(tape);
  const Node xn = t.node(x, op, "x");
  Node n = output_node(OpKind::silu, xn.dims(), xn.numel);
  n.inputs = {TapeAccess::index(x), -1, -1, -1};
  n.requires_grad = xn.requires_grad;
  ProfileScope scope(t, "silu", "forward");
  Var y = t.record(&tape, n);
  detail::silu(t.exec, t.nodes.back().value, xn.value, xn.numel);
  return y;
}

Var mul(const Var& a, const Var& b) { return binary(a, b, OpKind::mul, "autograd::mul"); }
Var add(const Var& a, const Var& b) { return binary(a, b, OpKind::add, "autograd::add"); }
Var mse_loss(const Var& prediction, const Var& target) {
  return binary(prediction, target, OpKind::mse_loss, "autograd::mse_loss");
}
Var sum(const Var& x) { return reduction(x, OpKind::sum, "autograd::sum"); }
Var mean(const Var& x) { return reduction(x, OpKind::mean, "autograd::mean"); }

// ---------------------------------------------------------------------------------------------
// Backward

void Tape::Impl::run_backward(std::int32_t i) {
  // Copy what we need: grad_target() may allocate but never moves nodes; copies keep it obvious.
  const Node n = nodes[static_cast<std::size_t>(i)];
  const float* g = n.grad;  // dL/dy [n.shape]
  auto input = [&](int k) -> const Node* {
    return n.inputs[k] < 0 ? nullptr : &nodes[static_cast<std::size_t>(n.inputs[k])];
  };
  auto wants = [&](int k) { return n.inputs[k] >= 0 && nodes[static_cast<std::size_t>(n.inputs[k])].requires_grad; };

  switch (n.op) {
    case OpKind::leaf: return;

    case OpKind::conv1d: {
      const Node* x = input(0);
      const Node* w = input(1);
      const Node* b = input(2);
      const Node* s = input(3);
      Conv1dBackwardArgs a;
      a.x = view_of(x->value, x->dims());
      a.weight = view_of(w->value, w->dims());
      if (b != nullptr) a.bias = view_of(b->value, b->dims());
      if (s != nullptr) a.initial_state = view_of(s->value, s->dims());
      a.dy = view_of(g, n.dims());
      a.activation = n.activation;
      // conv1d_backward writes; a gradient that already holds a contribution gets a scratch block
      // that is added afterwards.
      struct Pending {
        float* target;
        float* scratch;
        std::int64_t numel;
      };
      Pending pend[4];
      int pending = 0;
      auto output_for = [&](int k) -> std::optional<TensorView> {
        if (!wants(k)) return std::nullopt;
        const Node* in = input(k);
        auto [target, accumulate] = grad_target(n.inputs[k]);
        float* dst = target;
        if (accumulate) {
          dst = allocator.allocate_floats(in->numel);
          pend[pending++] = {target, dst, in->numel};
        }
        return view_of(dst, in->dims());
      };
      a.dx = output_for(0);
      a.dweight = output_for(1);
      if (b != nullptr) a.dbias = output_for(2);
      if (s != nullptr) a.d_initial_state = output_for(3);
      conv1d_backward(a, stream);
      for (int k = 0; k < pending; ++k) {
        detail::copy(exec, pend[k].target, pend[k].scratch, pend[k].numel, true);
        allocator.release(pend[k].scratch);
      }
      return;
    }

    case OpKind::linear: {
      const Node* x = input(0);
      const Node* w = input(1);
      const std::int64_t in = w->shape[1], out = w->shape[0], rows = x->numel / in;
      if (wants(0)) {  // dx [rows, in] = g [rows, out] · W [out, in]
        auto [dx, acc] = grad_target(n.inputs[0]);
        detail::gemm(exec, false, false, rows, in, out, 1.0f, g, out, w->value, in, acc ? 1.0f : 0.0f, dx, in);
      }
      if (wants(1)) {  // dW [out, in] = gᵀ [out, rows] · x [rows, in]
        auto [dw, acc] = grad_target(n.inputs[1]);
        detail::gemm(exec, true, false, out, in, rows, 1.0f, g, out, x->value, in, acc ? 1.0f : 0.0f, dw, in);
      }
      if (wants(2)) {  // db [out] = Σ_rows g
        auto [db, acc] = grad_target(n.inputs[2]);
        float* ws = allocator.allocate_floats(detail::reduce_workspace(exec, rows, out));
        detail::column_sum(exec, db, g, rows, out, acc, ws);
        allocator.release(ws);
      }
      return;
    }

    case OpKind::silu: {
      if (!wants(0)) return;
      const Node* x = input(0);
      auto [dx, acc] = grad_target(n.inputs[0]);
      detail::silu_backward(exec, dx, g, x->value, n.numel, acc);
      return;
    }

    case OpKind::mul: {
      const Node* a = input(0);
      const Node* b = input(1);
      if (wants(0)) {
        auto [da, acc] = grad_target(n.inputs[0]);
        detail::mul_backward(exec, da, g, b->value, n.numel, acc);
      }
      if (wants(1)) {  // after da: for mul(a, a) this adds the second term to the first
        auto [db, acc] = grad_target(n.inputs[1]);
        detail::mul_backward(exec, db, g, a->value, n.numel, acc);
      }
      return;
    }

    case OpKind::add: {
      for (int k = 0; k < 2; ++k) {
        if (!wants(k)) continue;
        auto [d, acc] = grad_target(n.inputs[k]);
        detail::copy(exec, d, g, n.numel, acc);
      }
      return;
    }

    case OpKind::sum:
    case OpKind::mean: {
      if (!wants(0)) return;
      const Node* x = input(0);
      auto [dx, acc] = grad_target(n.inputs[0]);
      const float scale = n.op == OpKind::mean ? 1.0f / static_cast<float>(x->numel) : 1.0f;
      detail::broadcast_scalar(exec, dx, g, scale, x->numel, acc);
      return;
    }

    case OpKind::mse_loss: {
      const Node* a = input(0);
      const Node* b = input(1);
      const float scale = 2.0f / static_cast<float>(a->numel);
      for (int k = 0; k < 2; ++k) {
        if (!wants(k)) continue;
        auto [d, acc] = grad_target(n.inputs[k]);
        detail::squared_error_backward(exec, d, g, a->value, b->value, a->numel, k == 0 ? scale : -scale, acc);
      }
      return;
    }
  }
}

}  // namespace shortconv::autograd
