// Kernel parameters: what the front end hands to every backend after validation.
// Plain structs with typed sizes and int64 element strides; no ATen, no STL containers.
//
// Sequences: in batch mode x is [B, T, C] and sequence b is x[b]. In varlen mode (cu_seqlens set)
// x is one packed [total, C] run of N sequences: x_batch_stride is 0, `seqlen` is the total token
// count and sequence s covers tokens [cu_seqlens[s], cu_seqlens[s+1]). `batch` is always the
// number of sequences, which is also the leading dimension of every state tensor.
#pragma once

#include <cstdint>

#include "shortconv/dtype.hpp"

namespace shortconv::detail {

struct ConvShape {
  std::int64_t batch = 0;     // B, or N sequences in varlen mode
  std::int64_t seqlen = 0;    // T, or the total token count in varlen mode
  std::int64_t channels = 0;  // C
  std::int64_t width = 0;     // K
};

/// Where the sequences are: batch rows, or packed runs described by cu_seqlens.
struct Sequences {
  const void* cu_seqlens = nullptr;  // [N+1] of cu_dtype, null in batch mode
  DType cu_dtype = DType::i32;
  bool varlen() const { return cu_seqlens != nullptr; }
};

/// A [N, K-1, C] state tensor (channel stride 1).
struct StateRef {
  const void* data = nullptr;
  std::int64_t batch_stride = 0, seq_stride = 0;
};
struct MutableStateRef {
  void* data = nullptr;
  std::int64_t batch_stride = 0, seq_stride = 0;
};

struct ForwardParams {
  ConvShape shape;
  Sequences seqs;
  DType dtype = DType::f32;   // x, y and the states
  DType wdtype = DType::f32;  // weight
  DType bdtype = DType::f32;  // bias
  bool silu = false;
  bool tensor_cores = true;  // CUDA: the tensor-core forward may run (Conv1dForwardArgs)

  const void* x = nullptr;  // [B, T, C]
  std::int64_t x_batch_stride = 0, x_seq_stride = 0;
  const void* weight = nullptr;  // [C, K]
  std::int64_t w_channel_stride = 0, w_width_stride = 0;
  const void* bias = nullptr;  // [C] or null
  std::int64_t bias_stride = 0;
  void* y = nullptr;  // [B, T, C]
  std::int64_t y_batch_stride = 0, y_seq_stride = 0;
  StateRef initial_state;       // data null when absent
  MutableStateRef final_state;  // data null when absent; may equal initial_state

  int device_index = 0;
  void* stream = nullptr;  // cudaStream_t on CUDA
};

struct BackwardParams {
  ConvShape shape;
  Sequences seqs;
  DType dtype = DType::f32;   // x, dy, dx and the states
  DType wdtype = DType::f32;  // weight, dweight, dbias
  DType bdtype = DType::f32;  // bias
  bool silu = false;
  bool tensor_cores = true;  // CUDA: the tensor-core backward may run (Conv1dBackwardArgs)

  const void* x = nullptr;  // [B, T, C]
  std::int64_t x_batch_stride = 0, x_seq_stride = 0;
  const void* weight = nullptr;  // [C, K]
  std::int64_t w_channel_stride = 0, w_width_stride = 0;
  const void* bias = nullptr;  // [C] or null (read only for silu)
  std::int64_t bias_stride = 0;
  const void* dy = nullptr;  // [B, T, C]
  std::int64_t dy_batch_stride = 0, dy_seq_stride = 0;
  void* dx = nullptr;  // [B, T, C] or null
  std::int64_t dx_batch_stride = 0, dx_seq_stride = 0;
  void* dweight = nullptr;  // [C, K] or null
  std::int64_t dw_channel_stride = 0, dw_width_stride = 0;
  void* dbias = nullptr;  // [C] or null
  std::int64_t dbias_stride = 0;
  StateRef initial_state;           // forward initial state, data null when absent
  StateRef d_final_state;           // incoming gradient of final_state, data null when absent
  MutableStateRef d_initial_state;  // written when data is not null

  int device_index = 0;
  void* stream = nullptr;
};

struct UpdateParams {
  ConvShape shape;  // batch B, seqlen T_new, channels C, width K
  DType dtype = DType::f32;
  DType wdtype = DType::f32;
  DType bdtype = DType::f32;
  bool silu = false;

  const void* x = nullptr;  // [B, T_new, C]
  std::int64_t x_batch_stride = 0, x_seq_stride = 0;
  const void* weight = nullptr;
  std::int64_t w_channel_stride = 0, w_width_stride = 0;
  const void* bias = nullptr;
  std::int64_t bias_stride = 0;
  void* y = nullptr;  // [B, T_new, C]
  std::int64_t y_batch_stride = 0, y_seq_stride = 0;
  MutableStateRef state;  // [S, K-1, C]
  std::int64_t num_slots = 0;
  const void* state_indices = nullptr;  // [B] of index_dtype, or null: row b uses slot b
  DType index_dtype = DType::i32;
  std::int64_t index_stride = 1;

  int device_index = 0;
  void* stream = nullptr;
};

}  // namespace shortconv::detail
