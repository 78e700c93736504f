// Host-side checks of the tiled kernels' launch arithmetic (src/cuda/tiled.hpp): the runs of a
// grid cover the flat rows exactly once, in order, whatever the shape, the resident blocks, the
// waves, the run floor and the taper. Runs without a GPU: nothing here touches a device.
#include <gtest/gtest.h>

#include <cstdint>
#include <sstream>
#include <string>

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

}  // namespace
}  // namespace shortconv::cuda
