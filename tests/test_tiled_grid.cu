// Host-side checks of the tiled kernels' launch arithmetic (src/cuda/tiled.hpp): the runs of a
// grid cover the flat rows exactly once, in order, whatever the shape, the resident blocks, the
// waves, the run floor and the taper; and the tensor-core forward's layout
// (src/cuda/mma_forward_layout.hpp). Runs without a GPU: nothing here touches a device.
#include <gtest/gtest.h>

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

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

// The tensor-core forward (conv1d_fwd_mma.cu) computes output row t = 8m + n of a piece (tile row
// Hp + t) as mma chunks j: A[m][k] = input row 16j + 8m + k, B[k][n] = w[16j + k - n + H - Hp]
// (zero outside 0..H). For every K it takes: each (output, tap) of the contract meets its input
// row exactly once, every other product has a zero weight, and the rows read lie in the stage
// (the piece's rows, then the 8 zero rows).
TEST(TensorCoreForwardLayout, ChunksMeetEveryTapOnce) {
  for (int K = static_cast<int>(kMmaMinK); K <= static_cast<int>(kTiledMaxK); ++K) {
    const mma_forward::Layout L = mma_forward::make_layout(K);
    ASSERT_EQ(L.H, K - 1);
    ASSERT_EQ(L.Hp % 8, 0) << "K " << K;
    ASSERT_EQ(L.tile_rows, L.Hp + mma_forward::kRows) << "K " << K;
    ASSERT_EQ(mma_forward::stage_rows(L), L.tile_rows + 8) << "K " << K;
    for (int t = 0; t < mma_forward::kRows; ++t) {
      const int m = t / 8, n = t % 8;
      std::vector<int> met(K, 0);
      for (int j = 0; j < L.J; ++j) {
        for (int k = 0; k < 16; ++k) {
          const int row = 16 * j + 8 * m + k, tap = 16 * j + k - n + L.H - L.Hp;
          ASSERT_LT(row, mma_forward::stage_rows(L)) << "K " << K << " t " << t << " j " << j << " k " << k;
          if (tap < 0 || tap > L.H) continue;  // a zero weight
          EXPECT_EQ(row, L.Hp + t - L.H + tap) << "K " << K << " t " << t << " tap " << tap << ": not the contract's input";
          ++met[tap];
        }
      }
      for (int tap = 0; tap < K; ++tap) ASSERT_EQ(met[tap], 1) << "K " << K << " t " << t << " tap " << tap;
    }
  }
}

// Lane (g, q)'s B fragment of chunk j: b0 = B[2q..2q+1][g], b1 = B[2q+8..2q+9][g], read as the
// channel's pairs 16j + 2q - g + 7 and 8 on (pair n: taps first_tap + n and the next). Every pair
// is inside the channel's row, holds the fragment's taps, and the 32 lanes' loads hit distinct
// banks or the same word.
TEST(TensorCoreForwardLayout, WeightPairsAreTheFragmentsAndConflictFree) {
  for (int K = static_cast<int>(kMmaMinK); K <= static_cast<int>(kTiledMaxK); ++K) {
    const mma_forward::Layout L = mma_forward::make_layout(K);
    for (int j = 0; j < L.J; ++j) {
      for (int half = 0; half < 2; ++half) {
        long bank_word[32];
        for (long& b : bank_word) b = -1;
        for (int lane = 0; lane < 32; ++lane) {
          const int g = lane / 4, q = lane % 4;
          const int pair = 16 * j + 2 * q - g + 7 + 8 * half;
          ASSERT_GE(pair, 0) << "K " << K << " j " << j << " lane " << lane;
          ASSERT_LT(pair, L.pairs) << "K " << K << " j " << j << " lane " << lane;
          const int want = 16 * j + (2 * q + 8 * half) - g + L.H - L.Hp;  // B[2q (+8)][g]
          EXPECT_EQ(mma_forward::first_tap(L) + pair, want) << "K " << K << " j " << j << " lane " << lane;
          long& seen = bank_word[pair % 32];
          EXPECT_TRUE(seen < 0 || seen == pair) << "K " << K << " j " << j << ": lane " << lane << " shares a bank";
          seen = pair;
        }
      }
    }
  }
}

// The in-place transposition, simulated on a host copy of one stage: for each 32-row step, lane l
// addresses row 32u + l of its chunk (rows past the zero rows: zero row l % 8), ldmatrix .trans
// then stmatrix at the same addresses transpose each 8x8 matrix (rows of 8 channels) in place.
// Afterwards segment_offset(rb, ch, chunk) holds rows 8rb..8rb+7 of channel ch, for every row
// block the fragments read (the zero block included), and the same byte address as the kernel's
// XOR form (v ^ 16 ch) + 128 ch.
TEST(TensorCoreForwardLayout, InPlaceTranspositionGivesTheSegments) {
  for (int K : {24, 25, 32, 33, 40, 48, 57, 64, 100, 127, 128}) {
    const mma_forward::Layout L = mma_forward::make_layout(K);
    const int rows = mma_forward::stage_rows(L);
    std::vector<int> stage(static_cast<std::size_t>(rows) * mma_forward::kChannels, -1);
    auto value = [](int r, int c) { return r < 0 ? 0 : 1 + r * 64 + c; };  // distinct, non-zero in the tile
    for (int r = 0; r < rows; ++r)
      for (int chunk = 0; chunk < 8; ++chunk)
        for (int e = 0; e < 8; ++e)
          stage[mma_forward::chunk_offset(r, chunk) + e] = r < L.tile_rows ? value(r, 8 * chunk + e) : 0;
    for (int chunk = 0; chunk < 8; ++chunk) {
      for (int u = 0; u < (L.tile_rows + 31) / 32; ++u) {
        for (int i = 0; i < 4; ++i) {  // matrix i of the x4: lanes 8i..8i+7
          int addr[8];
          for (int r = 0; r < 8; ++r) {
            const int row = 32 * u + 8 * i + r;
            addr[r] = mma_forward::chunk_offset(row < L.tile_rows + 8 ? row : L.tile_rows + r, chunk);
          }
          int m[8][8];
          for (int r = 0; r < 8; ++r)
            for (int c = 0; c < 8; ++c) m[r][c] = stage[addr[r] + c];
          for (int r = 0; r < 8; ++r)
            for (int c = 0; c < 8; ++c) stage[addr[r] + c] = m[c][r];
        }
      }
      for (int rb = 0; rb <= L.tile_rows / 8; ++rb) {
        for (int ch = 0; ch < 8; ++ch) {
          const int off = mma_forward::segment_offset(rb, ch, chunk);
          for (int e = 0; e < 8; ++e) {
            const int r = 8 * rb + e;
            ASSERT_EQ(stage[off + e], r < L.tile_rows ? value(r, 8 * chunk + ch) : 0)
                << "K " << K << " chunk " << chunk << " row block " << rb << " channel " << ch << " element " << e;
          }
          const unsigned v = 1024u * rb + 16u * ((chunk ^ rb) & 7);
          ASSERT_EQ((v ^ (16u * ch)) + 128u * ch, 2u * off) << "K " << K << " rb " << rb << " ch " << ch << " chunk " << chunk;
        }
      }
    }
  }
}

// The shared-memory accesses of one instruction, per 8-lane phase of 16-byte rows, fall in
// distinct bank groups: the transposition (8 consecutive stage rows, one chunk), the fragment
// ldmatrix (row blocks 2j + r + 8 (i & 1) + (i >> 1) of one channel, r = 0..7), and the staging of
// y (rows 8g + 2q + (e & 1) + 64 (e >> 1) of lanes 8p..8p+7).
TEST(TensorCoreForwardLayout, SharedAccessesAreConflictFree) {
  auto distinct16 = [](const std::vector<long>& bytes) {  // 8 addresses of 16-byte segments
    std::vector<int> seen(8, 0);
    for (long b : bytes) {
      if (b % 16 != 0) return false;
      if (seen[(b / 16) % 8]++) return false;
    }
    return true;
  };
  for (int K = static_cast<int>(kMmaMinK); K <= static_cast<int>(kTiledMaxK); ++K) {
    const mma_forward::Layout L = mma_forward::make_layout(K);
    for (int chunk = 0; chunk < 8; ++chunk) {
      for (int r0 = 0; r0 + 8 <= mma_forward::stage_rows(L); r0 += 8) {
        std::vector<long> ld;
        for (int r = 0; r < 8; ++r) ld.push_back(2L * mma_forward::chunk_offset(r0 + r, chunk));
        EXPECT_TRUE(distinct16(ld)) << "K " << K << " transposition rows " << r0 << " chunk " << chunk;
      }
      for (int j = 0; j < L.J; ++j) {
        for (int i = 0; i < 4; ++i) {
          for (int ch = 0; ch < 8; ++ch) {
            std::vector<long> frag;
            for (int r = 0; r < 8; ++r) frag.push_back(2L * mma_forward::segment_offset(2 * j + r + 8 * (i & 1) + i / 2, ch, chunk));
            EXPECT_TRUE(distinct16(frag)) << "K " << K << " fragment j " << j << " matrix " << i << " channel " << ch;
          }
        }
      }
      for (int e = 0; e < 4; ++e) {
        for (int p = 0; p < 4; ++p) {
          std::vector<long> st;
          for (int lane = 8 * p; lane < 8 * p + 8; ++lane) {
            const int t = 8 * (lane / 4) + 2 * (lane % 4) + (e & 1) + 64 * (e >> 1);
            st.push_back(2L * mma_forward::chunk_offset(L.Hp + t, chunk));
          }
          EXPECT_TRUE(distinct16(st)) << "K " << K << " staging e " << e << " phase " << p << " chunk " << chunk;
        }
      }
    }
    // Two pipeline stages and the weights fit an H100's 227 KB a block at every width.
    EXPECT_LE(mma_forward::smem_bytes(L, 2), 227u * 1024) << "K " << K;
  }
  // At K <= 32, four blocks of two stages fit an H100 SM's 228 KB (with 1 KB each the system
  // keeps): 16 warps an SM.
  EXPECT_LE(4 * (mma_forward::smem_bytes(mma_forward::make_layout(32), 2) + 1024), 228u * 1024);
}

}  // namespace
}  // namespace shortconv::cuda
