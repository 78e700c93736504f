// A separate project linked against the installed shortconv: one forward call, checked by hand.
#include <shortconv/shortconv.hpp>

#include <cmath>
#include <cstdio>

int main() {
  float x[1 * 4 * 2] = {1, 2, 3, 4, 5, 6, 7, 8};  // [B=1, T=4, C=2]
  float w[2 * 2] = {0.5f, 1.0f, -1.0f, 2.0f};      // [C=2, K=2]
  float y[8] = {};
  using shortconv::DType;
  const auto cpu = shortconv::Device::cpu();
  shortconv::conv1d_forward({x, DType::f32, cpu, {1, 4, 2}}, {w, DType::f32, cpu, {2, 2}}, nullptr,
                            {y, DType::f32, cpu, {1, 4, 2}});
  // y[t,c] = w[c,0] x[t-1,c] + w[c,1] x[t,c]
  const float want[8] = {1, 4, 3.5f, 6, 6.5f, 8, 9.5f, 10};
  for (int i = 0; i < 8; ++i)
    if (std::fabs(y[i] - want[i]) > 1e-6f) {
      std::printf("consumer: y[%d] = %g, want %g\n", i, y[i], want[i]);
      return 1;
    }
  std::printf("consumer: OK\n");
  return 0;
}
