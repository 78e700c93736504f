// Host side of the bulk tensor copies (the copy engine, cp.async.bulk.tensor, compute capability
// 9.0 and newer): tensor maps of x-like tensors for the tiled kernels (device/bulk.cuh has the
// device side).
#pragma once

#include <cuda.h>  // CUtensorMap (a plain struct; nothing here links the driver library)

#include <cstdint>

#include "shortconv/dtype.hpp"

namespace shortconv::cuda {

/// How a kernel's tensor map addresses the rows of a tile (a kernel argument).
enum class BulkRows : int {
  none = 0,    // no map: every tile goes through cp.async
  batch = 1,   // [B, T, C]: coordinates (channel, position, sequence); positions before 0 and at
               // or past T read as zeros
  packed = 2,  // packed [total, C] (varlen): coordinates (channel, flat row, 0); rows outside a
               // sequence belong to its neighbours, so tiles reaching before a start use cp.async
};

/// Fills `map` with a tensor map for boxes of `box_rows` rows x `box_channels` channels of the
/// x-like tensor at `base` ([batches, rows, channels] with the given element strides, channel
/// stride 1), and returns how its rows are addressed: BulkRows::none where the device (compute
/// capability below 9.0), the driver or the layout (strides and base not 16-byte multiples,
/// sizes past int32 coordinates) does not allow one. `packed` marks a varlen tensor
/// (batches is then 1).
BulkRows make_tile_map(CUtensorMap* map, int device, const void* base, DType dtype, std::int64_t batches, std::int64_t rows,
                       std::int64_t channels, std::int64_t batch_stride, std::int64_t seq_stride, int box_rows, int box_channels,
                       bool packed);

}  // namespace shortconv::cuda
