// Regression tests for inputs found by the fuzzer (tests/fuzz). Each test names the crash input
// kept in tests/fuzz/corpus/; replay one with `tests/fuzz/run_fuzz.sh 0 tests/fuzz/corpus/<file>`.
// Some failures show only under UBSan (the build-asan stage of .ci/run): signed overflow is
// undefined behaviour that a plain build silently wraps.
#include <cstring>

#include "harness.hpp"

namespace shortconv::test {
namespace {

// crash-numel-overflow: views with stride 0 on B and T span one row of memory, so the byte-size
// check passed, but B * T * C is past int64. The front end's aliasing check called
// TensorView::numel(), whose signed product overflowed (UBSan); an output whose count wrapped to 0
// was taken as empty and skipped; and a backward call with only dweight or dbias reached the
// kernel, whose row count B * T wrapped to 0 for B = 2^31, T = 2^33: nothing was summed and dbias
// came back 0 instead of an error. TensorView::is_contiguous(), which every error message calls,
// overflows the same way on a row-major view of that size (UBSan only).
TEST(FuzzRegression, ElementCountPastInt64IsRejected) {
  const std::int64_t big_b = std::int64_t{1} << 31, big_t = std::int64_t{1} << 33, C = 4, K = 3;
  std::vector<float> x(C, 0.5f), dy(C, 1.0f), w(C * K, 0.25f), y(C, 7.0f), db(C, 7.0f), dw(C * K, 7.0f);
  const TensorView xv(x.data(), DType::f32, Device::cpu(), {big_b, big_t, C}, {0, 0, 1});
  const TensorView dyv(dy.data(), DType::f32, Device::cpu(), {big_b, big_t, C}, {0, 0, 1});
  const TensorView wv(w.data(), DType::f32, Device::cpu(), {C, K});

  // Describing such views must not overflow either: every error message prints its arguments.
  // TensorView::is_contiguous() multiplied the sizes of a row-major view without an overflow check.
  EXPECT_FALSE(xv.str().empty());
  const TensorView row_major(x.data(), DType::f32, Device::cpu(), {big_b, big_t, C}, {big_t * C, C, 1});
  EXPECT_NE(row_major.str().find("[2147483648, 8589934592, 4]"), std::string::npos) << row_major.str();

  // Forward: y cannot be that large without overlapping itself; the call must still fail cleanly.
  const TensorView yv(y.data(), DType::f32, Device::cpu(), {big_b, big_t, C}, {0, 0, 1});
  EXPECT_THROW(conv1d_forward(xv, wv, nullptr, yv), InvalidArgument);

  // Backward with only the reductions requested: no output is as large as x, so only an element
  // count check can stop it.
  const TensorView dbv(db.data(), DType::f32, Device::cpu(), {C});
  const TensorView dwv(dw.data(), DType::f32, Device::cpu(), {C, K});
  try {
    conv1d_backward({.x = xv, .weight = wv, .dy = dyv, .dbias = dbv});
    ADD_FAILURE() << "no exception";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("x has more elements than int64 indexing allows"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(conv1d_backward({.x = xv, .weight = wv, .dy = dyv, .dweight = dwv}), InvalidArgument);
  for (float v : db) EXPECT_EQ(v, 7.0f) << "a rejected call wrote dbias";
  for (float v : dw) EXPECT_EQ(v, 7.0f) << "a rejected call wrote dweight";
}

}  // namespace
}  // namespace shortconv::test
