// `shortconv train`: distillation demo on the autograd tape. A fixed random teacher, the
// GatedDeltaNet-style short-conv mixer
//
//   out = W_o · (silu(conv_K(W_in · x)) ⊙ (W_g · x))     x [B, T, d_model], W_in, W_g [C, d_model],
//                                                      conv weight [C, K], W_o [d_model, C]
//
// and a student of the same shape from another random init, trained with AdamW on the MSE to the
// teacher's output for x drawn fresh each step.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace shortconv::tool {

struct TrainOptions {
  std::int64_t d_model = 256;  // D
  std::int64_t channels = 512; // C
  std::int64_t width = 4;      // K
  std::int64_t seqlen = 256;   // T
  std::int64_t batch = 8;      // B
  std::int64_t steps = 400;     // ~12 s on the idle 2-core dev VM: room to spare under load for the 60 s goal
  float lr = 1.5e-2f;          // peak AdamW learning rate (after warm-up, before cosine decay)
  float weight_decay = 0.0f;
  std::int64_t warmup = 30;    // linear warm-up steps
  std::optional<std::string> device;  // default: CUDA when available
  std::optional<std::string> csv;     // loss curve
  std::optional<std::string> svg;     // loss plot
  std::uint64_t seed = 0;
  double time_limit = 0.0;     // seconds; 0: none
  bool profile = false;        // per-op timing table
  bool tf32 = false;           // CUDA: TF32 tensor cores in the GEMMs
};

/// Runs the demo; returns the process exit code.
int run_train(const TrainOptions& options);

/// OpenBLAS picks its kernels when it loads. Version 0.3.21 (Debian 12) does not know newer Xeons
/// (e.g. family 6 model 207 of the dev VM) and falls back to its generic SSE3 "Prescott" kernels,
/// about 4x slower than its AVX-512 ones. When a CPU run of `train` finds that, and
/// OPENBLAS_CORETYPE is unset, this restarts the process (execv of /proc/self/exe with the same
/// arguments) with OPENBLAS_CORETYPE=SkylakeX (AVX-512) or Haswell (AVX2 + FMA), after a note on
/// stderr. Returns when no restart is needed or possible.
void restart_for_blas_kernels(const TrainOptions& options, char** argv);

}  // namespace shortconv::tool
