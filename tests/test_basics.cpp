// Tensors, views and the 16-bit conversions the host side relies on.
#include <cmath>

#include "harness.hpp"

namespace shortconv::test {
namespace {

TEST(Half, Bf16RoundTripAndRounding) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_float(0x3f80), 1.0f);
  EXPECT_EQ(float_to_bf16(-2.5f), 0xc020);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even gives 1.
  EXPECT_EQ(float_to_bf16(1.0f + 1.0f / 256), 0x3f80);
  EXPECT_EQ(float_to_bf16(1.0f + 3.0f / 256), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  EXPECT_EQ(bf16_to_float(float_to_bf16(INFINITY)), INFINITY);
}

TEST(Half, F16RoundTripAndRounding) {
  EXPECT_EQ(float_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(float_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(float_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_f16(65520.0f), 0x7c00);       // rounds to infinity
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -26)), 0x0000);  // below half of it
  EXPECT_EQ(f16_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_float(0x3555), 0.333251953125f);
  EXPECT_TRUE(std::isnan(f16_to_float(float_to_f16(NAN))));
  // Every f16 value survives f16 -> f32 -> f16.
  for (std::uint32_t bits = 0; bits < 0x10000; ++bits) {
    const auto h = static_cast<std::uint16_t>(bits);
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0) continue;  // NaN payloads
    ASSERT_EQ(float_to_f16(f16_to_float(h)), h) << std::hex << bits;
  }
}

TEST(TensorView, ContiguousStridesNarrowAndStr) {
  float data[24];
  const TensorView v(data, DType::f32, Device::cpu(), {2, 3, 4});
  EXPECT_EQ(v.stride(0), 12);
  EXPECT_EQ(v.stride(1), 4);
  EXPECT_EQ(v.stride(2), 1);
  EXPECT_TRUE(v.is_contiguous());
  EXPECT_EQ(v.numel(), 24);
  const TensorView n = v.narrow(2, 1, 2);
  EXPECT_EQ(n.data(), data + 1);
  EXPECT_EQ(n.size(2), 2);
  EXPECT_FALSE(n.is_contiguous());
  EXPECT_EQ(n.str(), "[2, 3, 2] f32 cpu strides (12, 4, 1)");
  EXPECT_THROW(v.narrow(2, 3, 2), InvalidArgument);
  EXPECT_THROW(v.size(3), InvalidArgument);
}

TEST(Tensor, OwnsCopiesAndMoves) {
  Tensor t(DType::bf16, {3, 5});
  EXPECT_EQ(t.nbytes(), 30u);
  std::vector<std::uint16_t> src(15), dst(15);
  for (int i = 0; i < 15; ++i) src[i] = static_cast<std::uint16_t>(i * 77);
  t.copy_from_host(src.data());
  Tensor moved = std::move(t);
  EXPECT_EQ(t.data(), nullptr);
  moved.copy_to_host(dst.data());
  EXPECT_EQ(src, dst);
  EXPECT_THROW(Tensor(DType::f32, {-1}), InvalidArgument);
}

TEST(Device, DefaultFollowsAvailability) {
  EXPECT_EQ(default_device(), cuda_available() ? Device::cuda(0) : Device::cpu());
  if (!built_with_cuda()) EXPECT_FALSE(cuda_available());
  EXPECT_EQ(Device::cuda(2).str(), "cuda:2");
}

}  // namespace
}  // namespace shortconv::test
