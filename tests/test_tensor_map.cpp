// The tensor maps behind the 16-bit forward's bulk copies (src/cuda/tensor_map.hpp): taken for
// the layouts the tiled kernels copy, refused (BulkRows::none, so the kernel keeps cp.async)
// where the copy engine cannot address the rows. Needs a device for the capability query and the
// driver's encoder: skips without one.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdint>

#include "cuda/tensor_map.hpp"

namespace shortconv::cuda {
namespace {

class BulkCopyMap : public testing::Test {
 protected:
  void SetUp() override {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
      cudaGetLastError();
      GTEST_SKIP() << "no CUDA device";
    }
    ASSERT_EQ(cudaDeviceGetAttribute(&major_, cudaDevAttrComputeCapabilityMajor, 0), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&buf_, 1 << 20), cudaSuccess);
  }
  void TearDown() override {
    if (buf_ != nullptr) cudaFree(buf_);
  }
  // The map for an x-like tensor at byte offset `offset` of the buffer (the encoder reads no
  // memory: sizes past the buffer are fine).
  BulkRows map(std::size_t offset, DType dtype, std::int64_t batches, std::int64_t rows, std::int64_t channels, std::int64_t batch_stride,
               std::int64_t seq_stride, int box_rows, bool packed = false) {
    CUtensorMap m;
    return make_tile_map(&m, 0, static_cast<char*>(buf_) + offset, dtype, batches, rows, channels, batch_stride, seq_stride, box_rows,
                         64, packed);
  }
  int major_ = 0;
  void* buf_ = nullptr;
};

TEST_F(BulkCopyMap, TakenWhereTheCopyEngineAddressesTheRows) {
  const BulkRows batch = major_ >= 9 ? BulkRows::batch : BulkRows::none;
  const BulkRows packed = major_ >= 9 ? BulkRows::packed : BulkRows::none;
  EXPECT_EQ(map(0, DType::bf16, 4, 4096, 4096, 4096 * 4096, 4096, 64 + 15), batch);
  EXPECT_EQ(map(0, DType::f16, 1, 16384, 264, 0, 264, 64 + 8, true), packed);
  EXPECT_EQ(map(0, DType::f32, 2, 257, 264, 257 * 3 * 264, 3 * 264, 64 + 3), batch);  // a column slice of [B, T, 3C]
  EXPECT_EQ(map(0, DType::bf16, 1, 5, 8, 0, 8, 64 + 127), batch);                     // K = 128: a box of 191 rows
}

TEST_F(BulkCopyMap, RefusedWhereItCannot) {
  EXPECT_EQ(map(2, DType::bf16, 4, 4096, 4096, 4096 * 4096, 4096, 79), BulkRows::none);           // base not 16-byte aligned
  EXPECT_EQ(map(0, DType::bf16, 4, 4096, 4100, 4096 * 4100, 4100, 79), BulkRows::none);           // rows 8200 bytes apart
  EXPECT_EQ(map(0, DType::bf16, 4, 4096, 4096, 4096 * 4096 + 4, 4096, 79), BulkRows::none);       // batches 8 bytes off
  EXPECT_EQ(map(0, DType::bf16, 1, (std::int64_t{1} << 31) - 64, 64, 0, 64, 79), BulkRows::none);  // rows past int32 coordinates
  EXPECT_EQ(map(0, DType::bf16, 4, 4096, 4096, 4096 * 4096, 4096, 257), BulkRows::none);          // a box of more than 256 rows
  EXPECT_EQ(map(0, DType::bf16, 0, 4096, 4096, 4096 * 4096, 4096, 79), BulkRows::none);           // empty
}

}  // namespace
}  // namespace shortconv::cuda
