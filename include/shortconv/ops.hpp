// The depthwise causal 1-D convolution: forward and backward.
//
//   x [B, T, C] channel-last (channel stride 1, token stride >= C), weight [C, K], bias [C]
//   y[b,t,c]     = bias[c] + sum_k w[c,k] * x[b, t+k-(K-1), c]        (x at t < 0 is 0)
//   dx[b,i,c]    = sum_k w[c,k] * dy[b, i+K-1-k, c]                     (terms past T dropped)
//   dw[c,k]      = sum_{b,t} x[b, t+k-(K-1), c] * dy[b,t,c]
//   dbias[c]     = sum_{b,t} dy[b,t,c]
//
// x, y, dy, dx: f32, bf16 or f16 (all the same). weight and bias: f32 or x's dtype; dw and dbias
// take the weight's dtype. Accumulation is always f32. Every call validates all arguments first
// and throws InvalidArgument (nothing written) or Unsupported (no kernel for the combination).
#pragma once

#include <optional>

#include "shortconv/stream.hpp"
#include "shortconv/tensor.hpp"

namespace shortconv {

/// Which implementation runs. `naive` is the one-thread-per-output baseline kept for comparison.
enum class Variant : unsigned char { fast, naive };

struct Conv1dForwardArgs {
  TensorView x;                     // [B, T, C]
  TensorView weight;                // [C, K]
  std::optional<TensorView> bias;   // [C]
  TensorView y;                     // [B, T, C], written
  Variant variant = Variant::fast;
};

struct Conv1dBackwardArgs {
  TensorView x;                     // [B, T, C], the forward input
  TensorView weight;                // [C, K]
  TensorView dy;                    // [B, T, C]
  std::optional<TensorView> dx;     // [B, T, C], written when given
  std::optional<TensorView> dweight;  // [C, K], written (not accumulated) when given
  std::optional<TensorView> dbias;  // [C], written when given
  Variant variant = Variant::fast;
};

/// y = causal_conv1d(x, weight) + bias.
void conv1d_forward(const Conv1dForwardArgs& args, const Stream& stream = {});

/// Convenience overload; `bias` may be null.
void conv1d_forward(const TensorView& x, const TensorView& weight, const TensorView* bias,
                    const TensorView& y, const Stream& stream = {});

/// dx, dweight and dbias in one pass over x and dy; each output is optional.
/// dweight and dbias are reduced in a fixed order: results are bitwise reproducible.
void conv1d_backward(const Conv1dBackwardArgs& args, const Stream& stream = {});

}  // namespace shortconv
