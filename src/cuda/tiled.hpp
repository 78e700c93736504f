// Host side of the pipelined (shared-memory tile) kernels: grid shape, shared-memory sizing and
// the entry points conv1d_fwd.cu / conv1d_bwd.cu try before their register-window kernels.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>

#include "../params.hpp"
#include "check.hpp"
#include "device/sequences.cuh"

namespace shortconv::cuda {

/// Widest K the tiled kernels take; wider ones use the generic kernels. The tile holds K-1 halo
/// rows per 64-row piece, so past this the halo dominates.
constexpr std::int64_t kTiledMaxK = 128;

/// Bytes of one shared-memory tile of `rows` rows of 64 channels.
__host__ __device__ constexpr std::size_t tiled_stage_bytes(std::size_t elem_bytes, int rows) {
  return static_cast<std::size_t>(rows) * 64 * elem_bytes;
}

/// Jobs are (channel tile of 64 or 128, run of flat tokens); blocks stride over them. Runs
/// [0, head_runs) are run_rows long, the later ones tail_rows (the last one cut at `rows`).
struct TiledGrid {
  std::int64_t rows = 0;       // flat tokens
  std::int64_t ctiles = 1;     // channel tiles
  std::int64_t run_rows = 64;  // a multiple of the piece (64 rows; 128 in the tensor-core kernels)
  std::int64_t runs = 1;
  std::int64_t jobs = 1;
  std::int64_t head_runs = 1;   // runs of run_rows rows
  std::int64_t tail_rows = 64;  // rows of each later run (a multiple of the piece)
  unsigned grid = 1;

  /// Flat rows [r0, r1) of run `run`.
  __host__ __device__ void run_range(std::int64_t run, std::int64_t& r0, std::int64_t& r1) const {
    const bool head = run < head_runs;
    r0 = head ? run * run_rows : head_runs * run_rows + (run - head_runs) * tail_rows;
    const std::int64_t end = r0 + (head ? run_rows : tail_rows);
    r1 = end < rows ? end : rows;
  }
};

/// Whether 16-byte copies can move the rows of a tensor with `elem`-byte elements: it is absent,
/// or its base is 16-byte aligned and both strides (in elements) are whole 16-byte multiples.
inline bool rows_aligned16(const void* ptr, std::int64_t batch_stride, std::int64_t seq_stride, std::size_t elem) {
  const auto vec = static_cast<std::int64_t>(16 / elem);
  return ptr == nullptr || (reinterpret_cast<std::uintptr_t>(ptr) % 16 == 0 && batch_stride % vec == 0 && seq_stride % vec == 0);
}

/// How a grid of jobs meets the SMs.
enum class Blocks {
  resident,  // at most the resident blocks, each looping over its share of the jobs
  per_job,   // a block a job (up to the grid limit; blocks loop past it): the hardware hands the
             // next job to whichever SM frees first. Static shares left the SMs of an H100 busy
             // 8.7% above to 18% below their mean active cycles (ncu, bf16 forward), and the
             // kernel as slow as its slowest SM
};

/// Per-job grids only: at least the last `tail_percent` of the pieces (the head keeps whole
/// runs) go in shorter runs, about `tail_waves` jobs a resident block of them (their runs take
/// whole pieces, so rounded); none: every run the same length.
struct Taper {
  std::int64_t tail_percent = 0;
  std::int64_t tail_waves = 0;
};

/// Runs long enough that the resident blocks get about `waves` jobs each (one wave when waves is
/// 1: a block then owns one run, which keeps per-block workspaces to one per resident block).
/// Runs are whole pieces of `piece_rows`; a job spans `tile_channels` channels. The run count,
/// and so a backward's partials ([runs][K+1][C]), stays near waves x resident / channel tiles
/// whatever the token count (with a taper up to ((1 - tail fraction) waves + tail_waves) x
/// resident / channel tiles).
inline TiledGrid make_tiled_grid(std::int64_t rows, std::int64_t channels, std::int64_t resident_blocks, std::int64_t waves,
                                 std::int64_t piece_rows = 64, std::int64_t tile_channels = 64, Blocks blocks = Blocks::resident,
                                 std::int64_t min_run_pieces = 4, Taper taper = {}) {
  TiledGrid g;
  g.rows = rows;
  g.ctiles = (channels + tile_channels - 1) / tile_channels;
  const std::int64_t pieces = (rows + piece_rows - 1) / piece_rows;
  const std::int64_t want_jobs = std::max<std::int64_t>(1, resident_blocks * waves);
  const std::int64_t runs_wanted = std::max<std::int64_t>(1, want_jobs / g.ctiles);
  std::int64_t pieces_per_run = std::max<std::int64_t>(1, (pieces + runs_wanted - 1) / runs_wanted);
  const std::int64_t spread = pieces_per_run;  // before the floor
  if (blocks == Blocks::per_job) {
    // Runs of at least min_run_pieces pieces where the jobs still fill the resident blocks: with
    // one or two channel tiles (C <= 256) `waves` jobs a block would otherwise cut runs to a
    // single piece, each paying a pipeline fill, the weights and (backward) a partials row of its
    // own. H100, B=8 T=4096 C=256 K=4, 4 against 1: bf16 forward 0.0132 -> 0.0126 ms, backward
    // 0.0336 -> 0.0305, f32 backward 0.0467 -> 0.0428, but f32 forward 0.0260 -> 0.0273 (its
    // launch passes 1); B=1 T=65536 C=128: bf16 forward 0.0131-0.0136 -> 0.0120, backward 0.0387
    // -> 0.0297.
    const std::int64_t fill = std::max<std::int64_t>(1, pieces * g.ctiles / std::max<std::int64_t>(1, resident_blocks));
    pieces_per_run = std::max(pieces_per_run, std::min(min_run_pieces, fill));
  }
  g.run_rows = pieces_per_run * piece_rows;
  g.runs = (rows + g.run_rows - 1) / g.run_rows;
  g.head_runs = g.runs;
  g.tail_rows = g.run_rows;
  if (blocks == Blocks::per_job && taper.tail_percent > 0 && taper.tail_waves > 0 && pieces_per_run == spread) {
    // Long runs first, then short ones: blocks start in index order, so the last jobs to start
    // are short and the SMs finish close together, while most rows pay few job starts. Not where
    // the floor above set the run length: those narrow shapes keep the runs it measured best.
    const std::int64_t tail_want = pieces * taper.tail_percent / 100;
    const std::int64_t head_runs = (pieces - tail_want) / pieces_per_run;
    const std::int64_t tail_pieces = pieces - head_runs * pieces_per_run;
    const std::int64_t tail_runs_wanted = std::max<std::int64_t>(1, resident_blocks * taper.tail_waves / g.ctiles);
    const std::int64_t tail_per_run = std::max<std::int64_t>(1, (tail_pieces + tail_runs_wanted - 1) / tail_runs_wanted);
    if (head_runs > 0 && tail_pieces > 0 && tail_per_run < pieces_per_run) {
      g.head_runs = head_runs;
      g.tail_rows = tail_per_run * piece_rows;
      g.runs = head_runs + (tail_pieces + tail_per_run - 1) / tail_per_run;
    }
  }
  g.jobs = g.runs * g.ctiles;
  constexpr std::int64_t kMaxGrid = 0x7fffffff;  // gridDim.x
  g.grid = static_cast<unsigned>(std::max<std::int64_t>(1, std::min(g.jobs, blocks == Blocks::resident ? resident_blocks : kMaxGrid)));
  return g;
}

/// Lets `kKernel` use the device's opt-in shared memory per block (once per device) and returns
/// that limit in bytes.
template <auto kKernel>
int set_max_dynamic_smem(int device) {
  static std::array<int, 64> limit{};
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  const int d = device >= 0 && device < static_cast<int>(limit.size()) ? device : 0;
  if (limit[d] == 0) {
    int optin = 0;
    SHORTCONV_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    cudaFuncAttributes attr{};  // the kernel's static shared memory counts against the same limit
    SHORTCONV_CUDA_CHECK(cudaFuncGetAttributes(&attr, kKernel));
    const int dynamic = optin - static_cast<int>(attr.sharedSizeBytes);
    SHORTCONV_CUDA_CHECK(cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, dynamic));
    limit[d] = dynamic;
  }
  return limit[d];
}

/// Blocks of `kernel` resident on the whole device at `threads` threads and `smem` bytes each.
template <class Kernel>
std::int64_t resident_blocks(Kernel kernel, int threads, std::size_t smem, int sms) {
  int per_sm = 0;
  SHORTCONV_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  return static_cast<std::int64_t>(std::max(per_sm, 1)) * sms;
}

/// 64-channel tiles a block takes, for kernels that can take `max_parts` of them (part i = threads
/// [128 i, 128 i + 128), shared memory [part_smem i, part_smem (i+1))): two tiles make every row a
/// block moves 256 contiguous bytes, but a shape with fewer jobs of two tiles than resident blocks
/// (B=1 T=512 C=1024: 64 jobs for 264 blocks on an H100) would leave SMs idle, so it keeps one.
template <class Kernel>
int tiled_parts(Kernel kernel, int max_parts, std::size_t part_smem, int smem_max, std::int64_t rows, std::int64_t channels,
                int sms, std::int64_t piece_rows = 64) {
  if (max_parts <= 1 || part_smem * 2 > static_cast<std::size_t>(smem_max)) return 1;
  const std::int64_t jobs = (rows + piece_rows - 1) / piece_rows * ((channels + 127) / 128);
  return jobs < resident_blocks(kernel, 256, part_smem * 2, sms) ? 1 : 2;
}

/// Launch the tiled kernel when it applies (16-byte aligned tensors, K <= kTiledMaxK, the tile
/// fits in shared memory); false leaves the call to the register-window kernels.
template <class T>
bool forward_tiled(const detail::ForwardParams& p, const SeqView& q, std::int64_t rows);

/// Narrowest K the tensor-core forward takes (conv1d_fwd_mma.cu). Measured on an H100 (bf16,
/// B=4 T=4096 C=4096), tensor cores vs FMA: K=4 0.137 / 0.113 ms, 16 0.141 / 0.141, 24 0.167 /
/// 0.178, 32 0.160 / 0.210, 64 0.195 / 0.389; below ~20 the FMA kernel is as fast or faster (and
/// agrees bitwise with conv1d_update).
constexpr std::int64_t kMmaMinK = 24;

/// Launches the tensor-core forward when it applies: 16-bit x with weights of the same dtype,
/// 16-byte aligned rows, kMmaMinK <= K <= kTiledMaxK and ForwardParams::tensor_cores.
template <class T>
bool forward_mma(const detail::ForwardParams& p, const SeqView& q, std::int64_t rows);

/// K range of the tensor-core backward (conv1d_bwd_mma.cu): its dweight product costs the same
/// for any K up to 112 (lags in the 7 free columns of one mma). Measured on an H100 (bf16, B=4
/// T=4096 C=4096), tensor cores (v11b, the version the bound was set with) vs FMA: K=9 0.297 /
/// 0.200 ms, 16 0.300 / 0.225, 24 0.314 / 0.405, 32 0.317 / 0.502, 64 0.365 / 0.758, 100 0.435 /
/// 35.1 (generic kernel); the final kernel (v11d): K=17 0.229, 32 0.240, 64 0.317, 100 0.360.
constexpr std::int64_t kMmaBwdMinK = 17;
constexpr std::int64_t kMmaBwdMaxK = 112;

/// Launches the tensor-core backward when it applies: 16-bit x, dy and weights of one dtype, no
/// SiLU, 16-byte aligned rows, kMmaBwdMinK <= K <= kMmaBwdMaxK and BackwardParams::tensor_cores.
/// Partials as backward_tiled (none when neither dweight nor dbias is wanted).
template <class T>
bool backward_mma(const detail::BackwardParams& p, const SeqView& q, std::int64_t rows, float** partials, std::int64_t* runs);

/// Widest K the tiled backward takes (dweight taps are register accumulators, K/4 a thread).
constexpr std::int64_t kTiledBwdMaxK = 64;

/// Launches the tiled backward when it applies: dx, and dweight / dbias partials per run into
/// *partials ([*runs][K+1][C] f32, stream-ordered allocation the caller reduces and frees).
template <class T>
bool backward_tiled(const detail::BackwardParams& p, const SeqView& q, std::int64_t rows, float** partials, std::int64_t* runs);

}  // namespace shortconv::cuda
