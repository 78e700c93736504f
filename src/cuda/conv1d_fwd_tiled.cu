// Pipelined CUDA forward: the fast path for 16-byte aligned tensors and K <= kTiledMaxK.
//
//   z[s,p,c] = bias[c] + sum_{k<K} w[c,k] * xe[s, p+k-(K-1), c]     y = z or silu(z)
//
// A block owns 64 channels (f32, 16-bit types at K > 16, and shapes with too few jobs for more:
// tiled_parts) or 128 (16-bit, K <= 16: two 64-channel tiles, each with its own 4 warps, sharing
// the piece walk and the barriers) and a run
// of flat tokens, cut into pieces of <= 64 rows inside one sequence (device/tile.cuh). Each piece
// lands in shared memory with its K-1 halo rows (x, the initial state, or zeros) through a
// 3-stage (f32) or 4-stage (16-bit) pipeline, so loads for later pieces are in flight while this
// one is computed: cp.async copies by every thread, or (16-bit, K > 8, sm_90) one bulk tensor
// copy of the whole stage issued by one thread, completing on the stage's mbarrier (pieces at a
// sequence start with a state, or of a packed varlen batch, keep cp.async). A warp computes 16
// rows x 64 channels of a piece (lane = 2 channels) with a register window sliding down the
// tile; weights sit in shared memory as f32 [K][64]. Results go straight from registers to y: a
// warp writes whole rows of the tile. Kernels are instantiated for K buckets (<= 4, <= 16, wider) and, for
// 16-bit types, exactly K = 8 and K = 16, so the window runs no steps that K cannot need.
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

using detail::ForwardParams;
using namespace tile;

constexpr int kThreads = 128;  // 4 warps a tile: one row group of a 64-row piece each
// 64-channel tiles a block can take (tiled_parts picks 1 or this; launch bounds are for this): 2
// for 16-bit types at K <= 16, so that every row a block reads or writes is 256 contiguous bytes,
// as it is for f32. A strip copy through shared memory with this kernel's pipeline
// (bench/micro/tile_copy.cu, H100, a bf16 B=4 T=4096 C=4096 tensor) ran at 87.4-88.1% of
// cudaMemcpy with 128-byte rows and 92.1-93.4% with 256-byte rows.
template <class T, int kMaxK>
constexpr int kMaxTiles = sizeof(T) == 2 && kMaxK <= 16 ? 2 : 1;
// Pieces in shared memory: kStages - 1 in flight while one is computed. 16-bit single tiles are
// half the bytes, so they take 4 stages (wider K: more would push the tile past the shared
// memory of smaller cards); the 128-channel 16-bit blocks 4 as well (the strip copy: 4 and 6
// stages the same). (kMaxK no longer matters; kept so that every kernel constant takes the same
// template arguments.)
template <class T, int kMaxK>
constexpr int kStages = sizeof(T) == 4 ? 3 : 4;

/// Shared memory of one 64-channel tile's part of a block: its stages and its weights.
template <class T, int kMaxK>
__host__ __device__ constexpr std::size_t tile_part_bytes(int K) {
  return tiled_stage_bytes(sizeof(T), kPieceRows + K - 1) * kStages<T, kMaxK> + static_cast<std::size_t>(K) * kTileC * sizeof(float);
}

// kMaxK: the widest K an instantiation takes (K buckets 4, 16 and kTiledMaxK): the register
// window then runs just the steps K can need. kK > 0: the kernel for exactly that K (16-bit K = 8
// and 16), whose window steps and tile offsets are compile-time: no step guards, 1.1-1.3% faster
// (H100, bf16 B=4 T=4096 C=4096: K=8 0.0984-0.0987 -> 0.0972-0.0973 ms, K=16 0.1058 -> 0.1043-
// 0.1045, measured together with the job prologue below no longer unrolled; K=4 unchanged).
template <class T, int kMaxK, int kK = 0>
__global__ __launch_bounds__(kThreads * kMaxTiles<T, kMaxK>, 4 / kMaxTiles<T, kMaxK>) void forward_tiled_kernel(
    ForwardParams p, SeqView q, TiledGrid g, const __grid_constant__ CUtensorMap xmap, BulkRows xrows) {
  extern __shared__ __align__(128) unsigned char smem_raw[];  // (bulk copies land 128-byte aligned)
  constexpr int kSt = kStages<T, kMaxK>;
  const int K = kK > 0 ? kK : static_cast<int>(p.shape.width), H = K - 1;
  const int tile_rows = kPieceRows + H;
  // The block's tiles (blockDim.x / 128 of them), this thread's tile (threads [128 part, 128 part
  // + 128)) and its index there.
  constexpr bool kOne = kMaxTiles<T, kMaxK> == 1;
  const int parts = kOne ? 1 : static_cast<int>(blockDim.x) / kThreads;
  const int part = kOne ? 0 : static_cast<int>(threadIdx.x) / kThreads;
  const int tid = static_cast<int>(kOne ? threadIdx.x : threadIdx.x % kThreads);  // (as conv1d_bwd_tiled.cu)
  unsigned char* part_base = smem_raw + part * tile_part_bytes<T, kMaxK>(K);
  T* stage_base = reinterpret_cast<T*>(part_base);
  float* wsm = reinterpret_cast<float*>(part_base + tiled_stage_bytes(sizeof(T), tile_rows) * kSt);  // [K][64]
  const std::int64_t C = p.shape.channels;
  const int lane = threadIdx.x % 32, warp = (kOne ? threadIdx.x : threadIdx.x % kThreads) / 32;  // (unsigned arithmetic)
  RowSource<T> src{static_cast<const T*>(p.x), p.x_batch_stride, p.x_seq_stride, static_cast<const T*>(p.initial_state.data),
                   p.initial_state.batch_stride, p.initial_state.seq_stride, H};
  T* y = static_cast<T*>(p.y);
#if !SHORTCONV_BULK_COPIES
  // Machine code for a card before sm_90 (or PTX for one, compiled by the driver for a newer
  // card): no bulk copies here, whatever the host found the device able to do.
  xrows = BulkRows::none;
#endif
  // With bulk copies (xrows), one mbarrier a stage and tile, after all the tiles' shared memory:
  // its phase completes when the stage's copy has landed (or, for a piece copied with cp.async,
  // at once: the cp.async wait and the block barrier cover those).
  std::uint64_t* bars = reinterpret_cast<std::uint64_t*>(smem_raw + parts * tile_part_bytes<T, kMaxK>(K)) + part * kSt;
  unsigned phases = 0;  // bit st: the parity of stage st's next phase
  if (xrows != BulkRows::none) {
    if (tid == 0) {
      for (int st = 0; st < kSt; ++st) bulk::barrier_init(bars + st, 1);
      bulk::barrier_init_fence();
    }
    __syncthreads();
  }

  for (std::int64_t job = blockIdx.x; job < g.jobs; job += gridDim.x) {
    const std::int64_t c0 = ((job % g.ctiles) * parts + part) * kTileC;  // (past C in a last part: no loads or stores)
    std::int64_t r0, r1;
    g.run_range(job / g.ctiles, r0, r1);
    // The weights' loads go out first and their shared-memory stores (which wait for the data)
    // after the first pieces' copies, so the two overlap.
    WeightStager<kThreads, kMaxK> weights;
    weights.issue(p, K, c0, C, tid);
    const std::int64_t c = c0 + 2 * lane;
    const int nc = static_cast<int>(max64(0, min64(2, C - c)));
    // The bias the same way: loaded and converted one element after the other once the first
    // copies were out, it made every job's first sums wait for two loads in a row (H100, bf16
    // K=16: 0.1050 ms with a bias against 0.1025 without; 0.1035 with the stager).
    BiasPairStager bias_bits;
    bias_bits.issue(p, c, nc);
    int weights_finite = -1;  // this lane's weights of the job: -1 not yet checked (coefs_finite)
    PieceWalker producer(q, r0, r1), consumer = producer;
    // Piece pc with its halo into stage st: one bulk copy of the whole stage, issued by thread 0,
    // where the map has its rows (a piece far enough into its sequence, or any piece of a batch
    // without a state: rows before position 0 read as zeros); cp.async by every thread otherwise
    // (thread 0 then arrives on the stage's barrier itself).
    auto issue = [&](const Piece& pc, int st) {
      T* dst = stage_base + st * tile_rows * kTileC;
      if (xrows != BulkRows::none && (pc.pos >= H || (xrows == BulkRows::batch && src.state == nullptr))) {
        if (tid == 0) {
          bulk::fence_before_copy();
          bulk::arrive_expect_bytes(bars + st, static_cast<unsigned>(tile_rows * kTileC * sizeof(T)));
          const bool packed = xrows == BulkRows::packed;
          bulk::load_box(dst, &xmap, static_cast<int>(c0), static_cast<int>((packed ? pc.first + pc.pos : pc.pos) - H),
                         packed ? 0 : static_cast<int>(pc.s), bars + st);
        }
      } else {
        load_rows<T, kThreads>(dst, src, q, pc, pc.pos - H, pc.n + H, c0, C, tid);
        if (xrows != BulkRows::none && tid == 0) bulk::arrive(bars + st);
      }
    };
    // Not unrolled: a job's first copies run once a job, and three inlined copies of the copy
    // loops grew the code that every job start fetches (ncu, bf16 K=8: 14% of the stall samples
    // "no instruction", 1017 instructions a warp and job).
#pragma unroll 1
    for (int st = 0; st < kSt - 1; ++st) {
      const Piece pc = producer.next();
      if (pc.n > 0) issue(pc, st);
      cp_async_commit();
    }
    weights.finish(wsm, p, K, c0, C, tid);
    const float2 bias = bias_bits.value(p);
    for (int it = 0;; ++it) {
      const Piece pc = consumer.next();
      if (pc.n == 0) break;
      const Piece pn = producer.next();
      if (pn.n > 0) issue(pn, (it + kSt - 1) % kSt);
      cp_async_commit();
      cp_async_wait<kSt - 1>();
      if (xrows != BulkRows::none) {
        const int st = it % kSt;
        bulk::wait(bars + st, (phases >> st) & 1u);
        phases ^= 1u << st;
      }
      __syncthreads();  // this piece (and, on the first one, the weights) is in shared memory

      const T* rows = stage_base + (it % kSt) * tile_rows * kTileC;
      const int r_begin = warp * kGroupRows;
      if (r_begin < pc.n) {
        float2 acc[kGroupRows];
#pragma unroll
        for (int i = 0; i < kGroupRows; ++i) acc[i] = bias;
        // Output row j (tile row j + H) reads tile rows j .. j + K - 1.
        auto weight = [&](int k) { return reinterpret_cast<const float2*>(wsm + k * kTileC)[lane]; };
        window_sum<kGroupRows, 1, kMaxK, (kK > 0)>(acc, rows, r_begin, K, lane, weight);  // (exact K: lds2's kTwoOps)
        // Without a state, output p < K-1 has no terms before position 0 (the tile's zeros): their
        // products with finite weights are zeros, so the window's sums stand; with a non-finite
        // weight they are left out (mask_sequence_start). Short sequences are mostly such rows.
        if (src.state == nullptr && pc.pos + r_begin < H) {
          if (weights_finite < 0) weights_finite = coefs_finite(K, weight) ? 1 : 0;
          if (weights_finite == 0) mask_sequence_start(acc, bias, rows, r_begin, pc.pos + r_begin, K, lane, weight);
        }
        if (p.silu) {
#pragma unroll
          for (int i = 0; i < kGroupRows; ++i) acc[i] = {silu_f(acc[i].x), silu_f(acc[i].y)};
        }
        T* yp = y + q.offset(pc.s, pc.first, pc.pos + r_begin, p.y_batch_stride, p.y_seq_stride) + c;
        store_rows<kGroupRows, T>(yp, p.y_seq_stride, acc, pc.n - r_begin, nc);
      }
      __syncthreads();  // the stage is refilled next iteration
    }
    cp_async_wait<0>();
  }
}

template <class T, int kMaxK, int kK = 0>
bool launch_forward_tiled(const ForwardParams& p, const SeqView& q, std::int64_t rows) {
  constexpr auto kernel = forward_tiled_kernel<T, kMaxK, kK>;
  // A tile part's shared memory: its stages and weights, and its stages' mbarriers (which the
  // kernel keeps after all the parts').
  const std::size_t part_smem =
      tile_part_bytes<T, kMaxK>(static_cast<int>(p.shape.width)) + kStages<T, kMaxK> * sizeof(std::uint64_t);
  const int smem_max = set_max_dynamic_smem<kernel>(p.device_index), sms = sm_count(p.device_index);
  if (part_smem > static_cast<std::size_t>(smem_max)) return false;
  const int parts = tiled_parts(kernel, kMaxTiles<T, kMaxK>, part_smem, smem_max, rows, p.shape.channels, sms);
  const std::size_t smem = part_smem * parts;
  const std::int64_t resident = resident_blocks(kernel, kThreads * parts, smem, sms);
  // A block a job, about 8 jobs of 4-8 pieces for each resident block at K <= 8 (6 with SiLU),
  // 2 jobs wider, where each job's pipeline fill and weights cost more. H100, bf16 B=4 T=4096
  // C=4096, the resident blocks with 2 jobs each before: K=4 0.1069 -> 0.0954 ms (6 waves 0.0964,
  // 12 0.0943), K=8 0.1137 -> 0.0983, K=16 0.1109 -> 0.1057 (8 waves 0.1122), SiLU K=4 0.1111 ->
  // 0.1004 (8 waves 0.1025); f32 (1,16384,4096,4) 0.1945 -> 0.1872.
  // Runs of at least 4 pieces on narrow shapes (make_tiled_grid, which has the timings), but not
  // for f32, whose forward measured faster without.
  // 16-bit, 8 < K <= 16: at least the last 20% of the pieces in shorter runs (about 2 jobs a
  // resident block of them): bf16 K=16 0.1042 -> 0.1026-0.1028 ms; 35% the same, 1 or 4 tail
  // jobs a block slower (0.1088 / 0.1034). At K=8 and K=4 no change beyond noise with 2-4 head
  // waves, and the tensor-core forward measured slower with every taper tried (K=32 0.1314 ->
  // 0.1321-0.1399). f32 was not measured with one (and took the run floor the other way).
  const std::int64_t K = p.shape.width, min_run = sizeof(T) == 4 ? 1 : 4, waves = K <= 8 ? (p.silu ? 6 : 8) : 2;
  const Taper taper = sizeof(T) == 2 && K > 8 && K <= 16 ? Taper{20, 2} : Taper{};
  const TiledGrid g = make_tiled_grid(rows, p.shape.channels, resident, waves, tile::kPieceRows, tile::kTileC * parts, Blocks::per_job, min_run, taper);
  // Bulk copies (one thread hands the copy engine a whole stage) for 16-bit x at K > 8, where the
  // cp.async copies cost each thread ~5 copies and their set-up a piece (ncu, bf16 K=16: 158 of
  // ~1128 instructions a warp and 16-row group). H100 A/B, bf16 B=4 T=4096 C=4096: K=16 0.1031-
  // 0.1036 -> 0.1015-0.1018 ms, varlen (64 sequences) K=16 0.200-0.204 -> 0.194-0.197; K=8 the
  // same, K=4 0.0953-0.0956 -> 0.0958 and f32 K=4 the same, so those keep cp.async.
  CUtensorMap xmap{};
  const bool packed = q.cu != nullptr;
  const BulkRows xrows = sizeof(T) == 2 && K > 8 ? make_tile_map(&xmap, p.device_index, p.x, p.dtype, packed ? 1 : p.shape.batch, p.shape.seqlen,
                                                                 p.shape.channels, p.x_batch_stride, p.x_seq_stride,
                                                                 tile::kPieceRows + static_cast<int>(K) - 1, tile::kTileC, packed)
                                                 : BulkRows::none;
  kernel<<<g.grid, kThreads * parts, smem, static_cast<cudaStream_t>(p.stream)>>>(p, q, g, xmap, xrows);
  SHORTCONV_CUDA_CHECK_LAUNCH("conv1d_forward (tiled) kernel launch");
  return true;
}

}  // namespace

template <class T>
bool forward_tiled(const ForwardParams& p, const SeqView& q, std::int64_t rows) {
  const std::int64_t K = p.shape.width;
  if (K > kTiledMaxK) return false;
  auto aligned = [](const void* ptr, std::int64_t s0, std::int64_t s1) { return rows_aligned16(ptr, s0, s1, sizeof(T)); };
  if (!aligned(p.x, p.x_batch_stride, p.x_seq_stride) || !aligned(p.y, p.y_batch_stride, p.y_seq_stride) ||
      !aligned(p.initial_state.data, p.initial_state.batch_stride, p.initial_state.seq_stride))
    return false;
  if (K <= 4) return launch_forward_tiled<T, 4>(p, q, rows);
  if constexpr (sizeof(T) == 2) {
    if (K == 8) return launch_forward_tiled<T, 8, 8>(p, q, rows);
    if (K == 16) return launch_forward_tiled<T, 16, 16>(p, q, rows);
  }
  if (K <= 16) return launch_forward_tiled<T, 16>(p, q, rows);
  return launch_forward_tiled<T, kTiledMaxK>(p, q, rows);
}

template bool forward_tiled<float>(const ForwardParams&, const SeqView&, std::int64_t);
template bool forward_tiled<__nv_bfloat16>(const ForwardParams&, const SeqView&, std::int64_t);
template bool forward_tiled<__half>(const ForwardParams&, const SeqView&, std::int64_t);

}  // namespace shortconv::cuda
