// Host-side launch geometry shared by the CUDA kernels, and the launcher entry points that
// src/cuda/register.cpp puts in the registry.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../params.hpp"
#include "shortconv/error.hpp"

namespace shortconv::cuda {

/// How a launch tiles [B, T, C]: each thread owns `vec` consecutive channels and a run of
/// `tokens_per_thread` tokens; a block is block_x channel groups by block_y token runs. Jobs
/// (one per block-sized tile) are flattened into one int64 index that blocks stride over, so no
/// grid dimension limit applies.
struct Geometry {
  int vec = 1;
  int block_x = 32, block_y = 4;
  std::int64_t tokens_per_thread = 32;
  std::int64_t tiles_per_seq = 1;  // token tiles of block_y * tokens_per_thread along T
  std::int64_t cblocks = 1;        // channel tiles of block_x * vec along C
  std::int64_t jobs = 1;           // batch * tiles_per_seq * cblocks
  unsigned grid = 1;
};

inline Geometry make_geometry(const detail::ConvShape& s, int vec, std::int64_t tokens_per_thread, int threads,
                              int sm_count) {
  Geometry g;
  g.vec = vec;
  const std::int64_t cvecs = (s.channels + vec - 1) / vec;
  // Threads go along channels first (coalesced rows), the rest along tokens; short sequences
  // (decode) put the whole block on channels instead of leaving token threads idle.
  const std::int64_t token_runs = (s.seqlen + tokens_per_thread - 1) / tokens_per_thread;
  int bx = 1;
  while (bx < threads && bx < cvecs && (bx < 32 || static_cast<std::int64_t>(threads / bx) > token_runs)) bx *= 2;
  int by = 1;
  while (bx * by * 2 <= threads && by < token_runs) by *= 2;
  g.block_x = bx;
  g.block_y = by;
  g.tokens_per_thread = std::max<std::int64_t>(1, std::min(tokens_per_thread, s.seqlen));
  const std::int64_t tile_tokens = g.block_y * g.tokens_per_thread;
  g.tiles_per_seq = (s.seqlen + tile_tokens - 1) / tile_tokens;
  g.cblocks = (cvecs + bx - 1) / bx;
  g.jobs = s.batch * g.tiles_per_seq * g.cblocks;
  const std::int64_t max_grid = static_cast<std::int64_t>(sm_count) * 64;
  g.grid = static_cast<unsigned>(std::min(g.jobs, max_grid));
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

}  // namespace shortconv::cuda

namespace shortconv::cuda {
// Temporary guard while the CUDA kernels learn the sequence-model features.
inline void reject_features(const detail::ForwardParams& p) {
  if (p.silu || p.seqs.varlen() || p.initial_state.data != nullptr || p.final_state.data != nullptr)
    throw Unsupported("CUDA conv1d_forward: activation, states and cu_seqlens are not implemented yet");
}
inline void reject_features(const detail::BackwardParams& p) {
  if (p.silu || p.seqs.varlen() || p.initial_state.data != nullptr || p.d_final_state.data != nullptr ||
      p.d_initial_state.data != nullptr)
    throw Unsupported("CUDA conv1d_backward: activation, states and cu_seqlens are not implemented yet");
}
}  // namespace shortconv::cuda
