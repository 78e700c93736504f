// Host-side launch geometry shared by the CUDA kernels, and the launcher entry points that
// src/cuda/register.cpp puts in the registry.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../params.hpp"
#include "shortconv/error.hpp"

namespace shortconv::cuda {

/// How a launch tiles the flat token axis (all sequences, rows = B*T or the packed total) by C:
/// each thread owns `vec` consecutive channels and a run of `tokens_per_thread` tokens (split at
/// sequence boundaries); a block is block_x channel groups by block_y token runs. Jobs (one per
/// block-sized tile) are flattened into one int64 index that blocks stride over, so no grid
/// dimension limit applies.
struct Geometry {
  int vec = 1;
  int block_x = 32, block_y = 4;
  std::int64_t tokens_per_thread = 32;
  std::int64_t rows = 0;      // flat tokens
  std::int64_t tiles = 1;     // token tiles of block_y * tokens_per_thread
  std::int64_t cblocks = 1;   // channel tiles of block_x * vec along C
  std::int64_t jobs = 1;      // tiles * cblocks
  unsigned grid = 1;
};

/// `mean_len` is the mean sequence length: runs longer than that mostly restart their windows.
inline Geometry make_geometry(std::int64_t rows, std::int64_t channels, std::int64_t mean_len, int vec, int elem_bytes,
                              std::int64_t tokens_per_thread, int threads, int sm_count) {
  Geometry g;
  g.vec = vec;
  g.rows = rows;
  const std::int64_t cvecs = (channels + vec - 1) / vec;
  // Runs as long as asked, but short enough that the launch still has ~2048 threads per SM to
  // keep loads in flight (small shapes), and no longer than a sequence (runs restart at ends).
  const std::int64_t fill = rows * cvecs / (static_cast<std::int64_t>(sm_count) * 2048);
  g.tokens_per_thread = std::max<std::int64_t>(1, std::min({tokens_per_thread, std::max<std::int64_t>(4, fill), mean_len, rows}));
  // Threads go along channels first, until a block reads at least 512 contiguous bytes of a row
  // (DRAM pages are used far better than by scattered 256-byte pieces), the rest along tokens;
  // few token runs (decode shapes) put the whole block on channels instead of leaving token
  // threads idle.
  const std::int64_t token_runs = (rows + g.tokens_per_thread - 1) / g.tokens_per_thread;
  int bx = 1;
  while (bx < threads && bx < cvecs &&
         (bx < 32 || bx * vec * elem_bytes < 512 || static_cast<std::int64_t>(threads / bx) > token_runs))
    bx *= 2;
  int by = 1;
  while (bx * by * 2 <= threads && by < token_runs) by *= 2;
  g.block_x = bx;
  g.block_y = by;
  const std::int64_t tile_tokens = g.block_y * g.tokens_per_thread;
  g.tiles = (rows + tile_tokens - 1) / tile_tokens;
  g.cblocks = (cvecs + bx - 1) / bx;
  g.jobs = g.tiles * g.cblocks;
  const std::int64_t max_grid = static_cast<std::int64_t>(sm_count) * 64;
  g.grid = static_cast<unsigned>(std::max<std::int64_t>(1, std::min(g.jobs, max_grid)));
  return g;
}

/// Multiprocessor count of `device` (cached per device).
int sm_count(int device);

template <DType kDtype>
void forward_fast(const detail::ForwardParams& p);
template <DType kDtype>
void backward_fast(const detail::BackwardParams& p);
template <DType kDtype>
void forward_naive(const detail::ForwardParams& p);
template <DType kDtype>
void backward_naive(const detail::BackwardParams& p);
template <DType kDtype>
void update_fast(const detail::UpdateParams& p);

}  // namespace shortconv::cuda

