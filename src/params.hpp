// Kernel parameters: what the front end hands to every backend after validation.
// Plain structs with typed sizes and int64 element strides; no ATen, no STL containers.
#pragma once

#include <cstdint>

#include "shortconv/dtype.hpp"

namespace shortconv::detail {

struct ConvShape {
  std::int64_t batch = 0;     // B
  std::int64_t seqlen = 0;    // T
  std::int64_t channels = 0;  // C
  std::int64_t width = 0;     // K
};

struct ForwardParams {
  ConvShape shape;
  DType dtype = DType::f32;   // x and y
  DType wdtype = DType::f32;  // weight
  DType bdtype = DType::f32;  // bias

  const void* x = nullptr;  // [B, T, C]
  std::int64_t x_batch_stride = 0, x_seq_stride = 0;
  const void* weight = nullptr;  // [C, K]
  std::int64_t w_channel_stride = 0, w_width_stride = 0;
  const void* bias = nullptr;  // [C] or null
  std::int64_t bias_stride = 0;
  void* y = nullptr;  // [B, T, C]
  std::int64_t y_batch_stride = 0, y_seq_stride = 0;

  int device_index = 0;
  void* stream = nullptr;  // cudaStream_t on CUDA
};

struct BackwardParams {
  ConvShape shape;
  DType dtype = DType::f32;   // x, dy, dx
  DType wdtype = DType::f32;  // weight, dweight, dbias

  const void* x = nullptr;  // [B, T, C]
  std::int64_t x_batch_stride = 0, x_seq_stride = 0;
  const void* weight = nullptr;  // [C, K]
  std::int64_t w_channel_stride = 0, w_width_stride = 0;
  const void* dy = nullptr;  // [B, T, C]
  std::int64_t dy_batch_stride = 0, dy_seq_stride = 0;
  void* dx = nullptr;  // [B, T, C] or null
  std::int64_t dx_batch_stride = 0, dx_seq_stride = 0;
  void* dweight = nullptr;  // [C, K] or null
  std::int64_t dw_channel_stride = 0, dw_width_stride = 0;
  void* dbias = nullptr;  // [C] or null
  std::int64_t dbias_stride = 0;

  int device_index = 0;
  void* stream = nullptr;
};

}  // namespace shortconv::detail
