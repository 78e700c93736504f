// CPU backend for the depthwise causal conv1d, forward and backward.
//
//   y[b,t,c]  = bias[c] + sum_k w[c,k] * x[b, t+k-(K-1), c]
//   dx[b,i,c] = sum_k w[c,k] * dy[b, i+K-1-k, c]     dw[c,k] = sum x[b,t+k-(K-1),c] dy[b,t,c]
//
// Layout and threading: the B*T token rows are flattened and cut into chunks of consecutive rows
// whose length depends only on the shape (never on the thread count). OpenMP threads take whole
// chunks. Inside a chunk, each row is swept in blocks of kBlock channels; the f32 accumulators of
// a block stay in registers and the loop over the block vectorises. Weights are transposed once
// into f32 [K][C] so that a tap's weights are contiguous over channels.
//
// Determinism: dweight and dbias are summed per chunk into f32 partials ([K+1][C] a chunk), then
// the partials are added in chunk order, so results are bitwise identical for any thread count.
//
// Variant `naive` is the one-output-at-a-time baseline kept for benchmarks: a straight loop over
// every output element reading the weight in its [C, K] layout, with no blocking.
#include <algorithm>
#include <cstdint>
#include <cstring>
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

constexpr std::int64_t kBlock = 64;  // channels per register block: 4 AVX-512 or 8 AVX2 vectors of f32

// Rows of the flattened [B*T] token axis, cut into chunks by shape alone.
struct Chunking {
  std::int64_t len = 1;    // rows a chunk
  std::int64_t count = 1;  // chunks
};

Chunking make_chunking(std::int64_t rows, std::int64_t floats_per_partial) {
  // At most 256 chunks, and at most ~64 MiB of dweight partials.
  const std::int64_t by_memory = std::max<std::int64_t>(1, (std::int64_t{16} << 20) / std::max<std::int64_t>(floats_per_partial, 1));
  const std::int64_t max_chunks = std::min<std::int64_t>(256, by_memory);
  Chunking c;
  c.len = std::max<std::int64_t>(16, (rows + max_chunks - 1) / max_chunks);
  c.count = (rows + c.len - 1) / c.len;
  return c;
}

// Outputs larger than this are written with non-temporal stores: a row that will not be read
// again soon then costs one write instead of a read-for-ownership plus a write.
constexpr std::int64_t kStreamBytes = std::int64_t{32} << 20;

// Writes kBlock converted outputs from `src` (64-byte aligned scratch) to `dst`, streaming when
// asked and dst is 64-byte aligned. Callers fence with finish_streaming() before returning.
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

// Software prefetch distance in rows. Rows of a wide tensor are often a page apart, where the
// hardware streamers stop, so one core alone cannot keep enough misses in flight.
constexpr std::int64_t kPrefetchRows = 6;

template <class T>
inline void prefetch_block(const T* p) {
  for (std::size_t i = 0; i < sizeof(T) * kBlock; i += 64) __builtin_prefetch(reinterpret_cast<const char*>(p) + i, 0, 3);
}

inline void finish_streaming() {
#if defined(__AVX512F__) || defined(__AVX__)
  _mm_sfence();
#endif
}

// f32 copy of weight as [K][C] and of bias as [C] (zeros when absent).
void prepare_weight(const void* w, DType wdtype, std::int64_t cs, std::int64_t ks, std::int64_t C, std::int64_t K,
                    std::vector<float>& wT) {
  wT.resize(static_cast<std::size_t>(K * C));
  for (std::int64_t c = 0; c < C; ++c)
    for (std::int64_t k = 0; k < K; ++k) wT[k * C + c] = load_as_f32(w, wdtype, c * cs + k * ks);
}

template <class T, bool kFull>
inline void forward_block(const T* xcol, std::int64_t xst, std::int64_t t, std::int64_t K, const float* wcol,
                          std::int64_t C, const float* bcol, T* ycol, std::int64_t n, bool stream) {
  const std::int64_t len = kFull ? kBlock : n;
  if constexpr (kFull) prefetch_block(xcol + (t + kPrefetchRows) * xst);
  float acc[kBlock];
  for (std::int64_t j = 0; j < len; ++j) acc[j] = bcol[j];
  for (std::int64_t k = std::max<std::int64_t>(0, K - 1 - t); k < K; ++k) {
    const T* xr = xcol + (t + k - (K - 1)) * xst;
    const float* wr = wcol + k * C;
#pragma omp simd
    for (std::int64_t j = 0; j < len; ++j) acc[j] += wr[j] * to_f32(xr[j]);
  }
  if constexpr (kFull) {
    alignas(64) T out[kBlock];
    for (std::int64_t j = 0; j < kBlock; ++j) out[j] = from_f32<T>(acc[j]);
    write_block(ycol, out, stream);
  } else {
    for (std::int64_t j = 0; j < len; ++j) ycol[j] = from_f32<T>(acc[j]);
  }
}

template <class T>
void forward_fast(const ForwardParams& p) {
  const auto [B, T_, C, K] = p.shape;
  std::vector<float> wT, bias(static_cast<std::size_t>(C), 0.0f);
  prepare_weight(p.weight, p.wdtype, p.w_channel_stride, p.w_width_stride, C, K, wT);
  if (p.bias != nullptr)
    for (std::int64_t c = 0; c < C; ++c) bias[c] = load_as_f32(p.bias, p.bdtype, c * p.bias_stride);
  const auto* x = static_cast<const T*>(p.x);
  auto* y = static_cast<T*>(p.y);
  const std::int64_t rows = B * T_;
  const Chunking chunks = make_chunking(rows, 0);
  const std::int64_t full = C / kBlock * kBlock;
  const bool stream = rows * C * static_cast<std::int64_t>(sizeof(T)) >= kStreamBytes;

#pragma omp parallel for schedule(static)
  for (std::int64_t chunk = 0; chunk < chunks.count; ++chunk) {
    const std::int64_t r1 = std::min(rows, (chunk + 1) * chunks.len);
    for (std::int64_t r = chunk * chunks.len; r < r1; ++r) {
      const std::int64_t b = r / T_, t = r % T_;
      const T* xb = x + b * p.x_batch_stride;  // x[b, 0, 0]
      T* yrow = y + b * p.y_batch_stride + t * p.y_seq_stride;
      for (std::int64_t c0 = 0; c0 < full; c0 += kBlock)
        forward_block<T, true>(xb + c0, p.x_seq_stride, t, K, wT.data() + c0, C, bias.data() + c0, yrow + c0, kBlock,
                               stream);
      if (full < C)
        forward_block<T, false>(xb + full, p.x_seq_stride, t, K, wT.data() + full, C, bias.data() + full,
                                yrow + full, C - full, false);
    }
    if (stream) finish_streaming();
  }
}

// Backward for kRows consecutive rows t.. of one sequence and channels [c0, c0+len): the dx rows,
// and the dw/dbias partials. With kRows > 1 each dw accumulator is loaded and stored once per
// group instead of once per row; callers use it only where every tap index is >= 0.
template <class T, bool kFull, int kRows>
inline void backward_block(const T* xcol, std::int64_t xst, const T* dycol, std::int64_t dyst, T* dxcol,
                           std::int64_t dxst, std::int64_t t, std::int64_t T_, std::int64_t K, const float* wcol,
                           std::int64_t C, float* dwcol, float* dbcol, std::int64_t n, bool stream) {
  const std::int64_t len = kFull ? kBlock : n;
  if constexpr (kFull) {
    for (int u = 0; u < kRows; ++u) {
      if (dwcol != nullptr) prefetch_block(xcol + (t + u + kPrefetchRows) * xst);
      prefetch_block(dycol + (t + u + K - 1 + kPrefetchRows) * dyst);
    }
  }
  if (dwcol != nullptr) {
    for (int u = 0; u < kRows; ++u) {
      const T* dyt = dycol + (t + u) * dyst;
#pragma omp simd
      for (std::int64_t j = 0; j < len; ++j) dbcol[j] += to_f32(dyt[j]);
    }
    for (std::int64_t k = std::max<std::int64_t>(0, K - 1 - t); k < K; ++k) {
      const T* xr = xcol + (t + k - (K - 1)) * xst;
      const T* dyt = dycol + t * dyst;
      float* dwr = dwcol + k * C;
#pragma omp simd
      for (std::int64_t j = 0; j < len; ++j) {
        float a = dwr[j];
        for (int u = 0; u < kRows; ++u) a += to_f32(xr[u * xst + j]) * to_f32(dyt[u * dyst + j]);
        dwr[j] = a;
      }
    }
  }
  if (dxcol != nullptr) {
    for (int u = 0; u < kRows; ++u) {
      const std::int64_t i = t + u;
      float acc[kBlock];
      for (std::int64_t j = 0; j < len; ++j) acc[j] = 0.0f;
      // dy index i+K-1-k must be < T.
      for (std::int64_t k = std::max<std::int64_t>(0, i + K - T_); k < K; ++k) {
        const T* dyr = dycol + (i + K - 1 - k) * dyst;
        const float* wr = wcol + k * C;
#pragma omp simd
        for (std::int64_t j = 0; j < len; ++j) acc[j] += wr[j] * to_f32(dyr[j]);
      }
      T* dxr = dxcol + u * dxst;
      if constexpr (kFull) {
        alignas(64) T out[kBlock];
        for (std::int64_t j = 0; j < kBlock; ++j) out[j] = from_f32<T>(acc[j]);
        write_block(dxr, out, stream);
      } else {
        for (std::int64_t j = 0; j < len; ++j) dxr[j] = from_f32<T>(acc[j]);
      }
    }
  }
}

template <class T>
void backward_fast(const BackwardParams& p) {
  const auto [B, T_, C, K] = p.shape;
  std::vector<float> wT;
  prepare_weight(p.weight, p.wdtype, p.w_channel_stride, p.w_width_stride, C, K, wT);
  const auto* x = static_cast<const T*>(p.x);
  const auto* dy = static_cast<const T*>(p.dy);
  auto* dx = static_cast<T*>(p.dx);
  const bool need_reduce = p.dweight != nullptr || p.dbias != nullptr;
  const std::int64_t rows = B * T_;
  const std::int64_t partial_floats = (K + 1) * C;  // [K][C] dweight then [C] dbias
  const Chunking chunks = make_chunking(rows, need_reduce ? partial_floats : 0);
  std::vector<float> partials(need_reduce ? static_cast<std::size_t>(chunks.count * partial_floats) : 0, 0.0f);
  const std::int64_t full = C / kBlock * kBlock;
  const bool stream = rows * C * static_cast<std::int64_t>(sizeof(T)) >= kStreamBytes;

#pragma omp parallel for schedule(static)
  for (std::int64_t chunk = 0; chunk < chunks.count; ++chunk) {
    float* dw = need_reduce ? partials.data() + chunk * partial_floats : nullptr;
    float* db = need_reduce ? dw + K * C : nullptr;
    const std::int64_t r1 = std::min(rows, (chunk + 1) * chunks.len);
    for (std::int64_t r = chunk * chunks.len; r < r1;) {
      const std::int64_t b = r / T_, t = r % T_;
      // Groups of 4 rows where they stay inside the chunk and the sequence and see no padding.
      const bool group = t >= K - 1 && t + 4 <= T_ && r + 4 <= r1;
      const T* xb = x + b * p.x_batch_stride;     // x[b, 0, 0]
      const T* dyb = dy + b * p.dy_batch_stride;  // dy[b, 0, 0]
      T* dxrow = dx != nullptr ? dx + b * p.dx_batch_stride + t * p.dx_seq_stride : nullptr;
      for (std::int64_t c0 = 0; c0 < C; c0 += kBlock) {
        const std::int64_t n = std::min(kBlock, C - c0);
        auto run = [&]<bool kFull, int kRows>() {
          backward_block<T, kFull, kRows>(xb + c0, p.x_seq_stride, dyb + c0, p.dy_seq_stride,
                                          dxrow != nullptr ? dxrow + c0 : nullptr, p.dx_seq_stride, t, T_, K,
                                          wT.data() + c0, C, dw != nullptr ? dw + c0 : nullptr,
                                          db != nullptr ? db + c0 : nullptr, n, stream);
        };
        if (c0 < full) {
          group ? run.template operator()<true, 4>() : run.template operator()<true, 1>();
        } else {
          group ? run.template operator()<false, 4>() : run.template operator()<false, 1>();
        }
      }
      r += group ? 4 : 1;
    }
    if (stream) finish_streaming();
  }
  if (!need_reduce) return;

  // Fixed-order reduction of the chunk partials: each thread owns a contiguous range of the
  // flattened (k, c) entries and adds the chunks in order, vectorised over the range.
  std::vector<float> sums(static_cast<std::size_t>(partial_floats), 0.0f);
  constexpr std::int64_t kSpan = 1024;
  const std::int64_t spans = (partial_floats + kSpan - 1) / kSpan;
#pragma omp parallel for schedule(static)
  for (std::int64_t s = 0; s < spans; ++s) {
    const std::int64_t e0 = s * kSpan, e1 = std::min(partial_floats, e0 + kSpan);
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

// ---- naive baseline: one output element at a time ----

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
