// Tensor-core CUDA backward for 16-bit x, dy and weights (bf16 or f16, f32 accumulation).
//
// Per channel both gradients are banded products in time, done with mma.sync m16n8k16 (one warp
// instruction: 16 x 8 outputs x 16 terms of one channel):
//
//   dx, the forward's Toeplitz product transposed. dx[i] = sum_m wr[m] dy[i + m] with wr[m] =
//     w[K-1-m] (m = 0..K-1). Output block n (16 times) takes dy chunks n, n+1, ..., n+J-1
//     (J = 1 + ceil((K-1)/16)); chunk j's term is A_j B with A_j[r][s] = wr[16 j + s - r] (0
//     outside [0, K-1]) and B[s][n] = dy at time 16 (n + j) + s. One mma covers 8 blocks = 128 rows.
//   dweight, a Hankel product. dw[K-1-m] = sum_t dy[t] x[t - m] (lag m). For a block of 16 times
//     t0.. : D[r][n] += sum_s dy[t0 + s + r] x[t0 + s - 16 n], so D[r][n] collects lag r + 16 n over
//     the times t0 + r + s (how the pieces' blocks cover every time once: see the kernel). The 8
//     columns hold lags 0..127; column 7 takes a B of ones instead, and D[0][7] is dbias (so
//     K <= 112). One mma a channel per 16 times, whatever K.
//
// Data movement follows the tensor-core forward: a block owns 64 channels and a run of tokens in
// pieces of <= 128 rows inside one sequence, starting at positions that are multiples of 16 (a
// run's first piece from its block start), so every dx sum is grouped by its position in the
// sequence alone. Per piece a cp.async pipeline (kStages) brings
//   dy at [base, base + 128 + 16 (J-1))   (zero past the sequence end and before the piece)
//   x  at [base - 16 NB, base + 128)      (NB = ceil(K/16) lag columns; the state or zeros before 0)
// into shared memory, rows of 64 channels in 16-byte chunks (layout: chunk_offset()).
// 16 warps: warp w < 8 keeps the dweight sums of channel group w (8 channels) in registers for the
// whole run; warp 8 + w computes that group's dx, stages it in its own chunks of a dx tile and,
// with the other dx warps, writes whole 16-byte row segments. (One warp doing both needed 198
// registers; at 128 it spilled 400-500 bytes.) One block barrier a piece.
//
// The Toeplitz zeros and the masked rows multiply inputs outside each output's terms, so a
// non-finite input could turn an output the formula keeps finite into NaN. Every product of a
// non-finite operand leaves a non-finite sum, so the kernel checks its outputs instead of its
// inputs: a warp whose dx outputs of a piece (or whose dweight sums of a run) are not all finite
// recomputes them term by term, exactly as the contract says; so does every dx of a block with a
// non-finite weight.
//
// dweight / dbias partials go per run to the workspace [runs][K+1][C] (no atomics), reduced in a
// fixed order by conv1d_bwd.cu, which also computes d_initial_state. SiLU is not fused here (the
// FMA kernels take it). Summation order differs from the FMA kernels: results agree with them to
// rounding; BackwardParams::tensor_cores = false keeps the FMA kernels.
#include <cstdint>
#include <new>
#include <type_traits>

#include "check.hpp"
#include "device/common.cuh"
#include "device/mma.cuh"
#include "device/sequences.cuh"
#include "device/tile.cuh"
#include "launch.hpp"
#include "tiled.hpp"

namespace shortconv::cuda {
namespace {

using detail::BackwardParams;
using mma::mma16816;
using mma::nonfinite;
using mma::nonfinite_pair;
using mma::pair_of;
using tile::cp_async16;
using tile::cp_async_commit;
using tile::cp_async_wait;
using tile::Piece;
using tile::PieceWalker;

constexpr int kGroups = 8;  // channel groups of 8: dweight warp w and dx warp 8 + w
constexpr int kThreads = 64 * kGroups;
constexpr int kDxThreads = 32 * kGroups;
constexpr int kChannels = 64;
constexpr int kRows = 128;  // rows of a piece: the dx product's 8 blocks of 16
constexpr int kPad = 16;    // reversed weights w''[i + 16] = wr[i]: fragment indices run from -15
constexpr int kOnes = 7;    // the dweight B column of ones: D[0][kOnes] is dbias
constexpr int kBlocks = kRows / 16;  // dweight blocks of a piece (and block -1 when no piece carries into it)
/// Tile layout: rows of 64 16-bit channels are eight 16-byte chunks, chunk c of row r at c ^ (r & 7),
/// and each block of 16 rows is followed by 16 bytes of padding (kBlockElems = 16 rows + 8).
/// The XOR puts a quarter warp's dweight A rows (g + 2q) in distinct chunks; the padding shifts
/// rows 16 apart by one chunk's banks, which keeps the dx B rows (2q + 16 g) and the dweight B
/// rows (2q - 16 g) in distinct banks too (counted per quarter warp, not measured; the A rows
/// average 1.3 wavefronts a quarter warp, 2-way at most), while row r + 16 i is simply 16 i rows
/// further: a lane's operand addresses step by a constant from block to block (the XOR by
/// (r ^ r >> 4) & 7 it replaced made them depend on the block's parity).
constexpr int kBlockElems = 16 * kChannels + 8;
constexpr int kPadElems = kBlockElems;  // zero block before each dy tile: A rows of the block before a piece
__host__ __device__ constexpr int tile_elems(int rows) { return rows / 16 * kBlockElems; }  // rows: a multiple of 16
__device__ __forceinline__ int chunk_offset(int r, int chunk) {
  return (r >> 4) * kBlockElems + (r & 15) * kChannels + ((chunk ^ (r & 7)) * 8);
}
/// The dx tile's: the staging stores (rows 32 q + g) need bits 5 and 6 as well.
__device__ __forceinline__ int dx_chunk_offset(int r, int chunk) { return r * kChannels + ((chunk ^ ((r ^ (r >> 4)) & 7)) * 8); }

__device__ __forceinline__ unsigned smem_u32(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }
/// 16 bytes from a shared-memory byte address.
__device__ __forceinline__ uint4 lds16_sh(unsigned addr) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr));
  return v;
}
__device__ __forceinline__ unsigned lds32_sh(unsigned addr) {
  unsigned v;
  asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(v) : "r"(addr));
  return v;
}
template <class T>
__device__ __forceinline__ uint4 lds16_at(const T* p) {
  return *reinterpret_cast<const uint4*>(p);
}
template <class T>
__device__ __forceinline__ uint4 lds16(const T* tile, int r, int chunk) {
  return lds16_at(tile + chunk_offset(r, chunk));
}

struct Layout {
  int K, H;
  int J, Hp;      // dx: dy chunks per output block, dy rows past the piece
  int NB, Hx;     // dweight: lag columns, x rows before the piece
  int dy_rows, x_rows;
  int pairs;      // 32-bit reversed-weight pairs per channel and parity (stored kPairStride apart)
};

__host__ __device__ inline Layout make_layout(int K) {
  Layout l;
  l.K = K;
  l.H = K - 1;
  l.J = 1 + (l.H + 15) / 16;
  l.Hp = 16 * (l.J - 1);
  l.NB = (K + 15) / 16;
  l.Hx = 16 * l.NB;
  l.dy_rows = kRows + l.Hp;
  l.x_rows = kRows + l.Hx;
  l.pairs = 8 * l.J + 9;
  return l;
}
__host__ __device__ inline std::size_t dy_bytes(const Layout& l) { return static_cast<std::size_t>(kPadElems + tile_elems(l.dy_rows)) * 2; }
__host__ __device__ inline std::size_t x_bytes(const Layout& l) { return static_cast<std::size_t>(tile_elems(l.x_rows)) * 2; }
/// Words between the reversed weights of consecutive (channel, parity): a constant, so a lane's
/// 24 weight loads of a chunk share one address register; >= the most pairs (K = 112: 73), and
/// 16 mod 32, which keeps the two parities' pairs in different banks.
constexpr int kPairStride = 80;
__host__ __device__ inline std::size_t weight_bytes(const Layout&) { return static_cast<std::size_t>(kChannels) * 2 * kPairStride * 4; }
constexpr std::size_t kDxTileBytes = static_cast<std::size_t>(kRows) * kChannels * 2;
__host__ __device__ inline std::size_t smem_bytes(const Layout& l, int stages) {
  return (dy_bytes(l) + x_bytes(l)) * stages + weight_bytes(l) + kDxTileBytes;
}

/// Copies tile rows [0, rows) into a tile (layout: chunk_offset), this thread's 16-byte column
/// (`bytes` of it inside the tensor): rows [r_data, r_end) from data + off + r * stride, rows
/// [r_state, r_data) from state + soff + r * sstride, zeros elsewhere. Offsets are those of row 0
/// at the thread's channel (formed for any row; only rows in range are read). A thread's rows are
/// 64 apart, which keeps its chunk's place in the row: a copy is a few instructions (the general
/// form, 64-bit positions per row, was 17% of the kernel's instructions: ncu, H100, K = 32).
template <class T>
__device__ __forceinline__ void load_tile(T* smem, int rows, int bytes, const T* data, std::int64_t off, std::int64_t stride, int r_data,
                                          int r_end, const T* state, std::int64_t soff, std::int64_t sstride, int r_state) {
  constexpr int kPerRow = 8, kRowStep = kThreads / kPerRow;
  static_assert(kRowStep % 16 == 0, "a thread's rows keep their chunk and step by whole blocks");
  int r = static_cast<int>(threadIdx.x) / kPerRow;
  T* dst = smem + chunk_offset(r, static_cast<int>(threadIdx.x) % kPerRow);
  off += r * stride;
  soff += r * sstride;
#pragma unroll
  for (int k = 0; k < (256 + kRowStep - 1) / kRowStep; ++k) {
    if (r >= rows) break;
    const T* g = data;
    int n = 0;
    if (bytes > 0 && r >= r_data && r < r_end) {
      g = data + off;
      n = bytes;
    } else if (bytes > 0 && r >= r_state && r < r_data) {
      g = state + soff;
      n = bytes;
    }
    cp_async16(dst, g, n);
    r += kRowStep;
    dst += kRowStep / 16 * kBlockElems;
    off += kRowStep * stride;
    soff += kRowStep * sstride;
  }
}

/// A piece for the block: thread 0 walks the run (its walker lives in shared memory, so that no
/// thread keeps the walk in registers) and publishes piece k in ring slot k % (kStages + 1) one
/// iteration before the block loads it.
struct StagePiece {
  std::int64_t s, first, len, pos;
  int n;
  bool open;  // the next piece continues this one (same sequence and run, >= 15 rows or to the end)
  // The tiles' sources (channel c0): element offsets of tile row 0 in dy, x and the state, and the
  // row ranges load_tile copies.
  std::int64_t dy_off, x_off, st_off;
  int dy_data, dy_end, x_state, x_data, x_end;
};

template <class T, int kStages>
__global__ __launch_bounds__(kThreads, 1) void backward_mma_kernel(BackwardParams p, SeqView q, TiledGrid g, float* __restrict__ ws) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ bool staged[kGroups];  // this piece's dx of channel group i is in the dx tile
  __shared__ StagePiece ring[kStages + 1];
  __shared__ alignas(PieceWalker) unsigned char walker_raw[sizeof(PieceWalker)];
  __shared__ uint4 fills[2];  // dweight B of the columns past the lags: zeros, ones
  const Layout L = make_layout(static_cast<int>(p.shape.width));
  auto dy_stage = [&](int st) { return reinterpret_cast<T*>(smem_raw + st * (dy_bytes(L) + x_bytes(L))) + kPadElems; };
  auto x_stage = [&](int st) { return reinterpret_cast<T*>(smem_raw + st * (dy_bytes(L) + x_bytes(L)) + dy_bytes(L)); };
  unsigned* wsm = reinterpret_cast<unsigned*>(smem_raw + (dy_bytes(L) + x_bytes(L)) * kStages);  // [64][2][kPairStride]
  T* dxt = reinterpret_cast<T*>(smem_raw + (dy_bytes(L) + x_bytes(L)) * kStages + weight_bytes(L));  // [128][64]
  const std::int64_t C = p.shape.channels;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const bool dw_warp = warp < kGroups;
  const int grp = warp % kGroups;  // this warp's channel group
  const int gq = lane / 4, qq = lane % 4;
  const T* dy = static_cast<const T*>(p.dy);
  const T* x = static_cast<const T*>(p.x);
  const T* init = static_cast<const T*>(p.initial_state.data);
  const T* dfs = static_cast<const T*>(p.d_final_state.data);
  const T* w = static_cast<const T*>(p.weight);
  T* dx = static_cast<T*>(p.dx);
  // dx fragments: this lane's reversed-weight pairs sit at i - 8, i, i + 8 with i = 2q - g + 16 j
  // (+ kPad), all of the parity of g, which picks the even or the odd copy.
  const int parity = gq & 1;
  const int i0 = 2 * qq - gq + kPad;
  const uint4 zero4 = make_uint4(0, 0, 0, 0);
  if (threadIdx.x < 2) {
    const unsigned v = threadIdx.x == 0 ? 0u : mma::kOnePair<T>;
    fills[threadIdx.x] = make_uint4(v, v, v, v);
  }
  for (int i = threadIdx.x; i < kStages * (kPadElems / 8); i += kThreads)  // (nothing else writes them)
    reinterpret_cast<uint4*>(dy_stage(i / (kPadElems / 8)) - kPadElems)[i % (kPadElems / 8)] = zero4;
  // dweight operand offsets (elements) in block 0 (block i: + i kBlockElems): A rows
  // x = g + 2q + {0, 1, 8, 9} of the dy tile (rows x + 16 are the next block's x), B rows
  // Hx - 16 g + 2q + {0, 1, 8, 9} of the x tile. A lane whose B column holds no lag reads its
  // constant instead (ones in column kOnes: D[0][kOnes] is dbias; zeros elsewhere), in every block.
  const bool lag_lane = gq < L.NB;
  int a_off[4], b_off[4];
  {
    constexpr int kC[4] = {0, 1, 8, 9};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      a_off[k] = chunk_offset(gq + 2 * qq + kC[k], grp);
      b_off[k] = lag_lane ? chunk_offset(L.Hx - 16 * gq + 2 * qq + kC[k], grp) : 0;
    }
  }
  const int b_step = lag_lane ? kBlockElems : 0;
  const T* fill_tile = reinterpret_cast<const T*>(&fills[gq == kOnes ? 1 : 0]);

  for (std::int64_t job = blockIdx.x; job < g.jobs; job += gridDim.x) {
    const std::int64_t c0 = (job % g.ctiles) * kChannels;
    const std::int64_t cg = c0 + grp * 8;  // this warp's channels [cg, cg + nch)
    const int nch = static_cast<int>(max64(0, min64(8, C - cg)));
    bool bad_weight = false;
    // Reversed weights, even copy (w''[2p], w''[2p+1]) and odd copy (w''[2p+1], w''[2p+2]); eight
    // threads a channel.
    {
      constexpr int kPerChannel = kThreads / kChannels;
      const int ch = static_cast<int>(threadIdx.x) / kPerChannel;
      const std::int64_t c = c0 + ch;
      const auto* wc = reinterpret_cast<const unsigned short*>(w) + (c < C ? c : 0) * p.w_channel_stride;
      for (int pr = static_cast<int>(threadIdx.x) % kPerChannel; pr < L.pairs; pr += kPerChannel) {
        unsigned h[3];
#pragma unroll
        for (int e = 0; e < 3; ++e) {
          const int m = 2 * pr + e - kPad;  // wr index: tap K-1-m
          h[e] = c < C && m >= 0 && m <= L.H ? wc[(L.H - m) * p.w_width_stride] : 0u;
        }
        wsm[(ch * 2 + 0) * kPairStride + pr] = h[0] | (h[1] << 16);
        wsm[(ch * 2 + 1) * kPairStride + pr] = h[1] | (h[2] << 16);
        bad_weight |= nonfinite_pair<T>(h[0] | (h[1] << 16));
      }
    }
    bad_weight = __syncthreads_or(bad_weight) != 0;

    float dw[8][4];  // dweight warps: channel ch, lag gq + 8 (e >> 1) + 16 (2 qq + (e & 1))
#pragma unroll
    for (int ch = 0; ch < 8; ++ch) dw[ch][0] = dw[ch][1] = dw[ch][2] = dw[ch][3] = 0.0f;

    auto publish = [&](int k) {  // thread 0: piece k into its ring slot
      auto& walker = *reinterpret_cast<PieceWalker*>(walker_raw);
      const Piece pc = walker.next();
      // Open: the next piece continues this one and holds the 15 times its blocks reach past it
      // (or the sequence ends first).
      const bool open = pc.n > 0 && pc.pos + pc.n < pc.len && pc.first + min64(pc.len, pc.pos + pc.n + 15) <= walker.end;
      StagePiece& sp = ring[k % (kStages + 1)];
      sp.s = pc.s;
      sp.first = pc.first;
      sp.len = pc.len;
      sp.pos = pc.pos;
      sp.n = pc.n;
      sp.open = open;
      if (pc.n > 0) {
        // dy rows: positions base.. from the piece's first position; x rows: positions base - Hx..,
        // the state before position 0.
        const std::int64_t base = pc.pos & ~15LL, xpos0 = base - L.Hx;
        auto rows_to = [](std::int64_t pos, std::int64_t pos0, int rows) { return static_cast<int>(max64(0, min64(rows, pos - pos0))); };
        sp.dy_off = q.offset(pc.s, pc.first, base, p.dy_batch_stride, p.dy_seq_stride) + c0;
        sp.dy_data = static_cast<int>(pc.pos - base);
        sp.dy_end = rows_to(pc.len, base, L.dy_rows);
        sp.x_off = q.offset(pc.s, pc.first, 0, p.x_batch_stride, p.x_seq_stride) + xpos0 * p.x_seq_stride + c0;
        sp.x_data = rows_to(0, xpos0, L.x_rows);
        sp.x_end = rows_to(pc.len, xpos0, L.x_rows);
        sp.x_state = init != nullptr ? rows_to(-L.H, xpos0, L.x_rows) : sp.x_data;
        sp.st_off = pc.s * p.initial_state.batch_stride + (L.H + xpos0) * p.initial_state.seq_stride + c0;
      }
    };
    // This thread's 16-byte column of the tiles: channels c0 + 8 (tid % 8).., `bytes` inside C.
    const int col = static_cast<int>(threadIdx.x) % 8 * 8;
    const int bytes = c0 + col < C ? static_cast<int>(min64(8, C - (c0 + col))) * 2 : 0;
    auto load = [&](int k, int st) {  // everyone: piece k into stage st
      const StagePiece& sp = ring[k % (kStages + 1)];
      if (sp.n > 0) {
        load_tile<T>(dy_stage(st), L.dy_rows, bytes, dy, sp.dy_off + col, p.dy_seq_stride, sp.dy_data, sp.dy_end, nullptr, 0, 0,
                     sp.dy_data);
        load_tile<T>(x_stage(st), L.x_rows, bytes, x, sp.x_off + col, p.x_seq_stride, sp.x_data, sp.x_end, init, sp.st_off + col,
                     p.initial_state.seq_stride, sp.x_state);
      }
      cp_async_commit();
    };
    if (threadIdx.x == 0) {
      const std::int64_t r0 = job / g.ctiles * g.run_rows;
      new (walker_raw) PieceWalker(q, r0, min64(g.rows, r0 + g.run_rows), kRows, 16);
      for (int k = 0; k < kStages; ++k) publish(k);
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kStages - 1; ++k) load(k, k);
    bool carried = false;  // the previous piece counted this one's first times (dweight, see below)
    int st = 0;            // the stage of piece `it`
    for (int it = 0;; ++it, st = st + 1 == kStages ? 0 : st + 1) {
      cp_async_wait<kStages - 2>();  // piece `it` has landed (this thread's copies)
      __syncthreads();               // ... everyone's; and everyone is done with iteration it - 1
      const StagePiece pc = ring[it % (kStages + 1)];
      if (pc.n == 0) break;
      load(it + kStages - 1, st == 0 ? kStages - 1 : st - 1);  // into the stage iteration it - 1 used
      if (threadIdx.x == 0) publish(it + kStages);  // into the slot of piece it - 1
      const T* dyt = dy_stage(st);
      const T* xt = x_stage(st);
      const int lead = static_cast<int>(pc.pos & 15), end = lead + pc.n;  // the piece's tile rows [lead, end)
      const std::int64_t base = pc.pos - lead;                            // position of tile row 0 (dy) / Hx (x)
      const bool at_end = pc.pos + pc.n == pc.len, open = pc.open;

      if (dw_warp) {
        // dweight. Block i covers times t0 = 16 i: A rows t0 + g + 2q + {0, 1, 8, 9, 16, 17} of dy
        // (a1 == a2: A is Hankel; a3 is the next block's a0), B rows Hx + t0 + 2q - 16 g + {0, 1,
        // 8, 9} of x. Lag row r of a block sums times t0 + r + [0, 16): the piece's blocks 0..7
        // count times [r, 128 + r) of its tile, the last r of them from the dy rows past the
        // piece. A piece that the next one continues (same sequence, same run, 15 rows or up to
        // the sequence end) leaves those to it, and a piece that continues none adds block -1
        // (times [r - 16, r), zero before the piece). Only a piece that ends near its run's end
        // inside a sequence masks the A rows past it (a run of one short piece double-counted
        // without this: found by CudaTensorCores with sequences of 300).
        if (ws != nullptr && (at_end || open)) {
          // Shared-memory byte addresses of this lane's operand rows in the current block; they
          // step by a block (the B of a lane without lags stays on its constant).
          constexpr unsigned kBlockBytes = kBlockElems * 2;
          const unsigned b_step_bytes = lag_lane ? kBlockBytes : 0u;
          unsigned pa[4], pb[4];
          {
            const unsigned ab = smem_u32(dyt) - (carried ? 0u : kBlockBytes), bb = smem_u32(lag_lane ? xt : fill_tile);
#pragma unroll
            for (int k = 0; k < 4; ++k) {
              pa[k] = ab + 2 * a_off[k];
              pb[k] = bb + 2 * b_off[k] - (carried ? 0u : b_step_bytes);
            }
          }
          unsigned a0[8];  // the current block's a0 pairs, channel ch
          {
            const uint4 v0 = lds16_sh(pa[0]), v1 = lds16_sh(pa[1]);
#pragma unroll
            for (int ch = 0; ch < 8; ++ch) a0[ch] = pair_of(v0, v1, ch);
          }
          // Blocks -1 (unless carried) to 7, one a loop step: two a step hoisted each other's
          // loads and spilled at 128 registers.
#pragma unroll 1
          for (int i = carried ? 0 : -1; i < kBlocks; ++i) {
            const uint4 v8 = lds16_sh(pa[2]), v9 = lds16_sh(pa[3]);
            const uint4 v16 = lds16_sh(pa[0] + kBlockBytes), v17 = lds16_sh(pa[1] + kBlockBytes);
            uint4 b[4];
#pragma unroll
            for (int k = 0; k < 4; ++k) b[k] = lds16_sh(pb[k]);
#pragma unroll
            for (int k = 0; k < 4; ++k) {
              pa[k] += kBlockBytes;
              pb[k] += b_step_bytes;
            }
#pragma unroll
            for (int ch = 0; ch < 8; ++ch) {
              const unsigned a8 = pair_of(v8, v9, ch), a16 = pair_of(v16, v17, ch);
              const unsigned af[4] = {a0[ch], a8, a8, a16};
              mma16816<T>(dw[ch], af, pair_of(b[0], b[1], ch), pair_of(b[2], b[3], ch));
              a0[ch] = a16;
            }
          }
        } else if (ws != nullptr) {
          // A piece inside a sequence that the next one does not continue (the run ends within 15
          // rows of its end): blocks -1 (unless carried) to 7 with A rows outside [lead, end)
          // masked (rows before lead are zero in the tile; those past end are not its times).
#pragma unroll 1
          for (int i = carried ? 0 : -1; i < kBlocks; ++i) {
            const int t0 = 16 * i;
            if (t0 + 30 < lead || t0 >= end) continue;
            const int ra = t0 + gq + 2 * qq;
            uint4 a[6];
            constexpr int kOff[6] = {0, 1, 8, 9, 16, 17};
#pragma unroll
            for (int k = 0; k < 6; ++k) {
              const int r = ra + kOff[k];
              a[k] = r >= lead && r < end ? lds16(dyt, r, grp) : zero4;
            }
            uint4 b[4];
#pragma unroll
            for (int k = 0; k < 4; ++k) b[k] = lds16_at((lag_lane ? xt : fill_tile) + i * b_step + b_off[k]);
#pragma unroll
            for (int ch = 0; ch < 8; ++ch) {
              const unsigned a8 = pair_of(a[2], a[3], ch);
              const unsigned af[4] = {pair_of(a[0], a[1], ch), a8, a8, pair_of(a[4], a[5], ch)};
              mma16816<T>(dw[ch], af, pair_of(b[0], b[1], ch), pair_of(b[2], b[3], ch));
            }
          }
        }
      } else if (dx != nullptr) {
        float acc[8][4];
#pragma unroll
        for (int ch = 0; ch < 8; ++ch) acc[ch][0] = acc[ch][1] = acc[ch][2] = acc[ch][3] = 0.0f;
        int d_off[4];  // B rows 2q + {0, 1, 8, 9} of a block
        d_off[0] = chunk_offset(2 * qq, grp);
        d_off[1] = chunk_offset(2 * qq + 1, grp);
        d_off[2] = chunk_offset(2 * qq + 8, grp);
        d_off[3] = chunk_offset(2 * qq + 9, grp);
        // Byte addresses stepping a chunk (16 rows; 8 weight pairs) at a time: one add per load
        // register, the rest immediates.
        unsigned pd = smem_u32(dyt + gq * kBlockElems);
        unsigned pw = smem_u32(wsm + (grp * 8 * 2 + parity) * kPairStride + (i0 - parity) / 2);
#pragma unroll 1
        for (int j = 0; j < L.J; ++j, pd += kBlockElems * 2, pw += 8 * 4) {
          const uint4 v0 = lds16_sh(pd + 2 * d_off[0]), v1 = lds16_sh(pd + 2 * d_off[1]);  // B rows 2q, 2q+1, 2q+8, 2q+9
          const uint4 v8 = lds16_sh(pd + 2 * d_off[2]), v9 = lds16_sh(pd + 2 * d_off[3]);  // of block g, chunk j
#pragma unroll
          for (int ch = 0; ch < 8; ++ch) {
            const unsigned wc = pw + ch * 2 * kPairStride * 4;  // pair i of channel ch: wc + 4 (i - i0)
            const unsigned w0 = lds32_sh(wc);
            const unsigned af[4] = {w0, lds32_sh(wc - 16), lds32_sh(wc + 16), w0};
            mma16816<T>(acc[ch], af, pair_of(v0, v1, ch), pair_of(v8, v9, ch));
          }
        }
        // Accumulator e of channel ch is tile row 16 (2q + (e & 1)) + g + 8 (e >> 1). acc * 0
        // summed is NaN once any accumulator is not finite: one FMA each (the rows outside the
        // piece too: their dy are zeros or the next times, and a non-finite one only costs the
        // exact path).
        float poison = 0.0f;
#pragma unroll
        for (int e = 0; e < 4; ++e)
#pragma unroll
          for (int ch = 0; ch < 8; ++ch) poison = fmaf(acc[ch][e], 0.0f, poison);
        const bool exact = bad_weight || __any_sync(0xffffffffu, poison != 0.0f);
        if (!exact) {
          // The last K-1 positions of the sequence also take d_final_state, row pos - (len - (K-1)).
          const bool tail = dfs != nullptr && pc.pos + pc.n + L.H > pc.len;
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int t = 16 * (2 * qq + (e & 1)) + gq + 8 * (e >> 1);
            if (t < lead || t >= end) continue;
            if (tail && nch > 0) {  // (no pointer into d_final_state for a group past C)
              const std::int64_t jr = base + t - (pc.len - L.H);
              if (jr >= 0) {
                const T* f = dfs + pc.s * p.d_final_state.batch_stride + jr * p.d_final_state.seq_stride + cg;
                if (nch == 8) {
                  const uint4 v = *reinterpret_cast<const uint4*>(f);
#pragma unroll
                  for (int ch = 0; ch < 8; ++ch) {
                    const unsigned word = (&v.x)[ch / 2];
                    acc[ch][e] += mma::bits_to_f32<T>(static_cast<unsigned short>(word >> (16 * (ch & 1))));
                  }
                } else {
#pragma unroll
                  for (int ch = 0; ch < 8; ++ch)
                    if (ch < nch) acc[ch][e] += to_f32(f[ch]);
                }
              }
            }
            unsigned out[4];
#pragma unroll
            for (int ch = 0; ch < 8; ch += 2) out[ch / 2] = pack2<T>(acc[ch][e], acc[ch + 1][e]);
            *reinterpret_cast<uint4*>(dxt + dx_chunk_offset(t, grp)) = make_uint4(out[0], out[1], out[2], out[3]);
          }
        } else if (nch > 0) {
          // The contract's sum, term by term: no terms past the sequence end, none multiplies a
          // Toeplitz zero. dy comes from the tile (its rows past the piece are the next times).
          for (int item = lane; item < pc.n * 8; item += 32) {
            const int t = lead + item / 8, ch = item % 8;
            if (ch >= nch) continue;
            const std::int64_t pos = base + t;
            const std::int64_t c = cg + ch;
            float a = 0.0f;
            for (int m = 0; m <= L.H && pos + m < pc.len; ++m) {
              const int r = t + m;
              a = fmaf(to_f32(w[c * p.w_channel_stride + (L.H - m) * p.w_width_stride]), to_f32(dyt[chunk_offset(r, grp) + ch]), a);
            }
            if (dfs != nullptr && pos >= pc.len - L.H)
              a += to_f32(dfs[pc.s * p.d_final_state.batch_stride + (pos - (pc.len - L.H)) * p.d_final_state.seq_stride + c]);
            dx[q.offset(pc.s, pc.first, pos, p.dx_batch_stride, p.dx_seq_stride) + c] = from_f32<T>(a);
          }
        }
        if (lane == 0) staged[grp] = !exact;
        asm volatile("bar.sync 1, %0;\n" ::"n"(kDxThreads) : "memory");  // the dx warps' tile is complete
        // Whole row segments: thread i of the dx warps writes chunk i % 8 of rows lead + i / 8, ...
        const int tid = static_cast<int>(threadIdx.x) - kDxThreads;
        const int chunk = tid % 8;
        const std::int64_t c = c0 + chunk * 8;
        const int n8 = static_cast<int>(max64(0, min64(8, C - c)));
        const int t0 = lead + tid / 8;
        if (staged[chunk] && n8 > 0 && t0 < end) {
          // dp is only ever formed for rows of the piece (no pointer past dx's last row).
          T* dp = dx + q.offset(pc.s, pc.first, base + t0, p.dx_batch_stride, p.dx_seq_stride) + c;
          const std::int64_t step = p.dx_seq_stride * (kDxThreads / 8);
          for (int t = t0;; dp += step) {
            const uint4 v = *reinterpret_cast<const uint4*>(dxt + dx_chunk_offset(t, chunk));
            if (n8 == 8) {
              *reinterpret_cast<uint4*>(dp) = v;
            } else {
              auto* dh = reinterpret_cast<unsigned short*>(dp);
#pragma unroll
              for (int ch = 0; ch < 8; ++ch)
                if (ch < n8) dh[ch] = static_cast<unsigned short>((&v.x)[ch / 2] >> (16 * (ch & 1)));
            }
            t += kDxThreads / 8;
            if (t >= end) break;
          }
        }
      }
      carried = open;
    }
    cp_async_wait<0>();

    if (dw_warp && ws != nullptr && nch > 0) {
      // (recomputed from `job`: kept live over the pieces they cost the dweight loop registers)
      const std::int64_t run = job / g.ctiles, r0 = run * g.run_rows, r1 = min64(g.rows, r0 + g.run_rows);
      // Accumulator e of channel ch holds lag m = g + 8 (e >> 1) + 16 (2q + (e & 1)) (tap K-1-m)
      // in the columns below NB, and dbias at row 0 of column kOnes.
      float* out = ws + run * (L.K + 1) * C;
      bool bad = false;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = 2 * qq + (e & 1), m = gq + 8 * (e >> 1) + 16 * col;
        const bool kept = (col < L.NB && m <= L.H) || (col == kOnes && m == 16 * kOnes);
        if (kept)
#pragma unroll
          for (int ch = 0; ch < 8; ++ch) bad |= nonfinite(dw[ch][e]);
      }
      if (!__any_sync(0xffffffffu, bad)) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = 2 * qq + (e & 1), m = gq + 8 * (e >> 1) + 16 * col;
          const std::int64_t k = col < L.NB && m <= L.H ? L.H - m : col == kOnes && m == 16 * kOnes ? L.K : -1;
          if (k >= 0)
#pragma unroll
            for (int ch = 0; ch < 8; ++ch)
              if (ch < nch) out[k * C + cg + ch] = dw[ch][e];
        }
      } else {
        // Term by term over the run, from global memory: only taps with an input (the state, or
        // nothing before position 0), only the run's own times.
        for (int item = lane; item < 8 * (L.K + 1); item += 32) {
          const int ch = item % 8, k = item / 8;
          if (ch >= nch) continue;
          const std::int64_t c = cg + ch;
          float s = 0.0f;
          PieceWalker walk(q, r0, r1, kRows);
          for (Piece pc = walk.next(); pc.n > 0; pc = walk.next()) {
#pragma unroll 1
            for (int i = 0; i < pc.n; ++i) {
              const std::int64_t pos = pc.pos + i;
              const float d = to_f32(dy[q.offset(pc.s, pc.first, pos, p.dy_batch_stride, p.dy_seq_stride) + c]);
              if (k == L.K) {
                s += d;
                continue;
              }
              const std::int64_t xp = pos + k - L.H;
              if (xp >= 0) {
                s = fmaf(to_f32(x[q.offset(pc.s, pc.first, xp, p.x_batch_stride, p.x_seq_stride) + c]), d, s);
              } else if (init != nullptr) {
                s = fmaf(to_f32(init[pc.s * p.initial_state.batch_stride + (L.H + xp) * p.initial_state.seq_stride + c]), d, s);
              }
            }
          }
          out[k * C + c] = s;
        }
      }
    }
    __syncthreads();  // the weights are restaged for the next job
  }
}

/// Pipeline stages for layout L: 3 where the block's shared memory allows, else 2; 0: none fits.
template <class T>
int bwd_mma_stages(const Layout& L, int device) {
  if (smem_bytes(L, 3) <= static_cast<std::size_t>(set_max_dynamic_smem<backward_mma_kernel<T, 3>>(device))) return 3;
  if (smem_bytes(L, 2) <= static_cast<std::size_t>(set_max_dynamic_smem<backward_mma_kernel<T, 2>>(device))) return 2;
  return 0;
}

template <class T, int kStages>
void launch_bwd_mma(const BackwardParams& p, const SeqView& q, std::int64_t rows, const Layout& L, float** partials, std::int64_t* runs) {
  constexpr auto kernel = backward_mma_kernel<T, kStages>;
  const std::size_t smem = smem_bytes(L, kStages);
  const std::int64_t resident = resident_blocks(kernel, kThreads, smem, sm_count(p.device_index));
  // Resident blocks, no taper: every run is run_rows long (the kernel computes its runs' rows
  // from that alone; test_tiled_grid.cu checks head_runs == runs for such grids).
  const TiledGrid g = make_tiled_grid(rows, p.shape.channels, resident, 1, kRows);
  const auto stream = static_cast<cudaStream_t>(p.stream);
  *partials = nullptr;
  if (p.dweight != nullptr || p.dbias != nullptr) {
    const std::size_t bytes = static_cast<std::size_t>(g.runs) * static_cast<std::size_t>(L.K + 1) *
                              static_cast<std::size_t>(p.shape.channels) * sizeof(float);
    SHORTCONV_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(partials), bytes, stream));
  }
  kernel<<<g.grid, kThreads, smem, stream>>>(p, q, g, *partials);
  SHORTCONV_CUDA_CHECK_LAUNCH("conv1d_backward (tensor-core) kernel launch");
  *runs = g.runs;
}

}  // namespace

template <class T>
bool backward_mma(const BackwardParams& p, const SeqView& q, std::int64_t rows, float** partials, std::int64_t* runs) {
  if constexpr (sizeof(T) != 2) {
    return false;
  } else {
    const std::int64_t K = p.shape.width;
    if (!p.tensor_cores || p.silu || K < kMmaBwdMinK || K > kMmaBwdMaxK || p.wdtype != p.dtype || rows <= 0) return false;
    auto aligned = [](const void* ptr, std::int64_t s0, std::int64_t s1) { return rows_aligned16(ptr, s0, s1, sizeof(T)); };
    if (!aligned(p.x, p.x_batch_stride, p.x_seq_stride) || !aligned(p.dy, p.dy_batch_stride, p.dy_seq_stride) ||
        !aligned(p.dx, p.dx_batch_stride, p.dx_seq_stride) ||
        !aligned(p.initial_state.data, p.initial_state.batch_stride, p.initial_state.seq_stride) ||
        !aligned(p.d_final_state.data, p.d_final_state.batch_stride, p.d_final_state.seq_stride))
      return false;
    const Layout L = make_layout(static_cast<int>(K));
    const int stages = bwd_mma_stages<T>(L, p.device_index);
    if (stages == 0) return false;
    if (stages == 3) {
      launch_bwd_mma<T, 3>(p, q, rows, L, partials, runs);
    } else {
      launch_bwd_mma<T, 2>(p, q, rows, L, partials, runs);
    }
    return true;
  }
}

template bool backward_mma<float>(const BackwardParams&, const SeqView&, std::int64_t, float**, std::int64_t*);
template bool backward_mma<__nv_bfloat16>(const BackwardParams&, const SeqView&, std::int64_t, float**, std::int64_t*);
template bool backward_mma<__half>(const BackwardParams&, const SeqView&, std::int64_t, float**, std::int64_t*);

}  // namespace shortconv::cuda
