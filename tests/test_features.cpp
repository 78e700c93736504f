// Sequence-model features on the CPU backend: the per-sequence fp64 reference over a sweep, and
// the invariants (chunking, decode, varlen, determinism).
#include "features_tests.hpp"

namespace shortconv::test {
namespace {

class CpuFeatures : public testing::TestWithParam<FeatureProblem> {};

TEST_P(CpuFeatures, MatchReference) { expect_feature_ok(GetParam(), Device::cpu(), 77 + GetParam().K); }

INSTANTIATE_TEST_SUITE_P(Cpu, CpuFeatures, testing::ValuesIn(feature_problems({1, 2, 3, 4, 5, 8, 16, 33})), feature_name);

TEST(CpuInvariants, ChunkedAndDecodeMatchFullForward) {
  for (DType d : {DType::f32, DType::bf16, DType::f16})
    for (std::int64_t K : {2, 4, 5, 9})
      for (bool silu : {false, true}) check_chunked_and_decode_match_full(Device::cpu(), d, K, silu);
}

TEST(CpuInvariants, ChunkedGradientsMatchOneShot) {
  for (DType d : {DType::f32, DType::bf16})
    for (std::int64_t K : {2, 4, 7})
      for (bool silu : {false, true}) check_chunked_gradients_match(Device::cpu(), d, K, silu);
}

TEST(CpuInvariants, VarlenMatchesSeparateCalls) {
  for (DType d : {DType::f32, DType::f16})
    for (std::int64_t K : {1, 3, 4, 6}) check_varlen_matches_separate_calls(Device::cpu(), d, K);
}

TEST(CpuInvariants, FeaturesDeterministic) { check_features_deterministic(Device::cpu()); }

TEST(CpuDecode, StateIndicesAndPadding) {
  for (DType d : {DType::f32, DType::bf16})
    for (std::int64_t K : {2, 4, 7})
      for (std::int64_t tn : {1, 3}) check_decode_with_indices(Device::cpu(), d, K, tn);
}

}  // namespace
}  // namespace shortconv::test
