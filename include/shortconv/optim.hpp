// Optimizers for autograd::Parameter: each step updates the values in place on their device
// (a CPU loop or one CUDA kernel per parameter, enqueued on the given stream, no synchronisation)
// from the gradients the last Tape::backward() wrote. Same update rules as PyTorch's SGD and AdamW.
#pragma once

#include <cstdint>
#include <vector>

#include "shortconv/autograd.hpp"
#include "shortconv/stream.hpp"
#include "shortconv/tensor.hpp"

namespace shortconv::autograd {

struct SGDOptions {
  float lr = 1e-2f;
  float momentum = 0.0f;      // 0: plain SGD, no state
  float weight_decay = 0.0f;  // L2 term added to the gradient: g + weight_decay * p
};

/// g = grad + wd·p;  with momentum: v = μ·v + g (v starts at 0), p -= lr·v;  else p -= lr·g.
class SGD {
 public:
  /// Every parameter must require a gradient and live on `stream`'s device (a default stream
  /// follows the parameters' device). Throws InvalidArgument otherwise.
  SGD(std::vector<Parameter*> params, SGDOptions options, Stream stream = {});
  void step();
  void set_lr(float lr) noexcept { options_.lr = lr; }
  const SGDOptions& options() const noexcept { return options_; }

 private:
  std::vector<Parameter*> params_;
  SGDOptions options_;
  Stream stream_;
  std::vector<Tensor> velocity_;  // one per parameter when momentum != 0
};

struct AdamWOptions {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 1e-2f;  // decoupled: p *= 1 - lr·weight_decay
};

/// Step t (from 1): p *= 1 - lr·wd;  m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²;
/// p -= (lr / (1-β1^t)) · m / (sqrt(v) / sqrt(1-β2^t) + eps).
class AdamW {
 public:
  /// As SGD: parameters that require a gradient, on `stream`'s device.
  AdamW(std::vector<Parameter*> params, AdamWOptions options, Stream stream = {});
  void step();
  void set_lr(float lr) noexcept { options_.lr = lr; }
  const AdamWOptions& options() const noexcept { return options_; }
  /// Steps taken so far (t of the last step).
  std::int64_t steps() const noexcept { return steps_; }

 private:
  std::vector<Parameter*> params_;
  AdamWOptions options_;
  Stream stream_;
  std::vector<Tensor> m_, v_;
  std::int64_t steps_ = 0;
};

}  // namespace shortconv::autograd
