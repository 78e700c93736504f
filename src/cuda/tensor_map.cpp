// Tensor maps for the bulk tensor copies (tensor_map.hpp). The encoder is a driver function,
// reached through the runtime's entry-point query so that the library does not link libcuda.
#include "tensor_map.hpp"

#include <cuda_runtime_api.h>
#include <cudaTypedefs.h>

#include <array>
#include <cstring>
#include <limits>
#include <mutex>

namespace shortconv::cuda {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult status{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &status) == cudaSuccess &&
        status == cudaDriverEntryPointSuccess)
      fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
    cudaGetLastError();  // a failed query leaves no error behind for the next launch check
  });
  return fn;
}

bool has_bulk_copies(int device) {
  static std::array<int, 64> cache{};  // 0 unknown, 1 yes, 2 no
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (device < 0 || device >= static_cast<int>(cache.size())) return false;
  if (cache[device] == 0) {
    int major = 0;
    const bool ok = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess;
    if (!ok) cudaGetLastError();
    cache[device] = ok && major >= 9 ? 1 : 2;
  }
  return cache[device] == 1;
}

}  // namespace

BulkRows make_tile_map(CUtensorMap* map, int device, const void* base, DType dtype, std::int64_t batches, std::int64_t rows,
                       std::int64_t channels, std::int64_t batch_stride, std::int64_t seq_stride, int box_rows, int box_channels,
                       bool packed) {
  if (!has_bulk_copies(device) || encoder() == nullptr) return BulkRows::none;
  const std::int64_t elem = static_cast<std::int64_t>(dtype_size(dtype));
  // Coordinates are int32: a box may start up to box_rows before 0 and end box_rows past the end.
  constexpr std::int64_t kMaxCoord = std::numeric_limits<std::int32_t>::max();
  if (batches < 1 || rows < 1 || channels < 1 || batches > kMaxCoord || channels + box_channels > kMaxCoord ||
      rows + box_rows > kMaxCoord || box_rows < 1 || box_rows > 256 || box_channels * elem % 16 != 0)
    return BulkRows::none;
  const std::int64_t row_bytes = seq_stride * elem;
  constexpr std::int64_t kMaxStride = std::int64_t{1} << 40;
  if (reinterpret_cast<std::uintptr_t>(base) % 16 != 0 || row_bytes <= 0 || row_bytes % 16 != 0 || row_bytes >= kMaxStride)
    return BulkRows::none;
  // A single sequence's batch stride is never used; give it a valid one (its rows' extent, or
  // one row where that would pass the limit).
  const std::int64_t batch_bytes =
      batches == 1 ? (rows < kMaxStride / row_bytes ? row_bytes * rows : row_bytes) : batch_stride * elem;
  if (batch_bytes <= 0 || batch_bytes % 16 != 0 || batch_bytes >= kMaxStride) return BulkRows::none;
  CUtensorMapDataType type;
  switch (dtype) {
    case DType::f32: type = CU_TENSOR_MAP_DATA_TYPE_FLOAT32; break;
    case DType::bf16: type = CU_TENSOR_MAP_DATA_TYPE_BFLOAT16; break;
    case DType::f16: type = CU_TENSOR_MAP_DATA_TYPE_FLOAT16; break;
    default: return BulkRows::none;  // (index dtypes: never x)
  }
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(channels), static_cast<cuuint64_t>(rows), static_cast<cuuint64_t>(batches)};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(row_bytes), static_cast<cuuint64_t>(batch_bytes)};
  const cuuint32_t box[3] = {static_cast<cuuint32_t>(box_channels), static_cast<cuuint32_t>(box_rows), 1};
  const cuuint32_t steps[3] = {1, 1, 1};
  std::memset(map, 0, sizeof(*map));
  // Elements outside the tensor (channels past C, rows before 0 or past the end) land as zeros.
  const CUresult r = encoder()(map, type, 3, const_cast<void*>(base), dims, strides, box, steps, CU_TENSOR_MAP_INTERLEAVE_NONE,
                               CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) return BulkRows::none;
  return packed ? BulkRows::packed : BulkRows::batch;
}

}  // namespace shortconv::cuda
