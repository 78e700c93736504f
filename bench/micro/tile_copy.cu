// Micro-benchmark: how fast can a block that streams a column strip of a [rows, row_bytes] matrix
// through shared memory (cp.async, S stages, pieces of 64 rows + 3 halo rows, as the tiled forward
// does) copy it to an output of the same layout? Varies the strip width W (bytes of a row a block
// owns) and the stages, against cudaMemcpy of the same bytes. Question it answers: is the 16-bit
// tiled forward's 128-byte strip (64 channels of bf16) slower at the DRAM than f32's 256 bytes?
//
//   nvcc -std=c++17 -O3 -arch=sm_90 --expt-relaxed-constexpr bench/micro/tile_copy.cu -o /tmp/tile_copy && /tmp/tile_copy
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CHECK(x)                                                                     \
  do {                                                                               \
    cudaError_t e_ = (x);                                                            \
    if (e_ != cudaSuccess) {                                                         \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)

namespace {

constexpr int kPiece = 64, kHalo = 3;

__device__ __forceinline__ void cp16(void* s, const void* g) {
  const auto a = static_cast<unsigned>(__cvta_generic_to_shared(s));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(a), "l"(g) : "memory");
}
__device__ __forceinline__ void commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wait_group() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// W: strip bytes; S: stages; kThreads: block size. Each warp stores rows of the piece, a lane W/32
// bytes of a row (4 bytes at W = 128, like the bf16 forward's pairs; 8 at 256, like f32's).
template <int W, int S, int kThreads>
__global__ __launch_bounds__(kThreads) void strip_copy(const unsigned char* x, unsigned char* y, std::int64_t rows,
                                                       std::int64_t row_bytes, std::int64_t run_rows, std::int64_t ctiles,
                                                       std::int64_t jobs) {
  extern __shared__ __align__(16) unsigned char sm[];
  constexpr int kTile = (kPiece + kHalo) * W;
  constexpr int kPerRow = W / 16, kRowStep = kThreads / kPerRow;
  constexpr int kWarps = kThreads / 32, kRowsPerWarp = kPiece / kWarps, kLaneBytes = W / 32;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (std::int64_t job = blockIdx.x; job < jobs; job += gridDim.x) {
    const std::int64_t c0 = (job % ctiles) * W;
    const std::int64_t r0 = (job / ctiles) * run_rows, r1 = std::min(rows, r0 + run_rows);
    const int pieces = static_cast<int>((r1 - r0 + kPiece - 1) / kPiece);
    auto load = [&](int piece) {
      unsigned char* t = sm + (piece % S) * kTile;
      const std::int64_t p0 = r0 + static_cast<std::int64_t>(piece) * kPiece - kHalo;
      const int n = static_cast<int>(std::min<std::int64_t>(kPiece, r1 - (p0 + kHalo))) + kHalo;
      for (int r = threadIdx.x / kPerRow; r < n; r += kRowStep) {
        const std::int64_t g = std::max<std::int64_t>(0, p0 + r);
        cp16(t + r * W + (threadIdx.x % kPerRow) * 16, x + g * row_bytes + c0 + (threadIdx.x % kPerRow) * 16);
      }
    };
#pragma unroll
    for (int st = 0; st < S - 1; ++st) {
      if (st < pieces) load(st);
      commit();
    }
    for (int it = 0; it < pieces; ++it) {
      if (it + S - 1 < pieces) load(it + S - 1);
      commit();
      wait_group<S - 1>();
      __syncthreads();
      const unsigned char* t = sm + (it % S) * kTile;
      const std::int64_t p0 = r0 + static_cast<std::int64_t>(it) * kPiece;
      const int n = static_cast<int>(std::min<std::int64_t>(kPiece, r1 - p0));
#pragma unroll 4
      for (int i = 0; i < kRowsPerWarp; ++i) {
        const int r = warp * kRowsPerWarp + i;
        if (r < n) {
          unsigned char* d = y + (p0 + r) * row_bytes + c0 + lane * kLaneBytes;
          const unsigned char* s = t + (r + kHalo) * W + lane * kLaneBytes;
          if constexpr (kLaneBytes == 4) *reinterpret_cast<unsigned*>(d) = *reinterpret_cast<const unsigned*>(s);
          if constexpr (kLaneBytes == 8) *reinterpret_cast<uint2*>(d) = *reinterpret_cast<const uint2*>(s);
          if constexpr (kLaneBytes == 16) *reinterpret_cast<uint4*>(d) = *reinterpret_cast<const uint4*>(s);
        }
      }
      __syncthreads();
    }
    wait_group<0>();
  }
}

struct Bufs {
  std::vector<unsigned char*> x, y;
};

template <class F>
float time_ms(F launch, int sets) {
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 2 * sets; ++i) launch(i % sets);
  CHECK(cudaDeviceSynchronize());
  std::vector<float> t;
  for (int rep = 0; rep < 7; ++rep) {
    constexpr int kCalls = 20;
    CHECK(cudaEventRecord(a));
    for (int i = 0; i < kCalls; ++i) launch(i % sets);
    CHECK(cudaEventRecord(b));
    CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms / kCalls);
  }
  std::sort(t.begin(), t.end());
  CHECK(cudaEventDestroy(a));
  CHECK(cudaEventDestroy(b));
  return t[t.size() / 2];
}

template <int W, int S, int kThreads>
void run(const char* name, const Bufs& bufs, int sets, std::int64_t rows, std::int64_t row_bytes, double floor_ms, int waves,
         int cap) {
  constexpr auto kernel = strip_copy<W, S, kThreads>;
  const int smem = S * (kPiece + kHalo) * W;
  CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  int per_sm = 0, sms = 0;
  CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem));
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  per_sm = std::min(per_sm, cap);  // the conv kernels' registers allow 4 blocks of 128 threads
  const std::int64_t resident = static_cast<std::int64_t>(per_sm) * sms;
  const std::int64_t ctiles = row_bytes / W, pieces = rows / kPiece;
  const std::int64_t runs_wanted = std::max<std::int64_t>(1, resident * waves / ctiles);
  const std::int64_t run_rows = ((pieces + runs_wanted - 1) / runs_wanted) * kPiece;
  const std::int64_t jobs = ((rows + run_rows - 1) / run_rows) * ctiles;
  const auto grid = static_cast<unsigned>(std::min(jobs, resident));
  const float ms = time_ms(
      [&](int s) { kernel<<<grid, kThreads, smem>>>(bufs.x[s], bufs.y[s], rows, row_bytes, run_rows, ctiles, jobs); }, sets);
  CHECK(cudaGetLastError());
  // Verify one set: y == x.
  std::vector<unsigned char> hx(rows * row_bytes), hy(rows * row_bytes);
  CHECK(cudaMemcpy(hx.data(), bufs.x[0], hx.size(), cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(hy.data(), bufs.y[0], hy.size(), cudaMemcpyDeviceToHost));
  const bool ok = hx == hy;
  std::printf("%-28s W=%3d S=%d threads=%3d blocks/SM=%d waves=%d run_rows=%5lld  %.4f ms  %.1f%% of copy  %s\n", name, W, S,
              kThreads, per_sm, waves, static_cast<long long>(run_rows), ms, 100.0 * floor_ms / ms, ok ? "ok" : "MISMATCH");
  CHECK(cudaMemset(bufs.y[0], 0, hy.size()));
}

}  // namespace

int main() {
  const std::int64_t rows = 4 * 4096, row_bytes = 4096 * 2;  // bf16 B=4 T=4096 C=4096: 134 MB in, 134 MB out
  const std::size_t bytes = rows * row_bytes;
  const int sets = 3;
  Bufs b;
  for (int s = 0; s < sets; ++s) {
    unsigned char *x, *y;
    CHECK(cudaMalloc(&x, bytes));
    CHECK(cudaMalloc(&y, bytes));
    std::vector<unsigned char> h(bytes);
    for (std::size_t i = 0; i < bytes; ++i) h[i] = static_cast<unsigned char>((i * 2654435761u) >> 13);
    CHECK(cudaMemcpy(x, h.data(), bytes, cudaMemcpyHostToDevice));
    b.x.push_back(x);
    b.y.push_back(y);
  }
  const float copy_ms = time_ms([&](int s) { CHECK(cudaMemcpyAsync(b.y[s], b.x[s], bytes, cudaMemcpyDeviceToDevice)); }, sets);
  std::printf("cudaMemcpy %zu bytes: %.4f ms = %.2f TB/s (read + write)\n", bytes, copy_ms, 2.0 * bytes / copy_ms / 1e9);
  for (int waves : {2, 1}) {
    run<128, 6, 128>("bf16-like strip", b, sets, rows, row_bytes, copy_ms, waves, 4);
    run<128, 4, 128>("bf16-like strip", b, sets, rows, row_bytes, copy_ms, waves, 4);
    run<128, 6, 128>("bf16-like strip, uncapped", b, sets, rows, row_bytes, copy_ms, waves, 64);
    run<256, 3, 128>("f32-like strip", b, sets, rows, row_bytes, copy_ms, waves, 4);
    run<256, 4, 256>("256B strip, 8 warps", b, sets, rows, row_bytes, copy_ms, waves, 2);
    run<256, 3, 256>("256B strip, 8 warps", b, sets, rows, row_bytes, copy_ms, waves, 2);
    run<512, 3, 256>("512B strip, 8 warps", b, sets, rows, row_bytes, copy_ms, waves, 2);
  }
  return 0;
}
