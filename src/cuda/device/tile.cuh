// Shared-memory tiles for the pipelined kernels (conv1d_fwd_tiled.cu, conv1d_bwd_tiled.cu; the
// tensor-core kernels use the cp.async helpers, PieceWalker and RowSource with their own tile
// layouts and 128-row pieces).
//
// A block owns a tile of kTileC = 64 channels (or two side by side, each with its own threads and
// shared memory: the 16-bit kernels' 128-channel blocks) and a run of flat tokens. It cuts the
// run into pieces of at most kPieceRows rows that never cross a sequence boundary, and copies each piece,
// with its halo rows, from global memory into shared memory with cp.async (16-byte copies that
// land without passing through registers, so the bytes in flight no longer depend on the register
// budget). Halo rows outside the sequence come from the initial state or are zero-filled by the
// copy itself, so the arithmetic on a tile needs no masks: every row holds exactly the value of
// the formula's extended input at that position.
//
// Threads compute on pairs of channels: lane l of every warp owns channels 2l and 2l+1 of the
// tile, and a warp walks groups of kGroupRows rows.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "common.cuh"
#include "sequences.cuh"

namespace shortconv::cuda::tile {

constexpr int kTileC = 64;      // channels of a tile: 32 lanes x 2
constexpr int kPieceRows = 64;  // rows computed per piece
constexpr int kGroupRows = 16;  // rows a warp computes at once (register accumulators)

// ---- cp.async --------------------------------------------------------------------------------

/// Copies `src_bytes` (0..16) bytes from global to shared memory and zero-fills the rest of the
/// 16-byte slot. `gmem` must be a valid 16-byte aligned address even when src_bytes is 0.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  const auto s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// ---- pairs of channels in shared memory -----------------------------------------------------

/// Channels 2*lane and 2*lane+1 of smem row `row` (rows are kTileC elements of T), as f32.
/// kTwoOps (bf16 only): the pair's bits moved up in two instructions, the low half shifted and the
/// high half masked, where __bfloat1622float2 takes three (PRMT the high half down, then shift
/// both up; SASS, sm_90). The same values. Taken where it measured faster (H100, bf16 B=4 T=4096
/// C=4096): the K = 16 backward's one-pass group 0.1792-0.1796 -> 0.1738-0.1742 ms (1364 -> 1293
/// instructions a warp and group), the exact K = 8 / 16 forward windows 0.0980 -> 0.0975 /
/// 0.1015 -> 0.1008. Taken everywhere, it measured slower in the K = 8 backward (0.1538 ->
/// 0.1586) and the same or slower at K = 4 (small shape forward 0.0044-0.0045 -> 0.0046-0.0047).
template <class T, bool kTwoOps = false>
__device__ __forceinline__ float2 lds2(const T* rows, int row, int lane) {
  if constexpr (std::is_same_v<T, float>) {
    return reinterpret_cast<const float2*>(rows + row * kTileC)[lane];
  } else if constexpr (std::is_same_v<T, __half>) {
    return __half22float2(reinterpret_cast<const __half2*>(rows + row * kTileC)[lane]);
  } else if constexpr (kTwoOps) {
    const unsigned u = reinterpret_cast<const unsigned*>(rows + row * kTileC)[lane];
    return {__uint_as_float(u << 16), __uint_as_float(u & 0xffff0000u)};
  } else {
    return __bfloat1622float2(reinterpret_cast<const __nv_bfloat162*>(rows + row * kTileC)[lane]);
  }
}

/// Stores a pair of channels at `p` (element c of a row); `n` of them are inside the tensor.
/// `p` is 2-element aligned whenever n == 2 (the caller's alignment check guarantees it).
/// For 16-bit types this compiles to two 2-byte stores; store_rows' whole groups use store_pair
/// (one 4- or 8-byte store a pair) instead.
template <class T>
__device__ __forceinline__ void store2(T* p, int n, float a, float b) {
  if (n >= 2) {
    struct alignas(2 * sizeof(T)) Two {
      T v[2];
    } two{{from_f32<T>(a), from_f32<T>(b)}};
    *reinterpret_cast<Two*>(p) = two;
  } else if (n == 1) {
    *p = from_f32<T>(a);
  }
}

/// Stores a full pair of channels at `p` (2-element aligned) as one 4- or 8-byte access.
template <class T>
__device__ __forceinline__ void store_pair(T* p, float a, float b) {
  if constexpr (sizeof(T) == 4) {
    *reinterpret_cast<float2*>(p) = make_float2(a, b);
  } else {
    *reinterpret_cast<unsigned*>(p) = pack2<T>(a, b);
  }
}

/// Stores kN rows of a pair of channels, row i at p + i * stride; `rows` of them and `nc`
/// channels exist. A whole group of full pairs (every group away from a piece's end and the last
/// channel) takes one store a row and no checks: per-row checks and 2-byte stores were half of
/// the bf16 forward's instructions (ncu, H100, B=4 T=4096 C=4096 K=4).
template <int kN, class T>
__device__ __forceinline__ void store_rows(T* p, std::int64_t stride, const float2 (&acc)[kN], int rows, int nc) {
  if (rows >= kN && nc == 2) {
#pragma unroll
    for (int i = 0; i < kN; ++i) store_pair<T>(p + i * stride, acc[i].x, acc[i].y);
  } else {
#pragma unroll
    for (int i = 0; i < kN; ++i)
      if (i < rows) store2<T>(p + i * stride, nc, acc[i].x, acc[i].y);
  }
}

// ---- pieces: runs of rows inside one sequence -----------------------------------------------

struct Piece {
  std::int64_t s = 0;      // sequence
  std::int64_t first = 0;  // flat index of its first token
  std::int64_t len = 0;    // its length
  std::int64_t pos = 0;    // first position of the piece in the sequence
  int n = 0;               // rows; 0 once the run is exhausted
};

/// Walks the pieces of the flat rows [begin, end), cut at `max_rows` (kPieceRows for the FMA tile
/// kernels, 128 for the tensor-core ones) and at sequence ends.
struct PieceWalker {
  SeqView q;
  std::int64_t s, first, len, pos, end;
  int max_rows;
  int align;  // a power of two: pieces end at positions that are multiples of it (or at max_rows)

  __device__ PieceWalker(const SeqView& view, std::int64_t begin, std::int64_t stop, int rows = kPieceRows, int align_to = 1)
      : q(view), end(stop), max_rows(rows), align(align_to) {
    s = q.find(begin);
    first = q.begin(s);
    len = q.begin(s + 1) - first;
    pos = begin - first;
  }
  __device__ Piece next() {
    Piece p;
    if (first + pos >= end) return p;
    while (pos >= len) {  // the sequence is done (or empty): move to the next one
      ++s;
      first += len;
      len = q.begin(s + 1) - first;
      pos = 0;
    }
    p.s = s;
    p.first = first;
    p.len = len;
    p.pos = pos;
    const int cap = max_rows - static_cast<int>(pos & (align - 1));
    p.n = static_cast<int>(min64(cap, min64(len - pos, end - (first + pos))));
    pos += p.n;
    return p;
  }
};

/// A tensor laid out like x ([B, T, C] or packed [total, C], channel stride 1), and optionally
/// the state that extends it before position 0 ([B, K-1, C]).
template <class T>
struct RowSource {
  const T* data = nullptr;
  std::int64_t batch_stride = 0, seq_stride = 0;
  const T* state = nullptr;  // null: zeros before position 0
  std::int64_t state_batch_stride = 0, state_seq_stride = 0;
  std::int64_t state_rows = 0;  // K - 1
};

/// Copies positions [pos0, pos0 + rows) of sequence `pc.s` (channels [c0, c0 + kTileC)) into the
/// tile rows [0, rows); `at(r, chunk)` is the element offset of 16-byte chunk `chunk` of tile row
/// r (the layouts differ between kernels). Positions before 0 come from the state (or are zero),
/// positions at or past the sequence end are zero, and so are channels at or past C. Issued by
/// the kThreads threads tid = 0 .. kThreads-1 (a block may hold several such groups, one a
/// tile); completes on the caller's cp.async group. A thread keeps one chunk column
/// and steps down the rows. The rows inside the sequence are counted once, so their loop is a
/// pointer add and the copy: the per-row position checks and selects it replaced were ~17
/// instructions a copy (SASS, bf16 forward), against ~8 FMAs an element.
template <class T, int kThreads, class At>
__device__ __forceinline__ void load_rows_at(T* smem, At at, const RowSource<T>& src, const SeqView& q, const Piece& pc,
                                             std::int64_t pos0, int rows, std::int64_t c0, std::int64_t C, int tid) {
  constexpr int kPerRow = kTileC * static_cast<int>(sizeof(T)) / 16;  // 16-byte chunks in a row
  constexpr int kElems = 16 / static_cast<int>(sizeof(T));
  constexpr int kRowStep = kThreads / kPerRow;
  static_assert(kThreads % kPerRow == 0, "a thread keeps one column");
  const int chunk = tid % kPerRow;
  const std::int64_t c = c0 + chunk * kElems;
  const int bytes = c < C ? static_cast<int>(min64(kElems, C - c)) * static_cast<int>(sizeof(T)) : 0;
  int r = tid / kPerRow;
  // Rows before position 0 (only in a piece at a sequence start): the state, or zeros.
  for (std::int64_t pos = pos0 + r; r < rows && pos < 0; r += kRowStep, pos += kRowStep) {
    const bool copy = src.state != nullptr && pos >= -src.state_rows && bytes > 0;
    const T* g = copy ? src.state + pc.s * src.state_batch_stride + (src.state_rows + pos) * src.state_seq_stride + c : src.data;
    cp_async16(smem + at(r, chunk), g, copy ? bytes : 0);  // (a zero-byte copy still gets an in-bounds address)
  }
  // Tile rows below in_end hold positions inside the sequence; the rest are zeros past its end.
  const int in_end = bytes > 0 ? static_cast<int>(max64(0, min64(rows, pc.len - pos0))) : 0;
  if (r < in_end) {
    const std::int64_t stride = src.seq_stride * kRowStep;
    const T* g = src.data + q.offset(pc.s, pc.first, pos0 + r, src.batch_stride, src.seq_stride) + c;
    for (; r < in_end; r += kRowStep, g += stride) cp_async16(smem + at(r, chunk), g, bytes);
  }
  // Not unrolled: only a piece at a sequence end has these rows, and unrolled copies of this
  // loop (16 a call site) grew the kernels' code for nothing.
#pragma unroll 1
  for (; r < rows; r += kRowStep) cp_async16(smem + at(r, chunk), src.data, 0);
}

/// The per-row form of load_rows: each row checks its position and picks its source (~17 SASS
/// instructions a copy). Kept for the one kernel it measured faster in: the 16-bit backward for
/// 4 < K <= 8 (H100, bf16 B=4 T=4096 C=4096 K=8: 163 us against 171-173 with the counted loop,
/// while K = 4 went 178 -> 176 us and K = 16 226 -> 214 us with it; not profiled).
template <class T, int kThreads>
__device__ __forceinline__ void load_rows_per_row(T* smem, const RowSource<T>& src, const SeqView& q, const Piece& pc,
                                                  std::int64_t pos0, int rows, std::int64_t c0, std::int64_t C, int tid) {
  constexpr int kPerRow = kTileC * static_cast<int>(sizeof(T)) / 16;
  constexpr int kElems = 16 / static_cast<int>(sizeof(T));
  constexpr int kRowStep = kThreads / kPerRow;
  const int col = (tid % kPerRow) * kElems;
  const std::int64_t c = c0 + col;
  const int bytes = c < C ? static_cast<int>(min64(kElems, C - c)) * static_cast<int>(sizeof(T)) : 0;
  int r = tid / kPerRow;
  std::int64_t pos = pos0 + r;
  T* dst = smem + r * kTileC + col;
  for (; r < rows && pos < 0; r += kRowStep, pos += kRowStep, dst += kRowStep * kTileC) {
    const bool copy = src.state != nullptr && pos >= -src.state_rows && bytes > 0;
    const T* g = copy ? src.state + pc.s * src.state_batch_stride + (src.state_rows + pos) * src.state_seq_stride + c : src.data;
    cp_async16(dst, g, copy ? bytes : 0);
  }
  const std::int64_t stride = src.seq_stride * kRowStep;
  const T* g = src.data + q.offset(pc.s, pc.first, pos, src.batch_stride, src.seq_stride) + c;
  for (; r < rows; r += kRowStep, pos += kRowStep, dst += kRowStep * kTileC, g += stride) {
    const bool copy = pos < pc.len && bytes > 0;
    cp_async16(dst, copy ? g : src.data, copy ? bytes : 0);
  }
}

/// load_rows_at for the FMA kernels' plain tile: rows of kTileC elements, chunk k at element 8k
/// (16-bit) or 4k (f32).
template <class T, int kThreads>
__device__ __forceinline__ void load_rows(T* smem, const RowSource<T>& src, const SeqView& q, const Piece& pc, std::int64_t pos0,
                                          int rows, std::int64_t c0, std::int64_t C, int tid) {
  constexpr int kElems = 16 / static_cast<int>(sizeof(T));
  load_rows_at<T, kThreads>(smem, [](int r, int chunk) { return r * kTileC + chunk * kElems; }, src, q, pc, pos0, rows, c0, C, tid);
}

// ---- the sliding-window product on a tile -----------------------------------------------------

/// acc[i] += coef(k) * rows[base + kStride * (i + k)] for i < kN and k < count, over a pair of
/// channels. Each row is read once (kN + count - 1 reads): a register window slides down the rows,
/// rotating through its slots, so the k loop is unrolled by kN for any count.
///  - a convolution over kN output rows: kStride 1, k the tap, coef the weight;
///  - dweight taps k0, k0 + 4, ...: kStride 4, i the tap, k the row step, coef the gradient row.
/// 1 <= count <= kMaxCount. A kMaxCount of at most kN (the kernels' K buckets) leaves one pass of
/// kMaxCount guarded steps: a K = 4 forward then spends no instructions on steps 5 to 16.
/// kTwoOps: the rows' bf16 conversion of lds2.
template <int kN, int kStride, int kMaxCount = (1 << 30), bool kTwoOps = false, class T, class Coef>
__device__ __forceinline__ void window_sum(float2 (&acc)[kN], const T* rows, int base, int count, int lane, Coef coef) {
  __builtin_assume(count >= 1);  // the first step is unguarded: its FMAs can take acc's initial values
  float2 win[kN];  // at step k, slot (i + k) % kN holds row base + kStride * (i + k)
#pragma unroll
  for (int i = 0; i < kN; ++i) win[i] = lds2<T, kTwoOps>(rows, base + kStride * i, lane);
  const T* next = rows + (base + kStride * kN) * kTileC;  // the row step k loads (for step k + 1)
  // Steps are guarded, not left with `break`: every path keeps the accumulators in the same
  // registers (an early exit made the compiler copy all of them at each step).
  for (int kb = 0; kb < count; kb += kN) {
#pragma unroll
    for (int kk = 0; kk < kN; ++kk) {
      if (kk < kMaxCount && kb + kk < count) {
        const float2 w = coef(kb + kk);
#pragma unroll
        for (int i = 0; i < kN; ++i) {
          const float2 v = win[(i + kk) % kN];
          acc[i].x = fmaf(w.x, v.x, acc[i].x);
          acc[i].y = fmaf(w.y, v.y, acc[i].y);
        }
        // acc[0]'s row for this step is done with; its slot takes the next row of acc[kN-1].
        if (kb + kk + 1 < count) win[kk] = lds2<T, kTwoOps>(next, 0, lane);
        next += kStride * kTileC;
      }
    }
    if constexpr (kMaxCount <= kN) break;  // count <= kMaxCount: one pass
  }
}

/// The masked form of window_sum for one output whose outer taps are not in the formula (before
/// position 0 without an initial state, or past the sequence end): acc + sum_{k0 <= k < k1}
/// coef(k) * rows[base + k], in the same order as window_sum. The tile holds zeros there, but
/// multiplying them would turn an infinite coefficient into NaN where the contract has no term;
/// the kernels take it only where a factor is not finite (coefs_finite, rows_finite).
template <class T, class Coef>
__device__ __forceinline__ float2 masked_sum(float2 acc, const T* rows, int base, int k0, int k1, int lane, Coef coef) {
  // Not unrolled: it runs only for the first (or last) K-1 rows of a sequence, and its unrolled
  // copies (16 a row group) made up most of a kernel's code, which then missed the instruction
  // cache (ncu: 26% of the bf16 forward's stalls were "no instruction").
#pragma unroll 1
  for (int k = k0; k < k1; ++k) {
    const float2 w = coef(k);
    const float2 v = lds2<T>(rows, base + k, lane);
    acc.x = fmaf(w.x, v.x, acc.x);
    acc.y = fmaf(w.y, v.y, acc.y);
  }
  return acc;
}

/// Whether coef(k) is finite for every k < K (this lane's pair of channels). Then the products of
/// the tile's zeros outside a sequence with them are zeros, and a full window sums the same terms
/// as masked_sum, in the same order: the same bits (a zero sum may take the other sign).
template <class Coef>
__device__ __forceinline__ bool coefs_finite(int K, Coef coef) {
  bool ok = true;
#pragma unroll 1
  for (int k = 0; k < K; ++k) {
    const float2 w = coef(k);
    ok = ok && isfinite(w.x) && isfinite(w.y);
  }
  return ok;
}

/// Whether tile rows [begin, end) of this lane's pair are finite.
template <class T>
__device__ __forceinline__ bool rows_finite(const T* rows, int begin, int end, int lane) {
  bool ok = true;
#pragma unroll 1
  for (int r = begin; r < end; ++r) {
    const float2 v = lds2<T>(rows, r, lane);
    ok = ok && isfinite(v.x) && isfinite(v.y);
  }
  return ok;
}

/// For a group of kN output rows (tile rows r_begin.., sequence positions pos0..) of a sequence
/// without an initial state: recomputes the outputs at positions < K-1 with masked_sum, from
/// `init`, leaving out their terms before position 0.
template <int kN, class T, class Coef>
__device__ __forceinline__ void mask_sequence_start(float2 (&acc)[kN], float2 init, const T* rows, int r_begin, std::int64_t pos0, int K,
                                                    int lane, Coef coef) {
  const int H = K - 1;
  if (pos0 >= H) return;
#pragma unroll
  for (int i = 0; i < kN; ++i) {
    const std::int64_t pos = pos0 + i;
    if (pos < H) acc[i] = masked_sum(init, rows, r_begin + i, static_cast<int>(H - pos), K, lane, coef);
  }
}

/// Stages the weights of channels [c0, c0 + kTileC) as f32 [K][kTileC] in shared memory (zeros
/// past C); P is ForwardParams or BackwardParams. The caller synchronises before reading.
template <int kThreads, class P>
__device__ __forceinline__ void stage_weights(float* wsm, const P& p, int K, std::int64_t c0, std::int64_t C, int tid) {
  for (int i = tid; i < K * kTileC; i += kThreads) {
    const int k = i / kTileC;
    const std::int64_t c = c0 + i % kTileC;
    wsm[i] = c < C ? load_any(p.weight, p.wdtype, c * p.w_channel_stride + k * p.w_width_stride) : 0.0f;
  }
}

/// stage_weights in two halves, so that the weights' global loads overlap a job's first tile
/// copies: issue() loads this thread's elements as raw bits (all before any is used), finish()
/// converts and stores them. Past kMaxEarly elements a thread (K buckets past 16 with the default
/// 8, past 8 with the backward's 4) issue() does nothing and finish() is stage_weights. ncu (H100,
/// bf16 K=4 forward): the load-convert-store loop, each load waiting for the one before, held
/// 7.6% of the stall samples. (conv1d_update.cu stages its weights the same way, inline.)
template <int kThreads, int kMaxK, int kMaxEarly = 8>
struct WeightStager {
  static constexpr int kPer = (kMaxK * kTileC + kThreads - 1) / kThreads;  // elements a thread
  static constexpr bool kEarly = kPer <= kMaxEarly;
  unsigned bits[kEarly ? kPer : 1];

  template <class P>
  __device__ __forceinline__ void issue(const P& p, int K, std::int64_t c0, std::int64_t C, int tid) {
    if constexpr (kEarly) {
#pragma unroll
      for (int j = 0; j < kPer; ++j) {
        const int i = tid + j * kThreads, k = i / kTileC;
        const std::int64_t c = c0 + i % kTileC;
        bits[j] = i < K * kTileC && c < C ? load_bits(p.weight, p.wdtype, c * p.w_channel_stride + k * p.w_width_stride) : 0u;
      }
    }
  }
  template <class P>
  __device__ __forceinline__ void finish(float* wsm, const P& p, int K, std::int64_t c0, std::int64_t C, int tid) const {
    if constexpr (kEarly) {
#pragma unroll
      for (int j = 0; j < kPer; ++j) {
        const int i = tid + j * kThreads;
        if (i < K * kTileC) wsm[i] = bits_as_f32(bits[j], p.wdtype);  // (zero bits: 0.0f in every dtype)
      }
    } else {
      stage_weights<kThreads>(wsm, p, K, c0, C, tid);
    }
  }
};

/// The bias of channels c and c + 1, of which `nc` exist (zeros without a bias), in two halves
/// as WeightStager: issue() loads the raw bits at a job's start, value() converts them where the
/// sums begin, so the loads' latency hides behind the job's first copies. (Loading and
/// converting each element where the sums begin made them wait for two loads in a row: the
/// dtype switch converts between them.)
struct BiasPairStager {
  unsigned x = 0u, y = 0u;  // zero bits: 0.0f in every dtype
  template <class P>
  __device__ __forceinline__ void issue(const P& p, std::int64_t c, int nc) {
    if (p.bias != nullptr) {
      if (nc > 0) x = load_bits(p.bias, p.bdtype, c * p.bias_stride);
      if (nc > 1) y = load_bits(p.bias, p.bdtype, (c + 1) * p.bias_stride);
    }
  }
  template <class P>
  __device__ __forceinline__ float2 value(const P& p) const {
    return {bits_as_f32(x, p.bdtype), bits_as_f32(y, p.bdtype)};
  }
};

}  // namespace shortconv::cuda::tile
