// Shared-memory layout of the tensor-core forward (conv1d_fwd_mma.cu): the pipeline stages of
// 64-channel tiles, each transposed in place for the fragments, and each channel's weights as
// 32-bit pairs. Host and device code: the host sizes the shared memory and passes the layout to
// the kernel; tests/test_tiled_grid.cu checks it without a GPU.
#pragma once

#include <cstddef>

namespace shortconv::cuda::mma_forward {

constexpr int kChannels = 64;  // channels of a tile
constexpr int kRows = 128;     // output rows of a piece: 16 blocks of 8

struct Layout {
  int K, H;       // width, H = K - 1
  int Hp;         // halo rows above a piece's outputs: H rounded up to a multiple of 8
  int J;          // 16-row input chunks an output block of 8 takes (one mma each)
  int tile_rows;  // rows a piece loads: Hp + kRows
  int pairs;      // weight pairs a channel: (w[k0 + n], w[k0 + n + 1]) for n < pairs, k0 = first_tap
};

__host__ __device__ inline Layout make_layout(int K) {
  Layout l;
  l.K = K;
  l.H = K - 1;
  l.Hp = (l.H + 7) / 8 * 8;
  // Output block m (rows 8m..8m+7) takes input rows 8m - Hp .. 8m + 7: Hp + 8 rows, 16 a chunk.
  l.J = (l.Hp + 8 + 15) / 16;
  l.tile_rows = l.Hp + kRows;
  l.pairs = 16 * l.J + 6;  // lane (g, q) reads pairs 16j + 2q - g + 7 and 8 on
  return l;
}

/// A stage row of 64 16-bit channels is eight 16-byte chunks; chunk c of row r lives at
/// c ^ swizzle(r). Row bits 0-2 XOR bits 3-5: 8 consecutive rows (a transposing ldmatrix), and
/// the 8 rows a quarter warp stages its outputs in (8g + 2q (+1) for g = 2p, 2p + 1), fall in 8
/// different chunks.
__host__ __device__ inline int swizzle(int r) { return (r ^ (r >> 3)) & 7; }
/// Element offset of chunk `chunk` of stage row r.
__host__ __device__ inline int chunk_offset(int r, int chunk) { return r * kChannels + ((chunk ^ swizzle(r)) * 8); }
/// After the in-place transposition, rows 8rb..8rb+7 of channel ch of chunk `chunk` (one 16-byte
/// segment) sit where chunk `chunk` of row 8rb + ch was.
__host__ __device__ inline int segment_offset(int rb, int ch, int chunk) { return chunk_offset(8 * rb + ch, chunk); }

/// First tap of a channel's pair 0: the lowest a fragment asks for (j = 0, q = 0, g = 7).
__host__ __device__ inline int first_tap(const Layout& l) { return l.H - l.Hp - 7; }
/// A stage: the piece's rows, then 8 rows of zeros (row block tile_rows / 8 of the transposed
/// copy, which the last chunk reads against zero weights).
__host__ __device__ inline int stage_rows(const Layout& l) { return l.tile_rows + 8; }
__host__ __device__ inline std::size_t stage_bytes(const Layout& l) { return static_cast<std::size_t>(stage_rows(l)) * kChannels * 2; }
__host__ __device__ inline std::size_t weight_bytes(const Layout& l) { return static_cast<std::size_t>(kChannels) * l.pairs * 4; }
/// Dynamic shared memory of a block: 128 bytes to align the stages to 128, the stages, the
/// weights, the bias and 16 bytes of per-group flags.
__host__ __device__ inline std::size_t smem_bytes(const Layout& l, int stages) {
  return 128 + stage_bytes(l) * stages + weight_bytes(l) + kChannels * sizeof(float) + 16;
}

}  // namespace shortconv::cuda::mma_forward
