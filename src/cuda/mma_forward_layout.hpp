// Shared-memory layout of the tensor-core forward (conv1d_fwd_mma.cu): the pipeline stages of
// 64-channel tiles, and each channel's weights as 32-bit pairs in two copies, even and odd,
// spaced so that a warp's fragment loads hit distinct banks. Host and device code: the host
// sizes the shared memory and passes the layout to the kernel; tests/test_tiled_grid.cu checks
// it without a GPU.
#pragma once

#include <cstddef>

namespace shortconv::cuda::mma_forward {

constexpr int kChannels = 64;   // channels of a tile
constexpr int kRows = 128;      // output rows of a piece: 8 blocks of 16
constexpr int kWeightPad = 32;  // w' [i + 32] = w[i]: fragment indices run from -31 to K + 14

struct Layout {
  int K, H, J, Hp, tile_rows, pairs;  // pairs: 32-bit weight pairs per channel and parity
};

__host__ __device__ inline Layout make_layout(int K) {
  Layout l;
  l.K = K;
  l.H = K - 1;
  l.J = 1 + (l.H + 15) / 16;
  l.Hp = 16 * (l.J - 1);
  l.tile_rows = l.Hp + kRows;
  l.pairs = (l.H + kWeightPad + 16 + 1) / 2 + 1;
  // A warp's fragment loads (8 lanes g, both parity copies, one channel) hit 32 distinct banks
  // when the copies lie 8-25 words apart mod 32 (tests/test_tiled_grid.cu: every K); K = 24's 37
  // pairs gave 2-way conflicts (0.1415 ms against K = 32's 0.1305, H100).
  const int rem = l.pairs % 32;
  l.pairs += rem < 8 ? 8 - rem : (rem > 25 ? 40 - rem : 0);
  return l;
}
__host__ __device__ inline std::size_t stage_bytes(const Layout& l) { return static_cast<std::size_t>(l.tile_rows) * kChannels * 2; }
__host__ __device__ inline std::size_t weight_bytes(const Layout& l) { return static_cast<std::size_t>(kChannels) * 2 * l.pairs * 4; }
__host__ __device__ inline std::size_t smem_bytes(const Layout& l, int stages) {
  return stage_bytes(l) * stages + weight_bytes(l) + kChannels * sizeof(float);
}

}  // namespace shortconv::cuda::mma_forward
