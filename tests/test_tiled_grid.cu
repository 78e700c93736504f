// Host-side checks of the tiled kernels' launch arithmetic (src/cuda/tiled.hpp): the runs of a
// grid cover the flat rows exactly once, in order, whatever the shape, the resident blocks, the
// waves, the run floor and the taper; and the tensor-core forward's weight layout
// (src/cuda/mma_forward_layout.hpp). Runs without a GPU: nothing here touches a device.
#include <gtest/gtest.h>

#include <cstdint>
#include <sstream>
#include <string>

#include "cuda/mma_forward_layout.hpp"
#include "cuda/tiled.hpp"

namespace shortconv::cuda {
namespace {

std::string describe(const TiledGrid& g) {
  std::ostringstream os;
  os << "rows " << g.rows << " ctiles " << g.ctiles << " run_rows " << g.run_rows << " runs " << g.runs << " head_runs "
     << g.head_runs << " tail_rows " << g.tail_rows << " jobs " << g.jobs << " grid " << g.grid;
  return os.str();
}

// Every run non-empty, run r starting where run r-1 ended, the last ending at g.rows; whole
// pieces except at the end; the head runs not shorter than the tail ones.
void expect_covers(const TiledGrid& g, std::int64_t piece_rows) {
  ASSERT_EQ(g.jobs, g.runs * g.ctiles) << describe(g);
  ASSERT_GE(g.head_runs, 1) << describe(g);
  ASSERT_LE(g.head_runs, g.runs) << describe(g);
  EXPECT_EQ(g.run_rows % piece_rows, 0) << describe(g);
  EXPECT_EQ(g.tail_rows % piece_rows, 0) << describe(g);
  EXPECT_LE(g.tail_rows, g.run_rows) << describe(g);
  EXPECT_GE(g.grid, 1u) << describe(g);
  EXPECT_LE(static_cast<std::int64_t>(g.grid), g.jobs) << describe(g);
  std::int64_t expect = 0;
  for (std::int64_t r = 0; r < g.runs; ++r) {
    std::int64_t r0 = -1, r1 = -1;
    g.run_range(r, r0, r1);
    ASSERT_EQ(r0, expect) << "run " << r << ": " << describe(g);
    ASSERT_GT(r1, r0) << "run " << r << ": " << describe(g);
    ASSERT_EQ(r1 - r0, r1 == g.rows ? r1 - r0 : (r < g.head_runs ? g.run_rows : g.tail_rows)) << "run " << r << ": " << describe(g);
    expect = r1;
  }
  EXPECT_EQ(expect, g.rows) << describe(g);
}

TEST(TiledGrid, RunsCoverTheRowsOnce) {
  for (std::int64_t rows : {1, 63, 64, 65, 129, 512, 1000, 16384, 16385, 32768, 65536, 1 << 24})
    for (std::int64_t channels : {7, 64, 72, 128, 256, 1024, 4096, 8192})
      for (std::int64_t resident : {1, 132, 264, 528})
        for (std::int64_t waves : {1, 2, 8})
          for (std::int64_t piece_rows : {64, 128})
            for (Blocks blocks : {Blocks::resident, Blocks::per_job})
              for (std::int64_t min_run : {1, 4})
                for (Taper taper : {Taper{}, Taper{20, 2}, Taper{35, 1}, Taper{90, 16}}) {
                  const TiledGrid g = make_tiled_grid(rows, channels, resident, waves, piece_rows, 128, blocks, min_run, taper);
                  expect_covers(g, piece_rows);
                  if (HasFatalFailure()) return;
                  if (blocks == Blocks::resident) EXPECT_LE(static_cast<std::int64_t>(g.grid), resident) << describe(g);
                  if (blocks == Blocks::resident || taper.tail_percent == 0) EXPECT_EQ(g.head_runs, g.runs) << describe(g);
                }
}

TEST(TiledGrid, TaperShortensTheLastRuns) {
  // The bf16 K = 16 forward of B=4 T=4096 C=4096 on an H100 (264 resident blocks of 128
  // channels): 16 runs of 16 pieces uniform; with 20% in 2 tail jobs a block, 12 runs of 16
  // pieces, then 4 x 16 = 64 pieces in runs of 4 (16 runs: 512 tail jobs over 32 channel tiles).
  const TiledGrid uniform = make_tiled_grid(16384, 4096, 264, 2, 64, 128, Blocks::per_job);
  EXPECT_EQ(uniform.runs, 16);
  EXPECT_EQ(uniform.run_rows, 1024);
  EXPECT_EQ(uniform.head_runs, 16);
  const TiledGrid g = make_tiled_grid(16384, 4096, 264, 2, 64, 128, Blocks::per_job, 4, Taper{20, 2});
  expect_covers(g, 64);
  EXPECT_EQ(g.run_rows, 1024);
  EXPECT_EQ(g.head_runs, 12);
  EXPECT_EQ(g.tail_rows, 256);
  EXPECT_EQ(g.runs, 12 + 16);
  // Nothing to shorten: runs of one piece stay uniform.
  const TiledGrid one = make_tiled_grid(512, 64, 264, 8, 64, 64, Blocks::per_job, 1, Taper{20, 2});
  EXPECT_EQ(one.run_rows, 64);
  EXPECT_EQ(one.head_runs, one.runs);
}

TEST(TiledGrid, NarrowShapesKeepTheRunFloor) {
  // B=1 T=65536 C=128, 16-bit (one 128-channel tile, 264 resident blocks): 8 jobs a block would
  // cut 1024 pieces into runs of one; the floor of 4 pieces is capped by the 3.9 pieces a
  // resident block gets, rounded down: runs of 3.
  const TiledGrid g = make_tiled_grid(65536, 128, 264, 8, 64, 128, Blocks::per_job);
  expect_covers(g, 64);
  EXPECT_EQ(g.run_rows, 3 * 64);
  const TiledGrid f32 = make_tiled_grid(65536, 128, 528, 8, 64, 64, Blocks::per_job, 1);
  EXPECT_EQ(f32.run_rows, 64);
  // A taper leaves runs the floor set alone.
  const TiledGrid tapered = make_tiled_grid(65536, 128, 264, 3, 64, 128, Blocks::per_job, 4, Taper{25, 6});
  expect_covers(tapered, 64);
  EXPECT_EQ(tapered.run_rows, 3 * 64);
  EXPECT_EQ(tapered.head_runs, tapered.runs);
}

TEST(TiledGrid, TaperedProblemsOfTheCudaSweep) {
  // The sweep's taper problems (test_cuda.cpp) on an H100's resident blocks (2 blocks of 128
  // channels an SM for the 16-bit forward at K <= 16 and the bf16 backward at K <= 4): forward
  // 4 x 9600 rows x 512 channels, runs of 5 pieces, then of 1; backward, the same shape at
  // K = 4, runs of 4 (112 of them), then of 1.
  const TiledGrid fwd = make_tiled_grid(4 * 9600, 512, 264, 2, 64, 128, Blocks::per_job, 4, Taper{20, 2});
  expect_covers(fwd, 64);
  EXPECT_EQ(fwd.run_rows, 5 * 64);
  EXPECT_EQ(fwd.tail_rows, 64);
  EXPECT_LT(fwd.head_runs, fwd.runs);
  const TiledGrid bwd = make_tiled_grid(4 * 9600, 512, 264, 3, 64, 128, Blocks::per_job, 4, Taper{25, 6});
  expect_covers(bwd, 64);
  EXPECT_EQ(bwd.run_rows, 4 * 64);
  EXPECT_EQ(bwd.head_runs, 112);
  EXPECT_EQ(bwd.tail_rows, 64);
  EXPECT_EQ(bwd.runs, 112 + 152);
}

// The tensor-core forward's A fragments (conv1d_fwd_mma.cu): for chunk j, lane (g, q) of a warp
// holds the Toeplitz weights A_j[m][k] = w[K-1 + k - m - 16 j] at (m, k) = (g, 2q), (g+8, 2q) and
// (g, 2q+8), each with the next tap in its high half. The kernel reads them as the 32-bit words
// wi, wi - 4 and wi + 4 of the channel's even or odd copy (copy p, word i: taps w'[2i + p] and
// w'[2i + p + 1], w'[n] = w[n - kWeightPad], 0 outside), with i0 = H + 2q - g + kWeightPad,
// p = i0 & 1, wi = (i0 - 16 j - p) / 2. For every K the kernel takes: each word is the one the
// fragment needs, inside its copy, and the 32 lanes' loads of one word hit distinct banks (or the
// same word).
TEST(TensorCoreForwardLayout, FragmentWordsAreInTheirCopyAndConflictFree) {
  using mma_forward::kWeightPad;
  for (int K = static_cast<int>(kMmaMinK); K <= static_cast<int>(kTiledMaxK); ++K) {
    const mma_forward::Layout L = mma_forward::make_layout(K);
    ASSERT_EQ(L.H, K - 1);
    ASSERT_GE(16 * (L.J - 1), L.H) << "K " << K << ": chunks short of the taps";
    for (int j = 0; j < L.J; ++j) {
      const int row_off[3] = {0, 8, 0}, col_off[3] = {0, 0, 8}, word_off[3] = {0, -4, 4};
      for (int f = 0; f < 3; ++f) {
        long bank_word[32];
        for (long& b : bank_word) b = -1;
        for (int lane = 0; lane < 32; ++lane) {
          const int g = lane / 4, q = lane % 4;
          const int i0 = L.H + 2 * q - g + kWeightPad, p = i0 & 1, wi = (i0 - 16 * j - p) / 2;
          const int word = wi + word_off[f];
          ASSERT_GE(word, 0) << "K " << K << " j " << j << " lane " << lane;
          ASSERT_LT(word, L.pairs) << "K " << K << " j " << j << " lane " << lane;
          // The fragment's first tap, in w' indices, and the word's.
          const int want = L.H + (2 * q + col_off[f]) - (g + row_off[f]) - 16 * j + kWeightPad;
          EXPECT_EQ(2 * word + p, want) << "K " << K << " j " << j << " lane " << lane << " fragment " << f;
          const long addr = static_cast<long>(p) * L.pairs + word;  // channel 0; others shift all lanes alike
          long& seen = bank_word[addr % 32];
          EXPECT_TRUE(seen < 0 || seen == addr) << "K " << K << " j " << j << " fragment " << f << ": lane " << lane
                                                << " shares bank " << addr % 32 << " with another word";
          seen = addr;
        }
      }
    }
    // Two pipeline stages and the weights fit an H100's 227 KB a block at every width.
    EXPECT_LE(mma_forward::smem_bytes(L, 2), 227u * 1024) << "K " << K;
  }
}

}  // namespace
}  // namespace shortconv::cuda
