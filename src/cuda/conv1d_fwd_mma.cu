// Tensor-core CUDA forward for 16-bit x and weights (bf16 or f16, f32 accumulation).
//
// Per channel the convolution is a banded Toeplitz product in time. Cut a piece of 128 output
// rows into 16 blocks of 8: output row t = 8m + n takes input rows 8m + n - H .. 8m + n (H = K-1),
// which for the whole block m lie in the Hp + 8 rows from 8m - Hp (Hp = H rounded up to 8). Cut
// those into J = ceil((Hp + 8) / 16) chunks of 16; chunk j of every block is one mma.sync m16n8k16
// of one channel:
//     D[m][n] += sum_k A[m][k] B[k][n],  A[m][k] = x[8m + 16j + k - Hp],  B[k][n] = w[16j + k - n + H - Hp]
// (B zero outside [0, H]). A is the data (a Hankel matrix: row m + 1 is row m moved 8 on) and B a
// 16 x 8 Toeplitz slice of the weights, the same for every piece. One warp instruction does
// 16 x 8 outputs x 16 taps, where the FMA kernels spend 128 x 16 / 32 = 64 instructions.
//
// Data movement follows the tiled forward (device/tile.cuh): a block owns 64 channels and a run
// of tokens in pieces of <= 128 rows inside one sequence; each piece lands in shared memory with
// Hp halo rows (x, the state or zeros) through a cp.async pipeline (2 stages, or 3 where they
// keep as many blocks an SM). The stage is channel-last, 16-byte chunks of 8 channels
// XOR-swizzled by row (mma_forward_layout.hpp). A fragments want pairs of consecutive rows of one
// channel, so each warp transposes its channel groups in place first: per 32 rows, one ldmatrix
// .trans and one stmatrix at the same per-lane addresses turn 8 rows x 8 channels into 8
// channels x 8 rows (segment_offset). Then a chunk's A fragment is one ldmatrix .x4 and its B
// fragment two 32-bit loads of the channel's weight pairs: per mma 4 instructions, against ~11
// (weight loads, register moves and byte permutes) in the earlier form that put the weights in A
// and built the data operand from channel-last rows. The last chunk may read one row block past
// the tile against zero weights: 8 zero rows after each stage keep those products finite.
//
// Two block shapes: 4 warps owning two 8-channel groups each, one group at a time (128
// registers: 4 blocks an SM at K <= 33, where two stages and the weights take <= 56 KB), or 8
// warps owning one group each (2 blocks), taken where the 4-warp blocks get fewer than 3 an SM or
// the pieces do not fill the SMs (twice the warps a piece). Accumulator e of a lane is output row
// 8g + 2q + (e & 1) + 64 (e >> 1) of its channel, so a lane holds 8 channels of a row: results
// go back into the group's (dead) chunks of the stage as whole 16-byte segments, and the block
// writes whole rows.
//
// The Toeplitz zeros multiply inputs outside each output's window, so a non-finite input would
// leak into outputs the formula keeps finite. Any product with a non-finite operand leaves a
// non-finite sum, so the kernel checks its sums: a block with a non-finite weight, or a warp
// whose sums of a piece are not all finite, computes those outputs with the plain (masked) sum
// instead, which follows the contract exactly.
//
// Status (H100, bf16, B=4 T=4096 C=4096; bench/NOTES.md v23-v24): K = 32 0.1105 ms (81% of the
// copy floor; 0.131 with the earlier form), K = 24 0.110, K = 48 0.130, K = 64 0.144, K = 128
// 0.203.
//
// Summation order differs from the FMA kernels (and from conv1d_update), so results agree with
// them to rounding, not bitwise; ForwardParams::tensor_cores = false keeps the FMA kernels.
#include <array>
#include <mutex>
#include <type_traits>

#include "check.hpp"
#include "device/common.cuh"
#include "device/mma.cuh"
#include "device/sequences.cuh"
#include "device/tile.cuh"
#include "launch.hpp"
#include "mma_forward_layout.hpp"
#include "tiled.hpp"

namespace shortconv::cuda {
namespace {

using detail::ForwardParams;
using mma::mma16816;
using mma::nonfinite_pair;
using mma::smem_address;
using mma_forward::kChannels;
using mma_forward::kRows;
using mma_forward::chunk_offset;
using mma_forward::first_tap;
using mma_forward::Layout;
using mma_forward::make_layout;
using mma_forward::smem_bytes;
using mma_forward::stage_bytes;
using mma_forward::stage_rows;
using mma_forward::weight_bytes;
using tile::cp_async16;
using tile::cp_async_commit;
using tile::cp_async_wait;
using tile::load_rows_at;
using tile::Piece;
using tile::PieceWalker;
using tile::RowSource;

/// Threads of a block whose warps own `groups` 8-channel groups each (2: 4 warps, 1: 8 warps).
constexpr int threads_of(int groups) { return 64 / 8 / groups * 32; }
/// tile::load_rows into this kernel's swizzled 16-bit tile.
template <class T, int kThreads>
__device__ __forceinline__ void load_piece(T* smem, const RowSource<T>& src, const SeqView& q, const Piece& pc, std::int64_t pos0,
                                           int rows, std::int64_t c0, std::int64_t C) {
  load_rows_at<T, kThreads>(smem, [](int r, int chunk) { return chunk_offset(r, chunk); }, src, q, pc, pos0, rows, c0, C, threadIdx.x);
}

template <class T, int kStages, int kGroups>
__global__ __launch_bounds__(threads_of(kGroups), kGroups == 2 ? 4 : 2) void forward_mma_kernel(ForwardParams p, SeqView q, TiledGrid g, Layout L) {
  constexpr int kThreads = threads_of(kGroups);
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int gq = lane / 4, qq = lane % 4;
  // Stages at a 128-byte aligned shared address: the fragment addresses XOR their chunk bits.
  unsigned char* smem = smem_raw + (((smem_address(smem_raw) + 127u) & ~127u) - smem_address(smem_raw));
  T* stage_base = reinterpret_cast<T*>(smem);
  unsigned* wsm = reinterpret_cast<unsigned*>(smem + stage_bytes(L) * kStages);  // [64][pairs]
  float* bsm = reinterpret_cast<float*>(smem + stage_bytes(L) * kStages + weight_bytes(L));
  bool* staged = reinterpret_cast<bool*>(bsm + kChannels);  // this piece's y of channel group i is in the tile
  const std::int64_t C = p.shape.channels;
  RowSource<T> src{static_cast<const T*>(p.x), p.x_batch_stride, p.x_seq_stride, static_cast<const T*>(p.initial_state.data),
                   p.initial_state.batch_stride, p.initial_state.seq_stride, L.H};
  T* y = static_cast<T*>(p.y);
  const T* w = static_cast<const T*>(p.weight);
  // The zero rows of every stage (written once: nothing else stores there), read after the
  // first job's barrier.
  for (int i = threadIdx.x; i < kStages * 64; i += kThreads)
    *reinterpret_cast<uint4*>(stage_base + (i / 64) * stage_rows(L) * kChannels + (L.tile_rows + i % 64 / 8) * kChannels + i % 8 * 8) =
        make_uint4(0u, 0u, 0u, 0u);
  // Chunk j's A fragment: ldmatrix matrices a0..a3 are (output blocks 0-7, inputs 0-7), (8-15,
  // 0-7), (0-7, 8-15), (8-15, 8-15) of the chunk, so row r of matrix i is the transposed segment
  // of row block 2j + r + 8 (i & 1) + (i >> 1).
  const int rb_lane = lane % 8 + 8 * ((lane / 8) & 1) + lane / 16;
  const int quads = (L.tile_rows + 31) / 32;
  const int w_lane = 2 * qq - gq + 7;  // b0 is pair 16j + w_lane of the channel, b1 the pair 8 on

  for (std::int64_t job = blockIdx.x; job < g.jobs; job += gridDim.x) {
    const std::int64_t c0 = (job % g.ctiles) * kChannels;
    // Runs of run_rows each: this grid has no taper (make_tiled_grid gives head_runs == runs then;
    // test_tiled_grid.cu), and run_range here cost the 3-stage kernel 12 more bytes of spills.
    const std::int64_t r0 = (job / g.ctiles) * g.run_rows;
    const std::int64_t r1 = min64(g.rows, r0 + g.run_rows);
    // The first pieces' copies go out before the weights and the bias are staged, so their
    // loads overlap (every block starts a job at about the same time: two waves).
    // Pieces start at positions that are multiples of 16 (a run's first piece computes from the
    // block start and stores from its own), so every output's sum is grouped by its position in
    // the sequence alone: equal whatever the run boundaries, the batch layout or cu_seqlens.
    PieceWalker producer(q, r0, r1, kRows, 16), consumer = producer;
#pragma unroll
    for (int st = 0; st < kStages - 1; ++st) {
      const Piece pc = producer.next();
      if (pc.n > 0) load_piece<T, kThreads>(stage_base + st * stage_rows(L) * kChannels, src, q, pc, (pc.pos & ~15LL) - L.Hp, L.tile_rows, c0, C);
      cp_async_commit();
    }
    const int bias_ch = static_cast<int>(threadIdx.x);
    const float bias = bias_ch < kChannels && p.bias != nullptr && c0 + bias_ch < C ? load_any(p.bias, p.bdtype, (c0 + bias_ch) * p.bias_stride) : 0.0f;
    bool bad_weight = false;
    // Pair n of a channel is (w[k0 + n], w[k0 + n + 1]), k0 = first_tap(L), zeros outside the
    // taps. Two or four threads a channel, each owning a run of its pairs: a thread computes its
    // channel's address once (the per-element 64-bit index math of one thread per (channel, pair)
    // was 9% of the kernel's instructions at K = 32) and loads each of its taps once, 17 in
    // flight (one round trip for 16 pairs, not 4 as the compiler batched a pair a step).
    constexpr int kPerChannel = kThreads / kChannels;
    static_assert(kPerChannel * kChannels == kThreads, "whole threads a channel");
    {
      const int ch = static_cast<int>(threadIdx.x) / kPerChannel;
      const std::int64_t c = c0 + ch;
      const auto* wc = reinterpret_cast<const unsigned short*>(w) + (c < C ? c : 0) * p.w_channel_stride;
      const int k0 = first_tap(L), span = (L.pairs + kPerChannel - 1) / kPerChannel;
      const int n_begin = static_cast<int>(threadIdx.x) % kPerChannel * span, n_end = min(L.pairs, n_begin + span);
      for (int n0 = n_begin; n0 < n_end; n0 += 16) {
        unsigned h[17];
#pragma unroll
        for (int e = 0; e < 17; ++e) {
          const int k = k0 + n0 + e;
          h[e] = c < C && n0 + e <= n_end && k >= 0 && k <= L.H ? wc[k * p.w_width_stride] : 0u;
        }
#pragma unroll
        for (int e = 0; e < 16; ++e) {
          if (n0 + e >= n_end) break;
          wsm[ch * L.pairs + n0 + e] = h[e] | (h[e + 1] << 16);
          bad_weight |= nonfinite_pair<T>(h[e] | (h[e + 1] << 16));
        }
      }
    }
    if (bias_ch < kChannels) bsm[bias_ch] = bias;
    bad_weight = __syncthreads_or(bad_weight) != 0;

    for (int it = 0;; ++it) {
      const Piece pc = consumer.next();
      if (pc.n == 0) break;
      // The next piece's copies go out after the barrier that ends the previous piece's use of
      // their stage, so a piece takes two barriers, not three (H100, K = 32: -2%).
      cp_async_wait<kStages - 2>();
      __syncthreads();
      {
        const Piece pn = producer.next();
        if (pn.n > 0)
          load_piece<T, kThreads>(stage_base + ((it + kStages - 1) % kStages) * stage_rows(L) * kChannels, src, q, pn,
                                  (pn.pos & ~15LL) - L.Hp, L.tile_rows, c0, C);
        cp_async_commit();
      }

      T* tile = stage_base + (it % kStages) * stage_rows(L) * kChannels;
      const unsigned tile_s = smem_address(tile);
      const T* rows = tile;
      const int lead = static_cast<int>(pc.pos & 15);  // output t of the tile is position pc.pos - lead + t
      const std::int64_t base = pc.pos - lead;
      bool exact[kGroups];
      int nch[kGroups];
#pragma unroll
      for (int h = 0; h < kGroups; ++h) {
        const int grp = warp * kGroups + h;  // channels past C are zeros in the tile and the weights
        // The group's chunks, transposed in place 32 rows at a time: ldmatrix .trans gives lane
        // (g, q) channel g of rows 8rb + 2q, +1, and stmatrix puts row block rb of channel g where
        // row 8rb + g was: the same address per lane (segment_offset). Lanes past the zero rows
        // rewrite zeros.
        for (int u = 0; u < quads; ++u) {
          const int r = 32 * u + lane;
          const unsigned addr = tile_s + 2 * chunk_offset(r < L.tile_rows + 8 ? r : L.tile_rows + lane % 8, grp);
          unsigned v[4];
          mma::ldsm_x4_trans(v, addr);
          mma::stsm_x4(addr, v);
        }
        __syncwarp();
        // Chunk j of the group's channels. The sums start from chunk 0's products (no
        // accumulator input: setting 32 accumulators to the bias took ~70 register moves a group
        // and piece, as the compiler copied them for each entry to the unrolled loop); the bias
        // joins at the end.
        float acc[8][4];
        const unsigned* wg = wsm + grp * 8 * L.pairs + w_lane;
        auto chunk = [&](int j, bool first) {
          // Segment (ch, rb) is at byte 1024 rb + 128 ch + 16 (grp ^ ch ^ (rb & 7)) of the tile,
          // whose shared address is 128-byte aligned: (v ^ 16 ch) + 128 ch.
          const int rb = 2 * j + rb_lane;
          const unsigned v = tile_s + 1024u * rb + 16u * ((grp ^ rb) & 7);
#pragma unroll
          for (int ch = 0; ch < 8; ++ch) {
            unsigned a[4];
            mma::ldsm_x4(a, (v ^ (16u * ch)) + 128u * ch);
            const unsigned* wc = wg + ch * L.pairs + 16 * j;
            if (first) {
              mma::mma16816_first<T>(acc[ch], a, wc[0], wc[8]);
            } else {
              mma16816<T>(acc[ch], a, wc[0], wc[8]);
            }
          }
        };
        chunk(0, true);
#pragma unroll 2
        for (int j = 1; j < L.J; ++j) chunk(j, false);
        // The Toeplitz zeros multiply inputs outside each output's window; any product with a
        // non-finite operand leaves a non-finite sum, so a group whose sums are not all finite
        // (acc * 0 summed: NaN) is recomputed term by term below. Four chains, not one of 32
        // dependent FMAs.
        float chk[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int ch = 0; ch < 8; ++ch)
#pragma unroll
          for (int e = 0; e < 4; ++e) chk[e] = fmaf(acc[ch][e], 0.0f, chk[e]);
        chk[0] += chk[1] + (chk[2] + chk[3]);
        exact[h] = bad_weight || __any_sync(0xffffffffu, chk[0] != 0.0f);
        nch[h] = static_cast<int>(max64(0, min64(8, C - (c0 + grp * 8))));
        if (lane == 0) staged[grp] = !exact[h];
        if (exact[h]) continue;
        // y goes back into the group's chunks of the tile (no other warp reads them, and the
        // fragments above have read them), then the block writes whole rows. Accumulator e of
        // channel ch is output row 8g + 2q + (e & 1) + 64 (e >> 1), so a lane holds 8 channels of
        // one row: one 16-byte store.
        float bias[8];
#pragma unroll
        for (int ch = 0; ch < 8; ++ch) bias[ch] = bsm[grp * 8 + ch];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int t = 8 * gq + 2 * qq + (e & 1) + 64 * (e >> 1);
          if (t < lead || t >= lead + pc.n) continue;
          unsigned out[4];
#pragma unroll
          for (int ch = 0; ch < 8; ch += 2) {
            float a = acc[ch][e] + bias[ch], b = acc[ch + 1][e] + bias[ch + 1];
            if (p.silu) {
              a = silu_f(a);
              b = silu_f(b);
            }
            out[ch / 2] = pack2<T>(a, b);
          }
          *reinterpret_cast<uint4*>(tile + chunk_offset(L.Hp + t, grp)) = make_uint4(out[0], out[1], out[2], out[3]);
        }
      }
#pragma unroll
      for (int h = 0; h < kGroups; ++h) {
        if (!exact[h] || nch[h] == 0) continue;
        // The contract's sum, term by term: outputs before position K-1 without a state leave
        // out the terms before position 0, and nothing multiplies the Toeplitz zeros.
        const int grp = warp * kGroups + h;
        const std::int64_t cg = c0 + grp * 8;
        for (int item = lane; item < pc.n * 8; item += 32) {
          const int t = lead + item / 8, ch = item % 8;
          if (ch >= nch[h]) continue;
          const std::int64_t pos = base + t;
          const int k0 = src.state == nullptr && pos < L.H ? static_cast<int>(L.H - pos) : 0;
          float a = bsm[grp * 8 + ch];
          for (int k = k0; k <= L.H; ++k) {
            const int r = L.Hp + t - L.H + k;
            const float xv = to_f32(rows[mma_forward::segment_offset(r / 8, ch, grp) + r % 8]);
            a = fmaf(to_f32(w[(cg + ch) * p.w_channel_stride + k * p.w_width_stride]), xv, a);
          }
          if (p.silu) a = silu_f(a);
          y[q.offset(pc.s, pc.first, pos, p.y_batch_stride, p.y_seq_stride) + cg + ch] = from_f32<T>(a);
        }
      }
      __syncthreads();  // y of every staged group is in the tile
      {
        const int chunk = static_cast<int>(threadIdx.x) % 8;
        const std::int64_t cg = c0 + chunk * 8;
        const int n8 = static_cast<int>(max64(0, min64(8, C - cg)));
        const int t0 = lead + static_cast<int>(threadIdx.x) / 8;
        if (staged[chunk] && n8 > 0 && t0 < lead + pc.n) {
          // Rows of a piece are consecutive positions of one sequence: one pointer steps down them
          // (an offset computed per row was 14% of the kernel's instructions at K = 32). It is
          // only ever formed for rows of the piece (no pointer past y's last row).
          T* yp = y + q.offset(pc.s, pc.first, base + t0, p.y_batch_stride, p.y_seq_stride) + cg;
          const std::int64_t step = p.y_seq_stride * (kThreads / 8);
          auto store = [&](T* dst, const uint4& v) {
            if (n8 == 8) {
              *reinterpret_cast<uint4*>(dst) = v;
            } else {
              const unsigned words[4] = {v.x, v.y, v.z, v.w};
              auto* yh = reinterpret_cast<unsigned short*>(dst);
#pragma unroll
              for (int ch = 0; ch < 8; ++ch) {
                if (ch < n8) yh[ch] = static_cast<unsigned short>(words[ch / 2] >> (16 * (ch & 1)));
              }
            }
          };
          // Two rows a step, both read before either is stored (one row a step waited on each
          // shared load: the top stall of the kernel, ncu at K = 32).
          const int t_end = lead + pc.n;
          for (int t = t0;; t += kThreads / 4) {
            const bool two = t + kThreads / 8 < t_end;
            const uint4 v0 = *reinterpret_cast<const uint4*>(rows + chunk_offset(L.Hp + t, chunk));
            uint4 v1{};
            if (two) v1 = *reinterpret_cast<const uint4*>(rows + chunk_offset(L.Hp + t + kThreads / 8, chunk));
            store(yp, v0);
            if (two) store(yp + step, v1);
            if (t + kThreads / 4 >= t_end) break;
            yp += 2 * step;
          }
        }
      }
    }
    cp_async_wait<0>();
    __syncthreads();  // the next job restages the weights and refills the stages
  }
}

/// Blocks of the (kStages, kGroups) kernel an SM holds for layout L (0: its shared memory does
/// not fit).
template <class T, int kStages, int kGroups>
std::int64_t blocks_per_sm(const Layout& L, int device) {
  constexpr auto kernel = forward_mma_kernel<T, kStages, kGroups>;
  const std::size_t smem = smem_bytes(L, kStages);
  if (smem > static_cast<std::size_t>(set_max_dynamic_smem<kernel>(device))) return 0;
  return resident_blocks(kernel, threads_of(kGroups), smem, 1);
}

/// A kernel for layout L on a device: its pipeline stages (0: none fits) and the blocks an SM holds.
struct MmaConfig {
  int stages = 0;
  std::int64_t blocks = 0;
};

/// 2 stages where they keep more blocks an SM than 3 do, else 3.
template <class T, int kGroups>
MmaConfig pick_stages(const Layout& L, int device) {
  const std::int64_t blocks3 = blocks_per_sm<T, 3, kGroups>(L, device), blocks2 = blocks_per_sm<T, 2, kGroups>(L, device);
  if (blocks3 == 0 && blocks2 == 0) return {};
  return blocks2 > blocks3 ? MmaConfig{2, blocks2} : MmaConfig{3, blocks3};
}

/// The configurations of the 4-warp ([0]: two groups a warp) and 8-warp ([1]) kernels for layout
/// L on `device`, worked out once per (device, K): the occupancy queries cost host time.
template <class T>
std::array<MmaConfig, 2> mma_configs(const Layout& L, int device) {
  static std::array<std::array<std::array<MmaConfig, 2>, kTiledMaxK + 1>, 64> known{};
  static std::array<std::array<bool, kTiledMaxK + 1>, 64> done{};
  static std::mutex mu;
  const bool cached = device >= 0 && device < static_cast<int>(known.size());
  if (cached) {
    std::lock_guard<std::mutex> lock(mu);
    if (done[device][L.K]) return known[device][L.K];
  }
  const std::array<MmaConfig, 2> configs{pick_stages<T, 2>(L, device), pick_stages<T, 1>(L, device)};
  if (cached) {
    std::lock_guard<std::mutex> lock(mu);
    known[device][L.K] = configs;
    done[device][L.K] = true;
  }
  return configs;
}

template <class T, int kStages, int kGroups>
void launch_mma(const ForwardParams& p, const SeqView& q, std::int64_t rows, const Layout& L) {
  constexpr auto kernel = forward_mma_kernel<T, kStages, kGroups>;
  constexpr int kThreads = threads_of(kGroups);
  const std::size_t smem = smem_bytes(L, kStages);
  const std::int64_t resident = resident_blocks(kernel, kThreads, smem, sm_count(p.device_index));
  // A block a job (tiled.hpp): H100, bf16 B=4 T=4096 C=4096, K=32 0.1342 -> 0.1304 ms, K=64
  // 0.1814 -> 0.1790; more jobs (4 or 8 waves) were slower (0.140 / 0.146 at K=32).
  const TiledGrid g = make_tiled_grid(rows, p.shape.channels, resident, 2, kRows, kChannels, Blocks::per_job);
  kernel<<<g.grid, kThreads, smem, static_cast<cudaStream_t>(p.stream)>>>(p, q, g, L);
}

template <class T, int kGroups>
void launch_mma(const ForwardParams& p, const SeqView& q, std::int64_t rows, const Layout& L, int stages) {
  if (stages == 2) {
    launch_mma<T, 2, kGroups>(p, q, rows, L);
  } else {
    launch_mma<T, 3, kGroups>(p, q, rows, L);
  }
}

}  // namespace

template <class T>
bool forward_mma(const ForwardParams& p, const SeqView& q, std::int64_t rows) {
  if constexpr (sizeof(T) != 2) {
    return false;
  } else {
    const std::int64_t K = p.shape.width;
    if (!p.tensor_cores || K < kMmaMinK || K > kTiledMaxK || p.wdtype != p.dtype) return false;
    auto aligned = [](const void* ptr, std::int64_t s0, std::int64_t s1) { return rows_aligned16(ptr, s0, s1, sizeof(T)); };
    if (!aligned(p.x, p.x_batch_stride, p.x_seq_stride) || !aligned(p.y, p.y_batch_stride, p.y_seq_stride) ||
        !aligned(p.initial_state.data, p.initial_state.batch_stride, p.initial_state.seq_stride))
      return false;
    const Layout L = make_layout(static_cast<int>(K));
    const std::array<MmaConfig, 2> configs = mma_configs<T>(L, p.device_index);
    // 4-warp blocks where they keep as many warps an SM as 8-warp blocks and the pieces fill
    // the SMs; else 8-warp blocks (twice the warps a piece). H100, bf16, the earlier form of the kernel: K = 32 0.1305 ms
    // with 3 blocks of 4 warps against 0.137 with 2 of 8; K = 64 (2 blocks of 4 warps) 0.180
    // against 0.166; (1,512,1024,32), 64 pieces of 64 channels x 128 rows, 0.0084 against 0.0073.
    const std::int64_t pieces = (p.shape.channels + kChannels - 1) / kChannels * ((rows + kRows - 1) / kRows);
    const bool four_warps =
        configs[1].stages == 0 || (4 * configs[0].blocks >= 8 * configs[1].blocks && pieces >= sm_count(p.device_index));
    if (four_warps) {
      if (configs[0].stages == 0) return false;
      launch_mma<T, 2>(p, q, rows, L, configs[0].stages);
    } else {
      launch_mma<T, 1>(p, q, rows, L, configs[1].stages);
    }
    SHORTCONV_CUDA_CHECK_LAUNCH("conv1d_forward (tensor-core) kernel launch");
    return true;
  }
}

template bool forward_mma<float>(const ForwardParams&, const SeqView&, std::int64_t);
template bool forward_mma<__nv_bfloat16>(const ForwardParams&, const SeqView&, std::int64_t);
template bool forward_mma<__half>(const ForwardParams&, const SeqView&, std::int64_t);

}  // namespace shortconv::cuda
