// CPU backend for the depthwise causal conv1d: forward, backward and the decode step.
//
//   z[s,p,c]  = bias[c] + sum_k w[c,k] * xe[s, p+k-(K-1), c]     y = z or silu(z)
//   xe        = x, extended before p = 0 by the initial state (absent terms without one)
//   dx[s,i,c] = sum_k w[c,k] * g[s, i+K-1-k, c] (+ d_final_state)   g = dy or dy * silu'(z)
//   dw[c,k]   = sum_{s,p} xe[s, p+k-(K-1), c] * g[s,p,c]             dbias[c] = sum g
//
// Layout and threading: the token rows of all sequences (batch rows, or the packed runs of a
// varlen batch) are flattened and cut into chunks of consecutive rows whose length depends only on
// the shape, never on the thread count; OpenMP threads take whole chunks. A row is swept in blocks
// of kBlock channels: the f32 accumulators of a block stay in registers and the loop over the block
// vectorises. Weights are transposed once into f32 [K][C] so a tap's weights are contiguous. Each
// row gathers its K tap rows as pointers (x, the initial state, or absent), which is how sequence
// starts, states and varlen boundaries are handled without branches in the inner loop.
//
// Determinism: dweight and dbias are summed per chunk into f32 partials ([K+1][C] a chunk), then
// the partials are added in chunk order, so results are bitwise identical for any thread count.
//
// Variant `naive` is the one-output-at-a-time baseline kept for benchmarks (plain op only).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif

#include "../params.hpp"
#include "../registry.hpp"
#include "elem.hpp"

namespace shortconv::cpu {
namespace {

using detail::BackwardParams;
using detail::ForwardParams;
using detail::UpdateParams;

constexpr std::int64_t kBlock = 64;  // channels per register block: 4 AVX-512 or 8 AVX2 vectors of f32

// Outputs larger than this are written with non-temporal stores: a row that will not be read
// again soon then costs one write instead of a read-for-ownership plus a write.
constexpr std::int64_t kStreamBytes = std::int64_t{32} << 20;

// Software prefetch distance in rows. Rows of a wide tensor are often a page apart, where the
// hardware streamers stop, so one core alone cannot keep enough misses in flight.
constexpr std::int64_t kPrefetchRows = 6;

template <class T>
inline void prefetch_block(const T* p) {
  for (std::size_t i = 0; i < sizeof(T) * kBlock; i += 64) __builtin_prefetch(reinterpret_cast<const char*>(p) + i, 0, 3);
}

// Writes kBlock converted outputs from `src` (64-byte aligned scratch) to `dst`, streaming when
// asked and dst is aligned. Callers fence with finish_streaming() before returning.
template <class T>
inline void write_block(T* dst, const T* src, bool stream) {
  constexpr std::size_t kBytes = sizeof(T) * kBlock;
#if defined(__AVX512F__)
  if (stream && reinterpret_cast<std::uintptr_t>(dst) % 64 == 0) {
    for (std::size_t i = 0; i < kBytes; i += 64)
      _mm512_stream_si512(reinterpret_cast<__m512i*>(reinterpret_cast<char*>(dst) + i),
                          _mm512_load_si512(reinterpret_cast<const char*>(src) + i));
    return;
  }
#elif defined(__AVX__)
  if (stream && reinterpret_cast<std::uintptr_t>(dst) % 32 == 0) {
    for (std::size_t i = 0; i < kBytes; i += 32)
      _mm256_stream_si256(reinterpret_cast<__m256i*>(reinterpret_cast<char*>(dst) + i),
                          _mm256_load_si256(reinterpret_cast<const __m256i*>(reinterpret_cast<const char*>(src) + i)));
    return;
  }
#endif
  (void)stream;
  std::memcpy(dst, src, kBytes);
}

inline void finish_streaming() {
#if defined(__AVX512F__) || defined(__AVX__)
  _mm_sfence();
#endif
}

// Below this many elements a call runs on one thread: waking a team costs more than the work
// (and several OpenMP runtimes in one process, e.g. next to PyTorch's, spin against each other).
constexpr std::int64_t kParallelMin = std::int64_t{1} << 16;

// Rows of the flattened token axis, cut into chunks by shape alone.
struct Chunking {
  std::int64_t len = 1;    // rows a chunk
  std::int64_t count = 1;  // chunks
};

Chunking make_chunking(std::int64_t rows, std::int64_t floats_per_partial) {
  // At most 256 chunks, and at most ~64 MiB of dweight partials.
  const std::int64_t by_memory =
      std::max<std::int64_t>(1, (std::int64_t{16} << 20) / std::max<std::int64_t>(floats_per_partial, 1));
  const std::int64_t max_chunks = std::min<std::int64_t>(256, by_memory);
  Chunking c;
  c.len = std::max<std::int64_t>(16, (rows + max_chunks - 1) / max_chunks);
  c.count = std::max<std::int64_t>(1, (rows + c.len - 1) / c.len);
  return c;
}

// Sequence geometry: batch rows of equal length, or the runs of cu_seqlens (host memory here).
class SeqMap {
 public:
  SeqMap(const detail::Sequences& seqs, const detail::ConvShape& shape) : count_(shape.batch), seqlen_(shape.seqlen) {
    if (seqs.varlen()) {
      starts_.resize(static_cast<std::size_t>(count_ + 1));
      for (std::int64_t s = 0; s <= count_; ++s) starts_[s] = load_index(seqs.cu_seqlens, seqs.cu_dtype, s);
    }
  }
  std::int64_t count() const { return count_; }
  std::int64_t rows() const { return varlen() ? starts_.back() : count_ * seqlen_; }
  std::int64_t start(std::int64_t s) const { return varlen() ? starts_[s] : s * seqlen_; }
  std::int64_t length(std::int64_t s) const { return varlen() ? starts_[s + 1] - starts_[s] : seqlen_; }
  // Sequence holding flattened row r (the last of several when empty sequences share a start).
  std::int64_t seq_of(std::int64_t r) const {
    if (!varlen()) return r / seqlen_;
    return std::upper_bound(starts_.begin(), starts_.end(), r) - starts_.begin() - 1;
  }
  // Element offset of (s, pos) in an x-like tensor with the given strides.
  std::int64_t offset(std::int64_t s, std::int64_t pos, std::int64_t batch_stride, std::int64_t seq_stride) const {
    return varlen() ? (starts_[s] + pos) * seq_stride : s * batch_stride + pos * seq_stride;
  }

 private:
  bool varlen() const { return !starts_.empty(); }
  std::int64_t count_, seqlen_;
  std::vector<std::int64_t> starts_;
};

// f32 copy of weight as [K][C] and of bias as [C] (zeros when absent).
struct Coefficients {
  std::vector<float> wT, bias;
  template <class Params>
  explicit Coefficients(const Params& p) {
    const std::int64_t C = p.shape.channels, K = p.shape.width;
    wT.resize(static_cast<std::size_t>(K * C));
    bias.assign(static_cast<std::size_t>(C), 0.0f);
    for (std::int64_t c = 0; c < C; ++c)
      for (std::int64_t k = 0; k < K; ++k)
        wT[k * C + c] = load_as_f32(p.weight, p.wdtype, c * p.w_channel_stride + k * p.w_width_stride);
    if (p.bias != nullptr)
      for (std::int64_t c = 0; c < C; ++c) bias[c] = load_as_f32(p.bias, p.bdtype, c * p.bias_stride);
  }
};

// Pointers to the K input rows that feed output (s, pos): xe[pos+k-(K-1)] for k < K, null when absent.
template <class T, class Params>
void gather_taps(const Params& p, const SeqMap& seqs, std::int64_t s, std::int64_t pos, std::vector<const T*>& taps) {
  const std::int64_t K = p.shape.width;
  const auto* x = static_cast<const T*>(p.x);
  const auto* init = static_cast<const T*>(p.initial_state.data);
  for (std::int64_t k = 0; k < K; ++k) {
    const std::int64_t src = pos + k - (K - 1);
    if (src >= 0) {
      taps[k] = x + seqs.offset(s, src, p.x_batch_stride, p.x_seq_stride);
    } else if (init != nullptr) {
      taps[k] = init + s * p.initial_state.batch_stride + (K - 1 + src) * p.initial_state.seq_stride;
    } else {
      taps[k] = nullptr;
    }
  }
}

// z for channels [c0, c0+len) of one row from its tap rows.
template <class T, bool kFull>
inline void conv_block(const T* const* taps, std::int64_t K, const float* wcol, std::int64_t C, const float* bcol,
                       std::int64_t c0, std::int64_t n, float* acc) {
  const std::int64_t len = kFull ? kBlock : n;
  for (std::int64_t j = 0; j < len; ++j) acc[j] = bcol[j];
  for (std::int64_t k = 0; k < K; ++k) {
    if (taps[k] == nullptr) continue;
    const T* xr = taps[k] + c0;
    const float* wr = wcol + k * C;
#pragma omp simd
    for (std::int64_t j = 0; j < len; ++j) acc[j] += wr[j] * to_f32(xr[j]);
  }
}

template <class T, bool kFull>
inline void forward_block(const T* const* taps, std::int64_t K, const Coefficients& co, std::int64_t C, std::int64_t c0,
                          std::int64_t n, bool silu_on, T* ycol, bool stream, const T* prefetch) {
  const std::int64_t len = kFull ? kBlock : n;
  if constexpr (kFull) prefetch_block(prefetch);
  float acc[kBlock];
  conv_block<T, kFull>(taps, K, co.wT.data() + c0, C, co.bias.data() + c0, c0, n, acc);
  if (silu_on) {
#pragma omp simd
    for (std::int64_t j = 0; j < len; ++j) acc[j] = silu(acc[j]);
  }
  if constexpr (kFull) {
    alignas(64) T out[kBlock];
    for (std::int64_t j = 0; j < kBlock; ++j) out[j] = from_f32<T>(acc[j]);
    write_block(ycol, out, stream);
  } else {
    for (std::int64_t j = 0; j < len; ++j) ycol[j] = from_f32<T>(acc[j]);
  }
}

// final_state[s][j] = xe[s, len-(K-1)+j]; runs after every read of initial_state, so the two may
// be one buffer (rows are written in increasing j and only ever read from higher indices).
template <class T>
void write_final_state(const ForwardParams& p, const SeqMap& seqs) {
  const std::int64_t K = p.shape.width, C = p.shape.channels;
  const auto* x = static_cast<const T*>(p.x);
  const auto* init = static_cast<const T*>(p.initial_state.data);
  auto* fin = static_cast<T*>(p.final_state.data);
#pragma omp parallel for schedule(static) if (seqs.count() * (K - 1) * C >= kParallelMin)
  for (std::int64_t s = 0; s < seqs.count(); ++s) {
    const std::int64_t len = seqs.length(s);
    for (std::int64_t j = 0; j < K - 1; ++j) {
      T* dst = fin + s * p.final_state.batch_stride + j * p.final_state.seq_stride;
      const std::int64_t q = len - (K - 1) + j;
      const T* src = q >= 0 ? x + seqs.offset(s, q, p.x_batch_stride, p.x_seq_stride)
                   : init != nullptr ? init + s * p.initial_state.batch_stride + (K - 1 + q) * p.initial_state.seq_stride
                                     : nullptr;
      if (src == nullptr) {
        for (std::int64_t c = 0; c < C; ++c) dst[c] = from_f32<T>(0.0f);
      } else if (src != dst) {
        std::memmove(dst, src, static_cast<std::size_t>(C) * sizeof(T));
      }
    }
  }
}

template <class T>
void forward_fast(const ForwardParams& p) {
  const std::int64_t C = p.shape.channels, K = p.shape.width;
  const Coefficients co(p);
  const SeqMap seqs(p.seqs, p.shape);
  auto* y = static_cast<T*>(p.y);
  const std::int64_t rows = seqs.rows();
  const Chunking chunks = make_chunking(rows, 0);
  const std::int64_t full = C / kBlock * kBlock;
  const bool stream = rows * C * static_cast<std::int64_t>(sizeof(T)) >= kStreamBytes;

#pragma omp parallel if (rows * C * K >= kParallelMin)
  {
    std::vector<const T*> taps(static_cast<std::size_t>(K));
#pragma omp for schedule(static)
    for (std::int64_t chunk = 0; chunk < chunks.count; ++chunk) {
      const std::int64_t r0 = chunk * chunks.len, r1 = std::min(rows, r0 + chunks.len);
      std::int64_t s = r0 < r1 ? seqs.seq_of(r0) : 0;
      for (std::int64_t r = r0; r < r1; ++r) {
        while (r >= seqs.start(s) + seqs.length(s)) ++s;
        const std::int64_t pos = r - seqs.start(s);
        gather_taps<T>(p, seqs, s, pos, taps);
        T* yrow = y + seqs.offset(s, pos, p.y_batch_stride, p.y_seq_stride);
        // Prefetch the row kPrefetchRows ahead in the same sequence (past the end is harmless).
        const T* ahead = static_cast<const T*>(p.x) + seqs.offset(s, pos + kPrefetchRows, p.x_batch_stride, p.x_seq_stride);
        for (std::int64_t c0 = 0; c0 < full; c0 += kBlock)
          forward_block<T, true>(taps.data(), K, co, C, c0, kBlock, p.silu, yrow + c0, stream, ahead + c0);
        if (full < C) forward_block<T, false>(taps.data(), K, co, C, full, C - full, p.silu, yrow + full, false, nullptr);
      }
      if (stream) finish_streaming();
    }
  }
  if (p.final_state.data != nullptr) write_final_state<T>(p, seqs);
}

// ---- backward ----

// Rows of the gradient g = dy (G = T) or dy * silu'(z) (G = float, computed into a scratch block).
template <class T, class G>
struct GradRows {
  const BackwardParams& p;
  const SeqMap& seqs;
  const G* scratch = nullptr;  // rows [first, ...) of the current block when G is float
  std::int64_t first = 0;
  std::int64_t C = 0;
  const G* row(std::int64_t s, std::int64_t pos) const {
    if constexpr (std::is_same_v<G, float>) {
      if (scratch != nullptr) return scratch + (seqs.start(s) + pos - first) * C;
    }
    if constexpr (std::is_same_v<G, T>) {
      return static_cast<const T*>(p.dy) + seqs.offset(s, pos, p.dy_batch_stride, p.dy_seq_stride);
    } else {
      return nullptr;  // unreachable: G = float for a 16-bit T always comes with a scratch
    }
  }
};

// g = dy * silu'(z) for flattened rows [r0, r1) into scratch rows [0, r1-r0).
template <class T>
void silu_grad_rows(const BackwardParams& p, const SeqMap& seqs, const Coefficients& co, std::int64_t r0, std::int64_t r1,
                    float* scratch, std::vector<const T*>& taps) {
  const std::int64_t C = p.shape.channels, K = p.shape.width;
  if (r0 >= r1) return;
  std::int64_t s = seqs.seq_of(r0);
  for (std::int64_t r = r0; r < r1; ++r) {
    while (r >= seqs.start(s) + seqs.length(s)) ++s;
    const std::int64_t pos = r - seqs.start(s);
    gather_taps<T>(p, seqs, s, pos, taps);
    const T* dyr = static_cast<const T*>(p.dy) + seqs.offset(s, pos, p.dy_batch_stride, p.dy_seq_stride);
    float* g = scratch + (r - r0) * C;
    for (std::int64_t c0 = 0; c0 < C; c0 += kBlock) {
      const std::int64_t n = std::min(kBlock, C - c0);
      float acc[kBlock];
      if (n == kBlock) {
        conv_block<T, true>(taps.data(), K, co.wT.data() + c0, C, co.bias.data() + c0, c0, n, acc);
      } else {
        conv_block<T, false>(taps.data(), K, co.wT.data() + c0, C, co.bias.data() + c0, c0, n, acc);
      }
#pragma omp simd
      for (std::int64_t j = 0; j < n; ++j) g[c0 + j] = to_f32(dyr[c0 + j]) * silu_grad(acc[j]);
    }
  }
}

// dx for channels [c0, c0+len) of one row from its gradient taps gtaps[k] = g[pos+K-1-k] (null
// past the end of the sequence), plus the d_final_state row `dfs` when the row feeds final_state.
template <class T, class G, bool kFull>
inline void dx_block(const G* const* gtaps, const T* dfs, const float* wT, std::int64_t K, std::int64_t C, std::int64_t c0,
                     std::int64_t n, T* dxrow, bool stream) {
  const std::int64_t len = kFull ? kBlock : n;
  float acc[kBlock];
  for (std::int64_t j = 0; j < len; ++j) acc[j] = 0.0f;
  for (std::int64_t k = 0; k < K; ++k) {
    if (gtaps[k] == nullptr) continue;
    const G* gr = gtaps[k] + c0;
    const float* wr = wT + k * C + c0;
#pragma omp simd
    for (std::int64_t j = 0; j < len; ++j) acc[j] += wr[j] * to_f32(gr[j]);
  }
  if (dfs != nullptr)
    for (std::int64_t j = 0; j < len; ++j) acc[j] += to_f32(dfs[c0 + j]);
  if constexpr (kFull) {
    alignas(64) T out[kBlock];
    for (std::int64_t j = 0; j < kBlock; ++j) out[j] = from_f32<T>(acc[j]);
    write_block(dxrow + c0, out, stream);
  } else {
    for (std::int64_t j = 0; j < len; ++j) dxrow[c0 + j] = from_f32<T>(acc[j]);
  }
}

// dw/dbias partials from kRows consecutive rows starting at (s, pos), all of whose taps are x rows
// when kRows > 1 (then each dw accumulator is loaded and stored once per group, not per row).
template <class T, class G, bool kFull, int kRows>
inline void dw_block(const T* const* taps, std::int64_t xst, const G* g0, std::int64_t gst, std::int64_t K, std::int64_t C,
                     std::int64_t c0, std::int64_t n, float* dw, float* db) {
  const std::int64_t len = kFull ? kBlock : n;
  for (int u = 0; u < kRows; ++u) {
    const G* gr = g0 + u * gst + c0;
#pragma omp simd
    for (std::int64_t j = 0; j < len; ++j) db[c0 + j] += to_f32(gr[j]);
  }
  for (std::int64_t k = 0; k < K; ++k) {
    if (taps[k] == nullptr) continue;
    const T* xr = taps[k] + c0;
    const G* gr = g0 + c0;
    float* dwr = dw + k * C + c0;
#pragma omp simd
    for (std::int64_t j = 0; j < len; ++j) {
      float a = dwr[j];
      for (int u = 0; u < kRows; ++u) a += to_f32(xr[u * xst + j]) * to_f32(gr[u * gst + j]);
      dwr[j] = a;
    }
  }
}

template <class T, class G>
void backward_impl(const BackwardParams& p) {
  const std::int64_t C = p.shape.channels, K = p.shape.width;
  const Coefficients co(p);
  const SeqMap seqs(p.seqs, p.shape);
  auto* dx = static_cast<T*>(p.dx);
  const bool need_reduce = p.dweight != nullptr || p.dbias != nullptr;
  const std::int64_t rows = seqs.rows();
  const std::int64_t partial_floats = (K + 1) * C;  // [K][C] dweight then [C] dbias
  const Chunking chunks = make_chunking(rows, need_reduce ? partial_floats : 0);
  std::vector<float> partials(need_reduce ? static_cast<std::size_t>(chunks.count * partial_floats) : 0, 0.0f);
  const std::int64_t full = C / kBlock * kBlock;
  const bool stream = rows * C * static_cast<std::int64_t>(sizeof(T)) >= kStreamBytes;
  const bool silu_scratch = p.silu;
  constexpr std::int64_t kSub = 64;  // rows per silu scratch block
  const std::int64_t gst = silu_scratch ? C : p.dy_seq_stride;

#pragma omp parallel if (rows * C * K >= kParallelMin)
  {
    std::vector<const T*> taps(static_cast<std::size_t>(K));
    std::vector<const G*> gtaps(static_cast<std::size_t>(4 * K));  // per row of a group
    std::vector<const T*> dfs(4);
    std::vector<T*> dxrows(4);
    std::vector<float> scratch(silu_scratch ? static_cast<std::size_t>((kSub + K - 1) * C) : 0);
#pragma omp for schedule(static)
    for (std::int64_t chunk = 0; chunk < chunks.count; ++chunk) {
      float* dw = need_reduce ? partials.data() + chunk * partial_floats : nullptr;
      float* db = need_reduce ? dw + K * C : nullptr;
      const std::int64_t r0 = chunk * chunks.len, r1 = std::min(rows, r0 + chunks.len);
      for (std::int64_t rb = r0; rb < r1; rb += silu_scratch ? kSub : r1 - r0) {
        const std::int64_t re = std::min(r1, rb + (silu_scratch ? kSub : r1 - r0));
        GradRows<T, G> g{p, seqs, nullptr, rb, C};
        if constexpr (std::is_same_v<G, float>) {
          if (silu_scratch) {
            silu_grad_rows<T>(p, seqs, co, rb, std::min(rows, re + K - 1), scratch.data(), taps);
            g.scratch = scratch.data();
          }
        }
        std::int64_t s = seqs.seq_of(rb);
        for (std::int64_t r = rb; r < re;) {
          while (r >= seqs.start(s) + seqs.length(s)) ++s;
          const std::int64_t pos = r - seqs.start(s), len_s = seqs.length(s);
          // Groups of 4 rows inside the block and the sequence whose taps are all x rows.
          const bool group = pos >= K - 1 && pos + 4 <= len_s && r + 4 <= re;
          const int nrows = group ? 4 : 1;
          gather_taps<T>(p, seqs, s, pos, taps);
          const G* g0 = g.row(s, pos);
          if (dx != nullptr)
            for (int u = 0; u < nrows; ++u) {
              const std::int64_t i = pos + u;
              for (std::int64_t k = 0; k < K; ++k) gtaps[u * K + k] = i + K - 1 - k < len_s ? g.row(s, i + K - 1 - k) : nullptr;
              dfs[u] = p.d_final_state.data != nullptr && i >= len_s - (K - 1)
                           ? static_cast<const T*>(p.d_final_state.data) + s * p.d_final_state.batch_stride +
                                 (i - len_s + K - 1) * p.d_final_state.seq_stride
                           : nullptr;
              dxrows[u] = dx + seqs.offset(s, i, p.dx_batch_stride, p.dx_seq_stride);
            }
          for (std::int64_t c0 = 0; c0 < C; c0 += kBlock) {
            const std::int64_t n = std::min(kBlock, C - c0);
            const bool fullb = c0 < full;
            if (fullb) {
              const T* xa = static_cast<const T*>(p.x) + seqs.offset(s, pos + kPrefetchRows, p.x_batch_stride, p.x_seq_stride);
              if (need_reduce) prefetch_block(xa + c0);
              if (!silu_scratch)
                prefetch_block(static_cast<const T*>(p.dy) +
                               seqs.offset(s, pos + K - 1 + kPrefetchRows, p.dy_batch_stride, p.dy_seq_stride) + c0);
            }
            if (need_reduce) {
              if (group) {
                fullb ? dw_block<T, G, true, 4>(taps.data(), p.x_seq_stride, g0, gst, K, C, c0, n, dw, db)
                      : dw_block<T, G, false, 4>(taps.data(), p.x_seq_stride, g0, gst, K, C, c0, n, dw, db);
              } else {
                fullb ? dw_block<T, G, true, 1>(taps.data(), p.x_seq_stride, g0, gst, K, C, c0, n, dw, db)
                      : dw_block<T, G, false, 1>(taps.data(), p.x_seq_stride, g0, gst, K, C, c0, n, dw, db);
              }
            }
            if (dx != nullptr)
              for (int u = 0; u < nrows; ++u) {
                fullb ? dx_block<T, G, true>(gtaps.data() + u * K, dfs[u], co.wT.data(), K, C, c0, n, dxrows[u], stream)
                      : dx_block<T, G, false>(gtaps.data() + u * K, dfs[u], co.wT.data(), K, C, c0, n, dxrows[u], false);
              }
          }
          r += nrows;
        }
      }
      if (stream) finish_streaming();
    }
  }

  // d_initial_state[s][j] = sum_k w[k] g[j-k] (0 <= j-k < len) + d_final_state[s][j-len] (j >= len).
  if (p.d_initial_state.data != nullptr) {
#pragma omp parallel if (seqs.count() * K * K * C >= kParallelMin)
    {
      std::vector<const T*> taps(static_cast<std::size_t>(K));
      std::vector<float> scratch(silu_scratch ? static_cast<std::size_t>(K * C) : 0);
#pragma omp for schedule(static)
      for (std::int64_t s = 0; s < seqs.count(); ++s) {
        const std::int64_t len = seqs.length(s), head = std::min(len, K - 1);
        GradRows<T, G> g{p, seqs, nullptr, seqs.start(s), C};
        if constexpr (std::is_same_v<G, float>) {
          if (silu_scratch) {
            silu_grad_rows<T>(p, seqs, co, seqs.start(s), seqs.start(s) + head, scratch.data(), taps);
            g.scratch = scratch.data();
          }
        }
        for (std::int64_t j = 0; j < K - 1; ++j) {
          T* out = static_cast<T*>(p.d_initial_state.data) + s * p.d_initial_state.batch_stride + j * p.d_initial_state.seq_stride;
          for (std::int64_t c = 0; c < C; ++c) {
            float acc = 0.0f;
            for (std::int64_t k = std::max<std::int64_t>(0, j - head + 1); k <= j; ++k)
              acc += co.wT[k * C + c] * to_f32(g.row(s, j - k)[c]);
            if (p.d_final_state.data != nullptr && j >= len)
              acc += to_f32(static_cast<const T*>(p.d_final_state.data)[s * p.d_final_state.batch_stride +
                                                                         (j - len) * p.d_final_state.seq_stride + c]);
            out[c] = from_f32<T>(acc);
          }
        }
      }
    }
  }
  if (!need_reduce) return;

  // Fixed-order reduction of the chunk partials: each thread owns a contiguous range of the
  // flattened (k, c) entries and adds the chunks in order, vectorised over the range.
  std::vector<float> sums(static_cast<std::size_t>(partial_floats), 0.0f);
  constexpr std::int64_t kSpan = 1024;
  const std::int64_t spans = (partial_floats + kSpan - 1) / kSpan;
#pragma omp parallel for schedule(static) if (chunks.count * partial_floats >= kParallelMin)
  for (std::int64_t sp = 0; sp < spans; ++sp) {
    const std::int64_t e0 = sp * kSpan, e1 = std::min(partial_floats, e0 + kSpan);
    float* out = sums.data();
    for (std::int64_t chunk = 0; chunk < chunks.count; ++chunk) {
      const float* part = partials.data() + chunk * partial_floats;
#pragma omp simd
      for (std::int64_t e = e0; e < e1; ++e) out[e] += part[e];
    }
  }
  for (std::int64_t c = 0; c < C; ++c) {
    if (p.dweight != nullptr)
      for (std::int64_t k = 0; k < K; ++k)
        store_from_f32(p.dweight, p.wdtype, c * p.dw_channel_stride + k * p.dw_width_stride, sums[k * C + c]);
    if (p.dbias != nullptr) store_from_f32(p.dbias, p.wdtype, c * p.dbias_stride, sums[K * C + c]);
  }
}

template <class T>
void backward_fast(const BackwardParams& p) {
  if (p.silu) {
    backward_impl<T, float>(p);
  } else {
    backward_impl<T, T>(p);
  }
}

// ---- decode step ----

template <class T>
void update_fast(const UpdateParams& p) {
  const std::int64_t B = p.shape.batch, Tn = p.shape.seqlen, C = p.shape.channels, K = p.shape.width;
  const Coefficients co(p);
  const auto* x = static_cast<const T*>(p.x);
  auto* y = static_cast<T*>(p.y);
  auto* state = static_cast<T*>(p.state.data);
#pragma omp parallel for schedule(static) if (B * (Tn + K) * C >= kParallelMin)
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t slot = p.state_indices != nullptr ? load_index(p.state_indices, p.index_dtype, b * p.index_stride) : b;
    if (slot == -1) {  // padding row: zero output, no state touched
      for (std::int64_t t = 0; t < Tn; ++t)
        for (std::int64_t c = 0; c < C; ++c) y[b * p.y_batch_stride + t * p.y_seq_stride + c] = from_f32<T>(0.0f);
      continue;
    }
    T* st = state + slot * p.state.batch_stride;
    // xe[i]: state row i for i < K-1, then x row i-(K-1).
    auto xe = [&](std::int64_t i) -> const T* {
      return i < K - 1 ? st + i * p.state.seq_stride : x + b * p.x_batch_stride + (i - (K - 1)) * p.x_seq_stride;
    };
    for (std::int64_t t = 0; t < Tn; ++t) {
      T* yr = y + b * p.y_batch_stride + t * p.y_seq_stride;
      for (std::int64_t c = 0; c < C; ++c) {
        float acc = co.bias[c];
        for (std::int64_t k = 0; k < K; ++k) acc += co.wT[k * C + c] * to_f32(xe(t + k)[c]);
        yr[c] = from_f32<T>(p.silu ? silu(acc) : acc);
      }
    }
    // New state row j = xe[Tn + j]; rows are only read from higher indices than written.
    for (std::int64_t j = 0; j < K - 1; ++j) {
      const T* src = xe(Tn + j);
      T* dst = st + j * p.state.seq_stride;
      if (src != dst) std::memmove(dst, src, static_cast<std::size_t>(C) * sizeof(T));
    }
  }
}

// ---- naive baseline: one output element at a time (plain op) ----

template <class T>
void forward_naive(const ForwardParams& p) {
  const auto [B, T_, C, K] = p.shape;
  const auto* x = static_cast<const T*>(p.x);
  auto* y = static_cast<T*>(p.y);
#pragma omp parallel for collapse(2) schedule(static)
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T_; ++t)
      for (std::int64_t c = 0; c < C; ++c) {
        float acc = p.bias != nullptr ? load_as_f32(p.bias, p.bdtype, c * p.bias_stride) : 0.0f;
        for (std::int64_t k = 0; k < K; ++k) {
          const std::int64_t src = t + k - (K - 1);
          if (src >= 0)
            acc += load_as_f32(p.weight, p.wdtype, c * p.w_channel_stride + k * p.w_width_stride) *
                   to_f32(x[b * p.x_batch_stride + src * p.x_seq_stride + c]);
        }
        y[b * p.y_batch_stride + t * p.y_seq_stride + c] = from_f32<T>(acc);
      }
}

template <class T>
void backward_naive(const BackwardParams& p) {
  const auto [B, T_, C, K] = p.shape;
  const auto* x = static_cast<const T*>(p.x);
  const auto* dy = static_cast<const T*>(p.dy);
  auto* dx = static_cast<T*>(p.dx);
  auto w = [&](std::int64_t c, std::int64_t k) {
    return load_as_f32(p.weight, p.wdtype, c * p.w_channel_stride + k * p.w_width_stride);
  };
  if (dx != nullptr) {
#pragma omp parallel for collapse(2) schedule(static)
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < T_; ++i)
        for (std::int64_t c = 0; c < C; ++c) {
          float acc = 0.0f;
          for (std::int64_t k = 0; k < K; ++k) {
            const std::int64_t t = i + K - 1 - k;
            if (t < T_) acc += w(c, k) * to_f32(dy[b * p.dy_batch_stride + t * p.dy_seq_stride + c]);
          }
          dx[b * p.dx_batch_stride + i * p.dx_seq_stride + c] = from_f32<T>(acc);
        }
  }
  // One output of dweight / dbias per iteration, each summing over every token in a fixed order.
#pragma omp parallel for schedule(static)
  for (std::int64_t c = 0; c < C; ++c) {
    for (std::int64_t k = 0; k <= K; ++k) {
      if ((k < K && p.dweight == nullptr) || (k == K && p.dbias == nullptr)) continue;
      float acc = 0.0f;
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t t = 0; t < T_; ++t) {
          const float g = to_f32(dy[b * p.dy_batch_stride + t * p.dy_seq_stride + c]);
          if (k == K) {
            acc += g;
          } else if (const std::int64_t src = t + k - (K - 1); src >= 0) {
            acc += to_f32(x[b * p.x_batch_stride + src * p.x_seq_stride + c]) * g;
          }
        }
      if (k < K) {
        store_from_f32(p.dweight, p.wdtype, c * p.dw_channel_stride + k * p.dw_width_stride, acc);
      } else {
        store_from_f32(p.dbias, p.wdtype, c * p.dbias_stride, acc);
      }
    }
  }
}

template <class T>
void add_dtype(detail::Registry& r, DType dtype) {
  using detail::Op;
  r.add({DeviceType::cpu, Op::forward, dtype, Variant::fast}, detail::ForwardFn{&forward_fast<T>});
  r.add({DeviceType::cpu, Op::backward, dtype, Variant::fast}, detail::BackwardFn{&backward_fast<T>});
  r.add({DeviceType::cpu, Op::update, dtype, Variant::fast}, detail::UpdateFn{&update_fast<T>});
  r.add({DeviceType::cpu, Op::forward, dtype, Variant::naive}, detail::ForwardFn{&forward_naive<T>});
  r.add({DeviceType::cpu, Op::backward, dtype, Variant::naive}, detail::BackwardFn{&backward_naive<T>});
}

}  // namespace

void register_kernels(detail::Registry& registry) {
  add_dtype<float>(registry, DType::f32);
  add_dtype<bf16_t>(registry, DType::bf16);
  add_dtype<f16_t>(registry, DType::f16);
}

}  // namespace shortconv::cpu
