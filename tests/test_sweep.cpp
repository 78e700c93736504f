// Forward and backward of every backend against the fp64 reference over the sweep in harness.hpp.
#include <omp.h>

#include "harness.hpp"

namespace shortconv::test {
namespace {

class CpuSweep : public testing::TestWithParam<Problem> {};

TEST_P(CpuSweep, MatchesReference) { expect_problem_ok(GetParam(), Device::cpu(), 1234 + GetParam().T * 7 + GetParam().K); }

INSTANTIATE_TEST_SUITE_P(Cpu, CpuSweep, testing::ValuesIn(sweep_problems()), problem_name);

// The naive variant is the benchmark baseline; it must compute the same function.
TEST(CpuNaive, MatchesReference) {
  for (const Problem& p : {Problem{2, 37, 33, 4, DType::f32, DType::f32, true, true},
                           Problem{3, 5, 8, 7, DType::bf16, DType::f32, true, false},
                           Problem{1, 3, 3, 5, DType::f16, DType::f16, false, true}})
    expect_problem_ok(p, Device::cpu(), 99, Variant::naive);
}

// Bitwise: two runs, and 1 thread against 2 (the chunking depends on the shape alone).
TEST(CpuDeterminism, BitwiseAcrossRunsAndThreadCounts) {
  const Problem p{3, 1031, 96, 4, DType::f32, DType::f32, true, true};
  const int saved = omp_get_max_threads();
  omp_set_num_threads(2);
  const ProblemResult a = run_problem(p, Device::cpu(), 7);
  const ProblemResult b = run_problem(p, Device::cpu(), 7);
  omp_set_num_threads(1);
  const ProblemResult c = run_problem(p, Device::cpu(), 7);
  omp_set_num_threads(saved);
  ASSERT_EQ(a.raw.size(), 4u);
  for (std::size_t i = 0; i < a.raw.size(); ++i) {
    EXPECT_EQ(a.raw[i], b.raw[i]) << "output " << i << " differs between two runs";
    EXPECT_EQ(a.raw[i], c.raw[i]) << "output " << i << " differs between 2 threads and 1";
  }
  for (const Comparison& cmp : a.comparisons) EXPECT_TRUE(cmp.ok()) << cmp.str();
}

}  // namespace
}  // namespace shortconv::test
