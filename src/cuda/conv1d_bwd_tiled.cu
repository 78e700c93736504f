// Pipelined CUDA backward: the fast path for 16-byte aligned tensors and K <= kTiledBwdMaxK.
// dx, and per-run dweight / dbias partials, in one pass over x and dy (see conv1d_bwd.cu for the
// formulas; d_initial_state and the fixed-order reduction of the partials stay there).
//
// A block owns 64 channels and a run of flat tokens, cut into pieces of <= 64 rows (64 - (K-1)
// with SiLU and K <= 16, except K = 4) inside one sequence (device/tile.cuh). The 16-bit kernels for K <= 8
// without SiLU take 128 channels a block instead where the shape has jobs enough (tiled_parts in
// tiled.hpp): two 64-channel tiles, each with its own 4 warps
// and its own part of shared memory, sharing the piece walk and the barriers (rows of 256 bytes
// at the DRAM, as for f32; see conv1d_fwd_tiled.cu). Per piece at positions [p, p + n)
// of sequence s, a pipeline (3 stages for 16-bit types, 2 for f32 or with SiLU; one block barrier
// a piece, after which the next piece's copies go out) brings into shared memory, through
// cp.async by every thread or (16-bit, 8 < K <= 16 without SiLU, sm_90) one bulk tensor copy a
// tile where the maps hold the rows (as in conv1d_fwd_tiled.cu)
//   dy at [p, p + n + K - 1)            (zero past the sequence end: those terms are dropped)
//   x  at [p - (K-1), p + n (+ K - 1 with SiLU))   (initial state or zeros before position 0)
// With SiLU, g = dy * silu'(z) is computed first into an f32 tile, z recomputed from the x tile
// (at K = 4, pieces away from a sequence's ends compute g in registers instead: one_pass_group);
// without, g is the dy tile itself. Then, from shared memory:
//   dx rows:  warp w computes rows [16w, 16w + 16) with a window sliding down g;
//   dweight:  K <= 16: warp w accumulates every tap over its own rows (a window sliding down x,
//             g rows as coefficients) and the 4 warps' sums are added in order at the run's end;
//             wider: warp w owns taps w, w + 4, ... over every row (a window sliding down x in
//             steps of 4 rows); dbias rides along. Registers hold the partials for the whole run.
// At the end of a run the partials go to the workspace [runs][K+1][C]; no atomics, so the
// result depends only on the shape and the launch geometry.
#include <type_traits>

#include "check.hpp"
#include "device/bulk.cuh"
#include "device/common.cuh"
#include "device/sequences.cuh"
#include "device/tile.cuh"
#include "launch.hpp"
#include "tensor_map.hpp"
#include "tiled.hpp"

namespace shortconv::cuda {
namespace {

using detail::BackwardParams;
using namespace tile;

constexpr int kThreads = 128;
// dx rows of one register window: 8 where the dweight window is small (K <= 8; fewer registers,
// 4 blocks an SM: measured 199 -> 183 us at B=4 T=4096 C=4096 K=4 bf16 on an H100), else 16
// (8 measured slower there: more reads per FMA).
template <int kTaps, bool kTokenSplit>
constexpr int kSubRows = kTokenSplit && kTaps <= 8 ? 8 : 16;
// Pieces in shared memory (x and dy tiles each): kStages - 1 in flight while one is computed.
template <class T>
constexpr int kStages = sizeof(T) == 4 ? 2 : 3;
constexpr int kWarps = kThreads / 32;

/// Shared-memory rows of each tile for width K and the dweight split (kTaps register taps a
/// thread: all taps of its warp's rows, or taps w, w+4, ... of every row), with or without SiLU.
struct BwdTiles {
  int x_rows, dy_rows, g_rows;
  __host__ __device__ BwdTiles(int K, int taps, bool token_split, bool silu) {
    const int H = K - 1, reach = token_split ? taps - 1 : kWarps * taps - 1;  // dweight reads up to row n-1+reach
    // With SiLU the last z row group (16 rows from row n + H - 1 rounded down) reads K - 1 past it.
    x_rows = kPieceRows + (H + (silu ? H : 0) > reach ? H + (silu ? H : 0) : reach) + (silu ? kGroupRows : 0);
    dy_rows = kPieceRows + H;
    g_rows = silu ? kPieceRows + H : 0;
  }
};

/// Stages in use: with SiLU the f32 g tile takes the room of one, which keeps 3 blocks an SM.
template <class T>
__host__ __device__ int bwd_stages(bool silu) {
  return silu ? 2 : kStages<T>;
}

template <class T>
__host__ __device__ std::size_t bwd_smem_bytes(const BwdTiles& t, int K, bool silu) {
  return bwd_stages<T>(silu) * (tiled_stage_bytes(sizeof(T), t.x_rows) + tiled_stage_bytes(sizeof(T), t.dy_rows)) +
         tiled_stage_bytes(sizeof(float), t.g_rows) + static_cast<std::size_t>(K) * kTileC * sizeof(float);
}

// kTokenSplit: warp w accumulates every tap (kTaps >= K) over its own rows [16w, 16w + 16) of each
// piece, and the 4 warps' partials are added in a fixed order at the end of the run (K <= 16).
// Otherwise warp w owns taps w, w + 4, ... (kTaps = K/4 rounded up) over every row.
template <int kTaps, bool kTokenSplit>
constexpr int kBwdMaxK = kTokenSplit ? kTaps : kWarps * kTaps;  // the widest K an instantiation takes
// 64-channel tiles a block can take (the launch picks 1 or this; launch bounds are for this):
// 2 for the 16-bit K <= 8 kernels, whose registers allow 4 blocks of 128 threads an SM.
template <class T, int kTaps, bool kTokenSplit>
constexpr int kMaxParts = sizeof(T) == 2 && kTokenSplit && kTaps <= 8 ? 2 : 1;

// The kernel whose tiles may come through bulk copies (16-bit, 8 < K <= 16; without SiLU, decided
// at launch).
template <class T, int kTaps, bool kTokenSplit>
constexpr bool kBulkCopies = sizeof(T) == 2 && kTokenSplit && kTaps == 16;

template <class T, int kTaps, bool kTokenSplit>
__global__ __launch_bounds__(kThreads * kMaxParts<T, kTaps, kTokenSplit>,
                             (kSubRows<kTaps, kTokenSplit> == 8 ? 4 : 3) / kMaxParts<T, kTaps, kTokenSplit>) void backward_tiled_kernel(BackwardParams p, SeqView q, TiledGrid g, float* __restrict__ ws,
                                                                                           const __grid_constant__ CUtensorMap xmap,
                                                                                           const __grid_constant__ CUtensorMap dymap,
                                                                                           BulkRows rows_mode) {
  extern __shared__ __align__(128) unsigned char smem_raw[];  // (bulk copies land 128-byte aligned)
  constexpr int kMaxK = kBwdMaxK<kTaps, kTokenSplit>;
  const int K = static_cast<int>(p.shape.width), H = K - 1;
  const BwdTiles tl(K, kTaps, kTokenSplit, p.silu);
  // The block's tiles (blockDim.x / 128 of them); this thread's tile, its index there, and the
  // tile's part of shared memory (the layout below, once a tile).
  constexpr bool kOne = kMaxParts<T, kTaps, kTokenSplit> == 1;
  const int parts = kOne ? 1 : static_cast<int>(blockDim.x) / kThreads;
  // (Single-tile kernels keep tid = threadIdx.x: the K <= 16 kernel measured 6% slower with the
  // modulo, H100, bf16 K=16, same instruction count; the compiler's schedule differed.)
  const int part = kOne ? 0 : static_cast<int>(threadIdx.x) / kThreads;
  const int tid = static_cast<int>(kOne ? threadIdx.x : threadIdx.x % kThreads);
  unsigned char* const part_base = smem_raw + part * bwd_smem_bytes<T>(tl, K, p.silu);
  const std::size_t x_bytes = tiled_stage_bytes(sizeof(T), tl.x_rows), dy_bytes = tiled_stage_bytes(sizeof(T), tl.dy_rows);
  const int stages = bwd_stages<T>(p.silu);
  auto x_stage = [&](int st) { return reinterpret_cast<T*>(part_base + st * (x_bytes + dy_bytes)); };
  auto dy_stage = [&](int st) { return reinterpret_cast<T*>(part_base + st * (x_bytes + dy_bytes) + x_bytes); };
  float* gsm = reinterpret_cast<float*>(part_base + stages * (x_bytes + dy_bytes));              // [g_rows][64]
  float* wsm = reinterpret_cast<float*>(part_base + stages * (x_bytes + dy_bytes) + tiled_stage_bytes(sizeof(float), tl.g_rows));  // [K][64]

  const std::int64_t C = p.shape.channels;
  const int lane = threadIdx.x % 32, warp = (kOne ? threadIdx.x : threadIdx.x % kThreads) / 32;  // (unsigned arithmetic)
  const RowSource<T> xsrc{static_cast<const T*>(p.x), p.x_batch_stride, p.x_seq_stride, static_cast<const T*>(p.initial_state.data),
                          p.initial_state.batch_stride, p.initial_state.seq_stride, H};
  const RowSource<T> dysrc{static_cast<const T*>(p.dy), p.dy_batch_stride, p.dy_seq_stride, nullptr, 0, 0, H};
  const T* dfs = static_cast<const T*>(p.d_final_state.data);
  T* dx = static_cast<T*>(p.dx);
  const int x_extra = p.silu ? H : 0;
  // Bulk copies only in the kernel that takes them (kBulkCopies): a runtime switch in the others
  // cost them up to 56 bytes of spills. (No bulk copies in code for targets below sm_90 either:
  // conv1d_fwd_tiled.cu.)
  if (!kBulkCopies<T, kTaps, kTokenSplit> || !SHORTCONV_BULK_COPIES) rows_mode = BulkRows::none;
  // With bulk copies (rows_mode; 16-bit, no SiLU, K > 8), one mbarrier a stage and tile after
  // all the tiles' shared memory: thread 0 copies the x and dy tiles of a piece where the maps
  // hold their rows, and its arrival expects their bytes; the rest go through cp.async as before.
  std::uint64_t* const bars = reinterpret_cast<std::uint64_t*>(smem_raw + parts * bwd_smem_bytes<T>(tl, K, p.silu)) + part * kStages<T>;
  unsigned phases = 0;  // bit st: the parity of stage st's next phase
  if (kBulkCopies<T, kTaps, kTokenSplit> && rows_mode != BulkRows::none) {
    if (tid == 0) {
      for (int st = 0; st < kStages<T>; ++st) bulk::barrier_init(bars + st, 1);
      bulk::barrier_init_fence();
    }
    __syncthreads();
  }
  const bool packed = rows_mode == BulkRows::packed;
  // With SiLU and K <= 16, pieces of 64 - (K-1) rows make the g tile (piece + halo) exactly the
  // 4 warps' 16-row groups, so the z recompute is balanced over the warps. The SiLU backward at
  // K = 4 computes the g rows of interior pieces in its one-pass groups (below) and keeps pieces
  // of 64 rows; its g tile, for the pieces at a sequence's ends, then takes 67 rows (5 groups:
  // warp 0 computes two).
  // One-pass groups (one_pass_group below) where K is exactly the bucket's 4 or 16 taps.
  constexpr bool kOnePass = kTokenSplit && (kTaps == 4 || kTaps == 16);
  constexpr bool kSiluPass = kTokenSplit && kTaps == 4;
  const bool silu_pass = kSiluPass && p.silu && K == kTaps;
  const int piece_rows = p.silu && K <= kGroupRows && !silu_pass ? kPieceRows - H : kPieceRows;

  for (std::int64_t job = blockIdx.x; job < g.jobs; job += gridDim.x) {
    const std::int64_t c0 = ((job % g.ctiles) * parts + part) * kTileC, run = job / g.ctiles;  // (past C in a last part: no loads or stores)
    std::int64_t r0, r1;
    g.run_range(run, r0, r1);
    const std::int64_t c = c0 + 2 * lane;
    const int nc = static_cast<int>(max64(0, min64(2, C - c)));
    // SiLU's bias: raw bits now, converted after the job's first copies are issued (BiasPairStager).
    BiasPairStager bias_bits;
    if (p.silu) bias_bits.issue(p, c, nc);
    float2 dw[kTaps], db{0.0f, 0.0f};
#pragma unroll
    for (int t = 0; t < kTaps; ++t) dw[t] = {0.0f, 0.0f};
    // Terms outside a sequence meet the tiles' zeros there (x before position 0 without a state,
    // g past the end). Multiplied by finite factors they are zeros, and the full windows sum the
    // same terms in the same order as the masked forms (masked_sum, add_masked_row): the same
    // bits, up to the sign of a zero sum. So the masked forms run only where a factor is not
    // finite: this lane's weights of the job (checked once, on first need), or the g rows at
    // positions < K-1. Short sequences are mostly such rows.
    int weights_finite = -1;  // -1: not checked yet
    auto lane_weights_finite = [&]() {
      if (weights_finite < 0) weights_finite = coefs_finite(K, [&](int k) { return reinterpret_cast<const float2*>(wsm + k * kTileC)[lane]; }) ? 1 : 0;
      return weights_finite != 0;
    };

    auto load = [&](int st, const Piece& pc) {
      if (kBulkCopies<T, kTaps, kTokenSplit> && rows_mode != BulkRows::none) {
        // x rows [pos - H, ...) lie in the map from position H on (or, in a batch without a
        // state, anywhere: rows before 0 read as zeros); dy rows [pos, pos + n + H) always in a
        // batch (past T: zeros), in a packed batch while they stay inside the sequence.
        const bool x_bulk = pc.pos >= H || (!packed && xsrc.state == nullptr);
        const bool dy_bulk = !packed || pc.pos + pc.n + H <= pc.len;
        if (tid == 0) {
          const unsigned bytes = static_cast<unsigned>((x_bulk ? x_bytes : 0) + (dy_bulk ? dy_bytes : 0));
          if (bytes > 0) {
            bulk::fence_before_copy();
            bulk::arrive_expect_bytes(bars + st, bytes);
            const int s = packed ? 0 : static_cast<int>(pc.s);
            const std::int64_t row = packed ? pc.first + pc.pos : pc.pos;
            if (x_bulk) bulk::load_box(x_stage(st), &xmap, static_cast<int>(c0), static_cast<int>(row - H), s, bars + st);
            if (dy_bulk) bulk::load_box(dy_stage(st), &dymap, static_cast<int>(c0), static_cast<int>(row), s, bars + st);
          } else {
            bulk::arrive(bars + st);
          }
        }
        if (!x_bulk) load_rows<T, kThreads>(x_stage(st), xsrc, q, pc, pc.pos - H, pc.n + H + x_extra, c0, C, tid);
        if (!dy_bulk) load_rows<T, kThreads>(dy_stage(st), dysrc, q, pc, pc.pos, pc.n + H, c0, C, tid);
        return;
      }
      if constexpr (sizeof(T) == 2 && kTokenSplit && kTaps == 8) {  // measured faster there (tile.cuh)
        load_rows_per_row<T, kThreads>(x_stage(st), xsrc, q, pc, pc.pos - H, pc.n + H + x_extra, c0, C, tid);
        load_rows_per_row<T, kThreads>(dy_stage(st), dysrc, q, pc, pc.pos, pc.n + H, c0, C, tid);
      } else {
        load_rows<T, kThreads>(x_stage(st), xsrc, q, pc, pc.pos - H, pc.n + H + x_extra, c0, C, tid);
        load_rows<T, kThreads>(dy_stage(st), dysrc, q, pc, pc.pos, pc.n + H, c0, C, tid);
      }
    };
    // Loads now, stores after the first copies (conv1d_fwd_tiled.cu), for K <= 8: the K <= 16
    // kernel measured 3% slower with its 8 early loads a thread (H100, bf16 K=16: 0.220 against
    // 0.213 ms with the stores and loads together after the copies).
    WeightStager<kThreads, kMaxK, 4> weights;
    weights.issue(p, K, c0, C, tid);
    PieceWalker producer(q, r0, r1, piece_rows), consumer = producer;
#pragma unroll
    for (int st = 0; st < kStages<T> - 1; ++st) {
      if (st < stages - 1) {
        const Piece pc = producer.next();
        if (pc.n > 0) load(st, pc);
      }
      cp_async_commit();  // (an empty group past `stages`: the wait below counts the same)
    }
    weights.finish(wsm, p, K, c0, C, tid);
    const float2 bias = bias_bits.value(p);
    // The stage computed and the stage loaded this iteration, stepped round the ring (a modulo
    // by the runtime stage count was ~50 SASS instructions a piece).
    auto next_stage = [&](int st) { return st + 1 == stages ? 0 : st + 1; };
    // One block barrier a piece: the next piece's copies go out after it, into the stage every warp
    // has finished with (the previous piece's), so no barrier is needed after the sums. ncu (H100,
    // bf16 K=16): the barrier after the sums held 9% of the stall samples, warps waiting there for
    // the slowest warp of the piece and then again, at the next barrier, for the copies' issue.
    for (int st_use = 0, st_load = stages - 1;; st_use = next_stage(st_use), st_load = next_stage(st_load)) {
      const Piece pc = consumer.next();
      if (pc.n == 0) break;
      // This piece's copies are the oldest group in flight: the newer ones (stages - 2 of them,
      // the prologue's empty group included) may still be.
      if (kStages<T> == 3 && stages == 3) {
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      if (kBulkCopies<T, kTaps, kTokenSplit> && rows_mode != BulkRows::none) {
        bulk::wait(bars + st_use, (phases >> st_use) & 1u);
        phases ^= 1u << st_use;
      }
      __syncthreads();  // this piece is in shared memory, and every warp is done with the last one
      const Piece pn = producer.next();
      if (pn.n > 0) load(st_load, pn);
      cp_async_commit();
      const T* xt = x_stage(st_use);
      const T* dyt = dy_stage(st_use);

      // Whether the warp's 16-row group from tile row r_begin is whole and away from the
      // sequence's ends: no tap before position 0 (or a state there), no term past the end (so
      // no d_final_state row either).
      auto group_inside = [&](int r_begin) {
        return r_begin + kGroupRows <= pc.n && (xsrc.state != nullptr || pc.pos + r_begin >= H) &&
               pc.pos + r_begin + kGroupRows - 1 + H < pc.len;
      };
      // Whether this lane's dweight terms of g rows [r_begin, r_end) may all go through the
      // window: a state, no rows before position K-1, or finite g rows there (their missing
      // taps are the x tile's zeros).
      auto start_free = [&](const auto* gt, int r_begin, int r_end) {
        return xsrc.state != nullptr || pc.pos + r_begin >= H || rows_finite(gt, r_begin, static_cast<int>(min64(r_end, H - pc.pos)), lane);
      };
      // dx, dweight and dbias of a whole group in one pass down its g rows (group_inside; K is
      // kTaps), so each g row is read (or, with SiLU, computed) and converted once: in the windows
      // below the dx window and the dweight coefficients read it twice. The sums take the windows'
      // terms in the windows' order, so the results are the same bits. H100, bf16 B=4 T=4096
      // C=4096 K=4: 81.0M -> 67.7M instructions, 0.1689 -> 0.1652 ms.
      // kSilu (K = 4): g = dy * silu'(z) for g rows r_begin .. r_begin + 18, z from the x window the
      // dweight terms use, instead of the g tile and its barrier; the 3 rows past the group are
      // computed again by the next group (ncu, H100, bf16 B=4 T=4096 C=4096: the z window and the
      // g tile pass were half of the SiLU backward's 134M instructions; with this, 100M and 170.5
      // against 206.8 us alone).
      auto one_pass_group = [&](auto silu_tag, const auto* gt, int r_begin) {
        constexpr bool kSilu = decltype(silu_tag)::value;
        using G = std::remove_cv_t<std::remove_pointer_t<decltype(gt)>>;
        constexpr bool kTwoOps = kTaps == 16;  // lds2's two-instruction bf16 conversion: measured faster here only
        float2 acc[kGroupRows], wr[kTaps], xw[kTaps];
#pragma unroll
        for (int i = 0; i < kGroupRows; ++i) acc[i] = {0.0f, 0.0f};
#pragma unroll
        for (int k = 0; k < kTaps; ++k) {
          wr[k] = reinterpret_cast<const float2*>(wsm + (kTaps - 1 - k) * kTileC)[lane];
          xw[k] = lds2<T, kTwoOps>(xt, r_begin + k, lane);  // slot (j + t) % kTaps: x row j + t (z and dweight of g row j)
        }
        constexpr int kSteps = kGroupRows + kTaps - 1;
        // g row r_begin + m feeds dweight row m (m < 16) and dx rows m - k for taps k < K.
#pragma unroll
        for (int m = 0; m < kSteps; ++m) {
          float2 gv;
          if constexpr (kSilu) {
            float2 z = bias;  // window_sum's order: z += w[k] x[m + k], k = 0 .. K-1
#pragma unroll
            for (int k = 0; k < kTaps; ++k) {
              const float2 v = xw[(m + k) % kTaps];
              z.x = fmaf(wr[kTaps - 1 - k].x, v.x, z.x);
              z.y = fmaf(wr[kTaps - 1 - k].y, v.y, z.y);
            }
            const float2 d = lds2<T>(dyt, r_begin + m, lane);
            gv = {__fmul_rn(d.x, silu_grad_f(z.x)), __fmul_rn(d.y, silu_grad_f(z.y))};  // (rounded as the g tile stores it)
          } else {
            gv = lds2<G, kTwoOps>(gt, r_begin + m, lane);
          }
          if (m < kGroupRows) {
            db.x += gv.x;
            db.y += gv.y;
#pragma unroll
            for (int t = 0; t < kTaps; ++t) {
              const float2 v = xw[(m + t) % kTaps];
              dw[t].x = fmaf(gv.x, v.x, dw[t].x);
              dw[t].y = fmaf(gv.y, v.y, dw[t].y);
            }
          }
          // x row r_begin + m is done with; its slot takes row r_begin + m + kTaps (z needs the
          // window up to the last g row, dweight up to row 15).
          if (m + 1 < (kSilu ? kSteps : kGroupRows)) xw[m % kTaps] = lds2<T, kTwoOps>(xt, r_begin + m + kTaps, lane);
#pragma unroll
          for (int k = 0; k < kTaps; ++k) {
            const int i = m - k;
            if (i >= 0 && i < kGroupRows) {
              acc[i].x = fmaf(wr[k].x, gv.x, acc[i].x);
              acc[i].y = fmaf(wr[k].y, gv.y, acc[i].y);
            }
          }
        }
        if (dx != nullptr) {
          T* dxp = dx + q.offset(pc.s, pc.first, pc.pos + r_begin, p.dx_batch_stride, p.dx_seq_stride) + c;
          store_rows<kGroupRows, T>(dxp, p.dx_seq_stride, acc, kGroupRows, nc);
        }
      };
      // Rows [0, n + H) of g: positions past the sequence end are zero (so is dy there).
      auto run_piece = [&](const auto* gt) {
        using G = std::remove_cv_t<std::remove_pointer_t<decltype(gt)>>;
        // dw[t] += x[j + k] * g[j] for this thread's taps k = k_first + k_step * t that reach at
        // or after position 0 (row j of a piece without a state), and dbias += g[j].
        auto add_masked_row = [&](int j, int k_first, int k_step) {
          const float2 gv = lds2<G>(gt, j, lane);
          db.x += gv.x;
          db.y += gv.y;
          const std::int64_t k_min = H - (pc.pos + j);  // taps below reach before position 0
#pragma unroll
          for (int t = 0; t < kTaps; ++t) {
            const int k = k_first + k_step * t;
            if (k < K && k >= k_min) {
              const float2 v = lds2<T>(xt, j + k, lane);
              dw[t].x = fmaf(v.x, gv.x, dw[t].x);
              dw[t].y = fmaf(v.y, gv.y, dw[t].y);
            }
          }
        };
        const int r_begin = warp * kGroupRows;
        if constexpr (kOnePass && std::is_same_v<G, T>) {
          // K = kTaps without SiLU (f32 with SiLU too: its g tile has the type of x), a whole
          // 16-row group away from the sequence's ends (every group but a few).
          // (Also a sequence's first group where its g rows are finite, through start_free and
          // a warp vote, cost the K = 4 kernel 16 bytes of spills: not taken.)
          if (K == kTaps && group_inside(r_begin)) {
            one_pass_group(std::false_type{}, gt, r_begin);
            return;
          }
        }
        // dx rows [r_begin, r_begin + 16), kSubRows<kTaps, kTokenSplit> at a time: dx[j] = sum_k w[K-1-k] g[j + k]
        for (int r0 = r_begin; r0 < min(pc.n, r_begin + kGroupRows); r0 += kSubRows<kTaps, kTokenSplit>) {
          float2 acc[kSubRows<kTaps, kTokenSplit>];
#pragma unroll
          for (int i = 0; i < kSubRows<kTaps, kTokenSplit>; ++i) acc[i] = {0.0f, 0.0f};
          auto weight_rev = [&](int k) { return reinterpret_cast<const float2*>(wsm + (H - k) * kTileC)[lane]; };
          window_sum<kSubRows<kTaps, kTokenSplit>, 1, kMaxK>(acc, gt, r0, K, lane, weight_rev);
          const std::int64_t last = pc.pos + r0 + kSubRows<kTaps, kTokenSplit> - 1;  // position of the last row
          if (last + H >= pc.len) {
            // Rows within K-1 of the sequence end: no terms past it (the tile's zeros there; the
            // window's sums stand where this lane's weights are finite).
            if (!lane_weights_finite()) {
#pragma unroll
              for (int i = 0; i < kSubRows<kTaps, kTokenSplit>; ++i) {
                const std::int64_t left = pc.len - (pc.pos + r0 + i);  // positions from this row to the end
                if (left < K && left > 0) acc[i] = masked_sum(float2{0.0f, 0.0f}, gt, r0 + i, 0, static_cast<int>(left), lane, weight_rev);
              }
            }
            // The last K-1 positions also take d_final_state, row pos - (len - (K-1)).
            if (dx != nullptr && dfs != nullptr && nc > 0) {
#pragma unroll
              for (int i = 0; i < kSubRows<kTaps, kTokenSplit>; ++i) {
                const std::int64_t j = pc.pos + r0 + i - (pc.len - H);
                if (j >= 0 && r0 + i < pc.n) {
                  const T* f = dfs + pc.s * p.d_final_state.batch_stride + j * p.d_final_state.seq_stride + c;
                  acc[i].x += to_f32(f[0]);
                  if (nc > 1) acc[i].y += to_f32(f[1]);
                }
              }
            }
          }
          if (dx != nullptr) {
            T* dxp = dx + q.offset(pc.s, pc.first, pc.pos + r0, p.dx_batch_stride, p.dx_seq_stride) + c;
            store_rows<kSubRows<kTaps, kTokenSplit>, T>(dxp, p.dx_seq_stride, acc, pc.n - r0, nc);
          }
        }
        if constexpr (kTokenSplit) {  // dw[k] += g[j] * x[j + k] over this warp's rows j
          if (r_begin < pc.n) {
            const int r_end = min(pc.n, r_begin + kGroupRows);
            // Without a state, rows at positions p < K-1 have no taps before position 0: where a
            // g row there is not finite (start_free), they are added tap by tap here, the rest
            // through the window.
            int j0 = r_begin;
            if (!start_free(gt, r_begin, r_end)) j0 = static_cast<int>(min64(r_end, H - pc.pos));
            for (int j = r_begin; j < j0; ++j) add_masked_row(j, 0, 1);
            auto grad_row = [&](int i) {
              const float2 gv = lds2<G>(gt, j0 + i, lane);
              db.x += gv.x;
              db.y += gv.y;
              return gv;
            };
            // A whole group (the common case) takes a constant row count: no guarded steps
            // (ncu, H100, bf16 K=4: the guards were a third of the dweight window's instructions).
            if (r_end - j0 == kGroupRows) {
              window_sum<kTaps, 1, kGroupRows>(dw, xt, j0, kGroupRows, lane, grad_row);
            } else if (j0 < r_end) {
              window_sum<kTaps, 1, kGroupRows>(dw, xt, j0, r_end - j0, lane, grad_row);
            }
          }
        } else {  // dweight taps warp + 4t: rows j = a + 4m of the piece, x rows j + tap
          const bool masked = !start_free(gt, 0, pc.n);
          for (int a = 0; a < kWarps && a < pc.n; ++a) {
            // Rows j = a + 4m at positions < K-1 without a state: tap by tap (see above).
            int j0 = a;
            if (masked)
              for (; j0 < pc.n && pc.pos + j0 < H; j0 += kWarps) add_masked_row(j0, warp, kWarps);
            if (j0 < pc.n) {
              window_sum<kTaps, kWarps>(dw, xt, j0 + warp, (pc.n - j0 + kWarps - 1) / kWarps, lane, [&](int m) {
                const float2 gv = lds2<G>(gt, j0 + kWarps * m, lane);
                db.x += gv.x;
                db.y += gv.y;
                return gv;
              });
            }
          }
        }
      };
      if (silu_pass && pc.n == kPieceRows && group_inside(0) && group_inside(kPieceRows - kGroupRows)) {
        // An interior piece: every warp's group is inside, and computes its own g rows.
        if constexpr (kSiluPass) one_pass_group(std::true_type{}, dyt, warp * kGroupRows);
      } else if (p.silu) {
        // g rows in groups of 16, round robin over the warps: z from the x tile, then dy * silu'(z).
        for (int r_begin = warp * kGroupRows; r_begin < pc.n + H; r_begin += kWarps * kGroupRows) {
          float2 z[kGroupRows];
#pragma unroll
          for (int i = 0; i < kGroupRows; ++i) z[i] = bias;
          auto weight = [&](int k) { return reinterpret_cast<const float2*>(wsm + k * kTileC)[lane]; };
          window_sum<kGroupRows, 1, kMaxK>(z, xt, r_begin, K, lane, weight);
          // Without a state, z at position p < K-1 has no terms before position 0.
          if (xsrc.state == nullptr && pc.pos + r_begin < H && !lane_weights_finite())
            mask_sequence_start(z, bias, xt, r_begin, pc.pos + r_begin, K, lane, weight);
#pragma unroll
          for (int i = 0; i < kGroupRows; ++i) {
            const int r = r_begin + i;
            if (r >= pc.n + H) break;
            float2 gv{0.0f, 0.0f};
            if (pc.pos + r < pc.len) {
              const float2 d = lds2<T>(dyt, r, lane);
              gv = {__fmul_rn(d.x, silu_grad_f(z[i].x)), __fmul_rn(d.y, silu_grad_f(z[i].y))};
            }
            reinterpret_cast<float2*>(gsm + r * kTileC)[lane] = gv;
          }
        }
        __syncthreads();
        run_piece(static_cast<const float*>(gsm));
      } else {
        run_piece(dyt);
      }
    }
    cp_async_wait<0>();

    float* out = ws + run * (K + 1) * C;  // this run's [K+1][C]
    if constexpr (kTokenSplit) {
      // red[w][k][64]: warp w's partials (k = K: dbias), then summed over w in order.
      float* red = reinterpret_cast<float*>(part_base);
      __syncthreads();  // every warp is done with the stages
#pragma unroll
      for (int t = 0; t < kTaps; ++t)
        if (t < K) reinterpret_cast<float2*>(red + (warp * (K + 1) + t) * kTileC)[lane] = dw[t];
      reinterpret_cast<float2*>(red + (warp * (K + 1) + K) * kTileC)[lane] = db;
      __syncthreads();
      for (int i = tid; i < (K + 1) * kTileC; i += kThreads) {
        const std::int64_t cc = c0 + i % kTileC;
        float sum = red[i];
#pragma unroll
        for (int w = 1; w < kWarps; ++w) sum += red[w * (K + 1) * kTileC + i];
        if (cc < C) out[(i / kTileC) * C + cc] = sum;
      }
    } else {
#pragma unroll
      for (int t = 0; t < kTaps; ++t) {
        const int k = warp + kWarps * t;
        if (k < K) {
          if (nc > 0) out[k * C + c] = dw[t].x;
          if (nc > 1) out[k * C + c + 1] = dw[t].y;
        }
      }
      if (warp == 0) {
        if (nc > 0) out[K * C + c] = db.x;
        if (nc > 1) out[K * C + c + 1] = db.y;
      }
    }
    // The weights are reloaded for the next job, and the stages that held the partials are
    // filled again (by the copy engine too: its writes follow this thread's stores).
    if (kBulkCopies<T, kTaps, kTokenSplit> && rows_mode != BulkRows::none) bulk::fence_before_copy();
    __syncthreads();
  }
}

template <class T, int kTaps, bool kTokenSplit>
bool launch_tiled(const BackwardParams& p, const SeqView& q, std::int64_t rows, float** partials, std::int64_t* runs) {
  const int K = static_cast<int>(p.shape.width);
  const BwdTiles tl(K, kTaps, kTokenSplit, p.silu);
  // A tile's part: its stages, g tile and weights, and its stages' mbarriers (which the kernel
  // keeps after all the parts').
  std::size_t smem = bwd_smem_bytes<T>(tl, K, p.silu) + (kBulkCopies<T, kTaps, kTokenSplit> ? kStages<T> * sizeof(std::uint64_t) : 0);
  // The token split reduces its 4 warps' partials through the stage buffers.
  const std::size_t stages = bwd_stages<T>(p.silu) * (tiled_stage_bytes(sizeof(T), tl.x_rows) + tiled_stage_bytes(sizeof(T), tl.dy_rows));
  if (kTokenSplit && stages < static_cast<std::size_t>(kWarps) * (K + 1) * kTileC * sizeof(float)) return false;
  constexpr auto kernel = backward_tiled_kernel<T, kTaps, kTokenSplit>;
  // Two tiles a block where the kernel takes them, except with SiLU: its f32 g tile would leave
  // room for one 256-thread block an SM (3 blocks of 128 with one tile).
  const int smem_max = set_max_dynamic_smem<kernel>(p.device_index), sms = sm_count(p.device_index);
  if (smem > static_cast<std::size_t>(smem_max)) return false;
  const int parts = tiled_parts(kernel, p.silu ? 1 : kMaxParts<T, kTaps, kTokenSplit>, smem, smem_max, rows, p.shape.channels, sms);
  smem *= parts;
  const std::int64_t resident = resident_blocks(kernel, kThreads * parts, smem, sms);
  // K <= 4: a block a job, 6-8 jobs for each resident block (tiled.hpp); the partials grow to
  // that many times (resident blocks) x (K+1) x 64 or 128 channels: on an H100, bf16, 4.3 MB at
  // (4,4096,4096,4), 4.6 at (2,4096,8192,4), 5.2 at (1,65536,2048,4), bounded whatever T and C.
  // H100, bf16 B=4 T=4096 C=4096, against one run a resident block: K=4 0.1641 -> 0.1481 ms, SiLU
  // K=4 0.1763 -> 0.1547; at 4 / 8 jobs a block: K=2 0.1675 -> 0.1490 / 0.1479, (1,65536,2048,4)
  // 0.3178 -> 0.2928 / 0.2880. Wider K keeps one run a resident block: more were slower there
  // (K=8 0.1557 -> 0.1620 at 2 jobs a block, K=16 0.2047 -> 0.2088).
  // Since then K <= 4 tapers (tiled.hpp): runs for 3 jobs a resident block, then at least the
  // last 25% of the pieces in runs for 6 (at (4,4096,4096,4): 17 runs of 11 pieces, 35 of 2):
  // K=4 0.1475-0.1477 -> 0.1461 ms (0.1469 with runs for 2 jobs a block first; a tail for 8
  // jobs a block makes the same grid here and measured 0.1458).
  // At K=8 and 16 one block a job with a taper was slower (K=8 0.1532-0.1543 -> 0.1601-0.1656,
  // K=16 0.2037-0.2041 -> 0.2049-0.2113), and so was one block a job alone (0.1534-0.1547,
  // 0.2042-0.2045). Spans of pieces taken channel tile by channel tile, one a resident block
  // (balanced to a piece, but concurrent blocks no longer reading the same rows), measured
  // slower still (bench/NOTES.md v19e: K=16 0.1737 -> 0.2185).
  const bool many = K <= 4;
  const TiledGrid g = make_tiled_grid(rows, p.shape.channels, resident, many ? 3 : 1, kPieceRows, kTileC * parts,
                                      many ? Blocks::per_job : Blocks::resident, 4, many ? Taper{25, 6} : Taper{});
  const auto stream = static_cast<cudaStream_t>(p.stream);
  const std::size_t bytes = static_cast<std::size_t>(g.runs) * static_cast<std::size_t>(K + 1) * static_cast<std::size_t>(p.shape.channels) * sizeof(float);
  SHORTCONV_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(partials), bytes, stream));
  // Bulk copies of the x and dy tiles for 16-bit types at 8 < K <= 16 without SiLU
  // (conv1d_fwd_tiled.cu: the copy set-up of every thread a piece, here of two tiles).
  CUtensorMap xmap{}, dymap{};
  BulkRows rows_mode = BulkRows::none;
  if (kBulkCopies<T, kTaps, kTokenSplit> && !p.silu) {
    const bool packed = q.cu != nullptr;
    const std::int64_t batches = packed ? 1 : p.shape.batch;
    const BulkRows xm = make_tile_map(&xmap, p.device_index, p.x, p.dtype, batches, p.shape.seqlen, p.shape.channels, p.x_batch_stride,
                                      p.x_seq_stride, tl.x_rows, kTileC, packed);
    const BulkRows dm = make_tile_map(&dymap, p.device_index, p.dy, p.dtype, batches, p.shape.seqlen, p.shape.channels, p.dy_batch_stride,
                                      p.dy_seq_stride, tl.dy_rows, kTileC, packed);
    if (xm == dm) rows_mode = xm;
  }
  kernel<<<g.grid, kThreads * parts, smem, stream>>>(p, q, g, *partials, xmap, dymap, rows_mode);
  SHORTCONV_CUDA_CHECK_LAUNCH("conv1d_backward (tiled) kernel launch");
  *runs = g.runs;
  return true;
}

}  // namespace

template <class T>
bool backward_tiled(const BackwardParams& p, const SeqView& q, std::int64_t rows, float** partials, std::int64_t* runs) {
  const std::int64_t K = p.shape.width;
  if (K > kTiledBwdMaxK || rows <= 0) return false;
  auto aligned = [](const void* ptr, std::int64_t s0, std::int64_t s1) { return rows_aligned16(ptr, s0, s1, sizeof(T)); };
  // dx and d_final_state are written / read a pair of channels at a time: 2-element alignment.
  auto paired = [&](const void* ptr, std::int64_t s0, std::int64_t s1) {
    return ptr == nullptr || (reinterpret_cast<std::uintptr_t>(ptr) % (2 * sizeof(T)) == 0 && s0 % 2 == 0 && s1 % 2 == 0);
  };
  if (!aligned(p.x, p.x_batch_stride, p.x_seq_stride) || !aligned(p.dy, p.dy_batch_stride, p.dy_seq_stride) ||
      !aligned(p.initial_state.data, p.initial_state.batch_stride, p.initial_state.seq_stride) ||
      !paired(p.dx, p.dx_batch_stride, p.dx_seq_stride) || !paired(p.d_final_state.data, p.d_final_state.batch_stride, p.d_final_state.seq_stride))
    return false;
  if (K <= 4) return launch_tiled<T, 4, true>(p, q, rows, partials, runs);
  if (K <= 8) return launch_tiled<T, 8, true>(p, q, rows, partials, runs);
  if (K <= 16) return launch_tiled<T, 16, true>(p, q, rows, partials, runs);
  if (K <= 32) return launch_tiled<T, 8, false>(p, q, rows, partials, runs);
  return launch_tiled<T, 16, false>(p, q, rows, partials, runs);
}

template bool backward_tiled<float>(const BackwardParams&, const SeqView&, std::int64_t, float**, std::int64_t*);
template bool backward_tiled<__nv_bfloat16>(const BackwardParams&, const SeqView&, std::int64_t, float**, std::int64_t*);
template bool backward_tiled<__half>(const BackwardParams&, const SeqView&, std::int64_t, float**, std::int64_t*);

}  // namespace shortconv::cuda
