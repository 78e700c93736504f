// The autograd tape on CUDA against the CPU tape (tests/test_autograd.cpp checks the CPU against
// finite differences). Skips without a GPU.
//
// Tolerances: both sides are f32 with FP32 GEMMs (cuBLAS default math, no TF32) but sum in
// different orders (cuBLAS vs OpenBLAS blocking, tree vs chunked reductions), so elements differ
// by a few ulps of the largest partial sums: |Δ| ≲ k·2⁻²⁴·Σ|terms| with k ≤ a few hundred here.
// Each tensor is compared with atol = 1e-5·max|ref| + 1e-7 and rtol = 1e-4, ~10x above that.
#include "autograd_common.hpp"

#if SHORTCONV_TEST_HAVE_CUDART
#include <cuda_runtime_api.h>
#endif

namespace shortconv::test {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device"

// The block with its weights as parameters on `device`; x and the target are fixed inputs.
struct Block {
  BlockData d;
  std::vector<ag::Parameter> params;
  ag::Tape tape;

  Block(Device device, Stream stream = {}) : d(3, 97, 40, 72, 4, 1234), tape(device, stream) {
    const auto shapes = d.shapes();
    const auto values = d.values();
    for (std::size_t i = 1; i < 9; ++i) {
      params.emplace_back("p" + std::to_string(i), shapes[i], device);
      params.back().copy_from_host(*values[i]);
    }
  }

  struct Out {
    ag::Var out, loss, x;
  };
  Out record() {
    const auto shapes = d.shapes();
    std::vector<ag::Var> v{tape.input(shapes[0], d.x, true)};
    for (auto& p : params) v.push_back(tape.param(p));
    v.push_back(tape.input(shapes[9], d.target));
    const ag::Var out = block_output(v);
    return {out, ag::mse_loss(out, v[9]), v[0]};
  }

  // Forward + backward; returns out, loss, dx and every parameter gradient on the host.
  std::vector<std::vector<float>> run() {
    const Out o = record();
    tape.backward(o.loss);
    std::vector<std::vector<float>> r{o.out.to_host(), o.loss.to_host(), o.x.grad_to_host()};
    for (auto& p : params) r.push_back(p.grad_to_host());
    tape.reset();
    return r;
  }
};

void expect_close(const std::vector<std::vector<float>>& gpu, const std::vector<std::vector<float>>& cpu, const char* what) {
  ASSERT_EQ(gpu.size(), cpu.size());
  for (std::size_t i = 0; i < gpu.size(); ++i) {
    const Worst w = compare(gpu[i], cpu[i], 1e-5 * max_abs(cpu[i]) + 1e-7, 1e-4);
    EXPECT_LE(w.ratio, 1.0) << what << " tensor " << i << ": cuda vs cpu " << w.str();
  }
}

TEST(AutogradCuda, BlockMatchesCpu) {
  SKIP_WITHOUT_GPU();
  Block gpu(Device::cuda(0)), cpu(Device::cpu());
  expect_close(gpu.run(), cpu.run(), "out, loss, dx, parameter grads");
}

TEST(AutogradCuda, OptimizersMatchCpu) {
  SKIP_WITHOUT_GPU();
  for (int which = 0; which < 2; ++which) {
    std::vector<std::vector<float>> result[2];
    for (int dev = 0; dev < 2; ++dev) {
      Block b(dev == 0 ? Device::cuda(0) : Device::cpu());
      std::vector<ag::Parameter*> ptrs;
      for (auto& p : b.params) ptrs.push_back(&p);
      // eps 1e-3, not 1e-8: Adam divides by sqrt(v) ≈ |g|, so a gradient element within rounding of 0
      // (where CPU and GPU may even disagree in sign) would otherwise move by up to ±lr on one side.
      ag::AdamW adamw(ptrs, {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.99f, .eps = 1e-3f, .weight_decay = 0.1f}, b.tape.stream());
      ag::SGD sgd(ptrs, {.lr = 1e-2f, .momentum = 0.9f, .weight_decay = 0.01f}, b.tape.stream());
      for (int step = 0; step < 3; ++step) {
        b.run();
        if (which == 0) {
          adamw.step();
        } else {
          sgd.step();
        }
      }
      for (auto& p : b.params) result[dev].push_back(p.to_host());
    }
    expect_close(result[0], result[1], which == 0 ? "AdamW, 3 steps" : "SGD momentum, 3 steps");
  }
}

TEST(AutogradCuda, RandnMatchesCpu) {
  SKIP_WITHOUT_GPU();
  ag::Tape gpu(Device::cuda(0)), cpu;
  const std::vector<float> a = gpu.randn({3, 1000, 17}, 42, 0.5f).to_host(), b = cpu.randn({3, 1000, 17}, 42, 0.5f).to_host();
  const Worst w = compare(a, b, 1e-6, 1e-5);  // logf / cosf / sqrtf differ by an ulp or two
  EXPECT_LE(w.ratio, 1.0) << w.str();
}

TEST(AutogradCuda, NoDeviceAllocationAfterWarmUp) {
  SKIP_WITHOUT_GPU();
  Block b(Device::cuda(0));
  b.run();
  const ag::AllocatorStats warm = b.tape.allocator_stats();
  for (int i = 0; i < 4; ++i) b.run();
  const ag::AllocatorStats after = b.tape.allocator_stats();
  EXPECT_EQ(after.device_allocations, warm.device_allocations);
  EXPECT_EQ(after.bytes_in_use, 0);
  b.tape.release_cached();
  EXPECT_EQ(b.tape.allocator_stats().bytes_reserved, 0);
}

TEST(AutogradCuda, ProfileRecordsEventTimes) {
  SKIP_WITHOUT_GPU();
  ag::Tape tape(Device::cuda(0), {}, {.profile = true, .tf32 = false});
  ag::Parameter w("w", {256, 128}, Device::cuda(0));
  tape.backward(ag::sum(ag::linear(tape.randn({64, 128}, 1), tape.param(w))));
  tape.reset();
  bool found = false;
  for (const ag::OpTiming& t : tape.profile())
    if (t.op == "linear" && t.phase == "forward") {
      found = true;
      EXPECT_EQ(t.calls, 1);
      EXPECT_GT(t.ms, 0.0);
    }
  EXPECT_TRUE(found);
}

#if SHORTCONV_TEST_HAVE_CUDART
// backward() must not synchronise or copy to the host: stream capture fails on either. The
// captured graph, launched, must give the gradients of an eager backward.
TEST(AutogradCuda, BackwardCapturesIntoACudaGraph) {
  SKIP_WITHOUT_GPU();
  OwnedStream stream(Device::cuda(0));
  Block b(Device::cuda(0), stream);
  const std::vector<std::vector<float>> eager = b.run();  // also warms the allocator and cuBLAS
  const Block::Out o = b.record();                          // forward runs eagerly
  const auto s = static_cast<cudaStream_t>(stream.get().handle);
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  std::string error;
  try {
    b.tape.backward(o.loss);
  } catch (const std::exception& e) {
    error = e.what();
  }
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(s, &graph);
  ASSERT_TRUE(error.empty()) << "backward failed under stream capture: " << error;
  ASSERT_EQ(end, cudaSuccess) << "capture invalidated: " << cudaGetErrorString(end);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  std::vector<std::vector<float>> replay{o.out.to_host(), o.loss.to_host(), o.x.grad_to_host()};
  for (auto& p : b.params) replay.push_back(p.grad_to_host());
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  b.tape.reset();
  expect_close(replay, eager, "graph-replayed backward vs eager");
}
#endif

}  // namespace
}  // namespace shortconv::test
