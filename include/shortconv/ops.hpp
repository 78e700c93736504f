// The depthwise causal 1-D convolution: forward, backward and the stateful decode step.
//
//   x [B, T, C] channel-last (channel stride 1, token stride >= C), weight [C, K], bias [C]
//   z[b,t,c]  = bias[c] + sum_k w[c,k] * xe[b, t+k-(K-1), c]
//   y         = z, or silu(z) = z * sigmoid(z) with Activation::silu
//   xe        = x extended to negative time by the initial state (the K-1 inputs before t = 0),
//               or by nothing: without a state, terms before t = 0 are absent (zero padding)
//   dx[b,i,c] = sum_k w[c,k] * dz[b, i+K-1-k, c]        (terms past T dropped) + d_final_state
//   dw[c,k]   = sum_{b,t} xe[b, t+k-(K-1), c] * dz[b,t,c]
//   dbias[c]  = sum_{b,t} dz[b,t,c]                        dz = dy (or dy * silu'(z))
//
// Variable-length batches pack N sequences into x [total, C] with cu_seqlens [N+1]: sequence s
// is tokens [cu_seqlens[s], cu_seqlens[s+1]); nothing crosses a boundary.
//
// x, y, dy, dx and the states: f32, bf16 or f16 (all the same). weight and bias: f32 or x's dtype;
// dw and dbias take the weight's dtype. Accumulation is always f32. Every call validates all
// arguments first and throws InvalidArgument (nothing written) or Unsupported (no kernel).
#pragma once

#include <optional>

#include "shortconv/stream.hpp"
#include "shortconv/tensor.hpp"

namespace shortconv {

/// Which implementation runs. `naive` is the one-thread-per-output baseline kept for comparison;
/// it supports the plain op only (no activation, states or cu_seqlens).
enum class Variant : unsigned char { fast, naive };

/// Fused epilogue of the convolution.
enum class Activation : unsigned char { none, silu };

struct Conv1dForwardArgs {
  TensorView x;                     // [B, T, C], or [total, C] / [1, total, C] with cu_seqlens
  TensorView weight;                // [C, K]
  std::optional<TensorView> bias;   // [C]
  TensorView y;                     // like x, written
  Activation activation = Activation::none;
  std::optional<TensorView> initial_state;  // [N, K-1, C]: the K-1 inputs before t = 0 of each sequence
  std::optional<TensorView> final_state;    // [N, K-1, C], written: the last K-1 inputs (may be initial_state itself)
  std::optional<TensorView> cu_seqlens;     // [N+1] i32 or i64, on x's device
  Variant variant = Variant::fast;
  // CUDA, bf16/f16 x with weights of the same dtype, 24 <= K <= 128: the forward may run on tensor
  // cores (a Toeplitz product per channel, f32 accumulation). Its sums are grouped differently,
  // so y then matches conv1d_update and chunked calls to rounding instead of bitwise; false keeps
  // the FMA kernels, whose summation order every entry point shares.
  bool tensor_cores = true;
};

struct Conv1dBackwardArgs {
  TensorView x;                     // the forward input
  TensorView weight;                // [C, K]
  std::optional<TensorView> bias;   // the forward bias (needed to recompute z for silu)
  TensorView dy;                    // like x
  Activation activation = Activation::none;
  std::optional<TensorView> initial_state;    // the forward initial state
  std::optional<TensorView> d_final_state;    // [N, K-1, C]: gradient arriving at final_state
  std::optional<TensorView> cu_seqlens;       // as in the forward
  std::optional<TensorView> dx;               // like x, written when given
  std::optional<TensorView> dweight;          // [C, K], written (not accumulated) when given
  std::optional<TensorView> dbias;            // [C], written when given
  std::optional<TensorView> d_initial_state;  // [N, K-1, C], written when given
  Variant variant = Variant::fast;
  // CUDA, bf16/f16 x and dy with weights of the same dtype, no activation, 17 <= K <= 112: dx,
  // dweight and dbias may run on tensor cores (the forward's Toeplitz product transposed, and a
  // Hankel product for dweight; f32 accumulation). Sums are grouped differently from the FMA
  // kernels, so results match them to rounding; false keeps the FMA kernels.
  bool tensor_cores = true;
};

/// Decode step: y = conv over (state of the row's slot ++ x), then the slot's state becomes the
/// last K-1 inputs. T_new >= 1 tokens a row (several for speculative decoding).
struct Conv1dUpdateArgs {
  TensorView x;                     // [B, T_new, C]
  TensorView conv_state;            // [S, K-1, C], read and updated in place
  TensorView weight;                // [C, K]
  std::optional<TensorView> bias;   // [C]
  TensorView y;                     // [B, T_new, C], written
  Activation activation = Activation::none;
  std::optional<TensorView> state_indices;  // [B] i32 or i64: slot of each row, -1 = padding row
};

/// y = act(causal_conv1d(x, weight) + bias), with optional states and packed sequences.
void conv1d_forward(const Conv1dForwardArgs& args, const Stream& stream = {});

/// Convenience overload for the plain op; `bias` may be null.
void conv1d_forward(const TensorView& x, const TensorView& weight, const TensorView* bias,
                    const TensorView& y, const Stream& stream = {});

/// dx, dweight, dbias and d_initial_state in one pass over x and dy; each output is optional.
/// dweight and dbias are reduced in a fixed order: results are bitwise reproducible.
void conv1d_backward(const Conv1dBackwardArgs& args, const Stream& stream = {});

/// Stateful decode step. Padding rows (index -1) get y = 0 and touch no state. On CUDA it never
/// synchronises or allocates, so it can be captured in a CUDA graph; an index outside [-1, S)
/// cannot be reported from there without a sync, so that row's y is set to NaN and no state is
/// touched (on the CPU it throws InvalidArgument before writing anything).
void conv1d_update(const Conv1dUpdateArgs& args, const Stream& stream = {});

}  // namespace shortconv
