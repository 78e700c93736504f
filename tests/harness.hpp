// Test harness shared by the CPU and CUDA suites: random host data, device buffers with optional
// strided layouts and poison, and comparison against tests/reference.hpp with per-dtype tolerance.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "reference.hpp"
#include "shortconv/half.hpp"
#include "shortconv/shortconv.hpp"

namespace shortconv::test {

// ---- host encoding ------------------------------------------------------------------------

inline void encode(DType dtype, double v, void* dst, std::int64_t i) {
  switch (dtype) {
    case DType::f32: static_cast<float*>(dst)[i] = static_cast<float>(v); break;
    case DType::bf16: static_cast<std::uint16_t*>(dst)[i] = float_to_bf16(static_cast<float>(v)); break;
    case DType::f16: static_cast<std::uint16_t*>(dst)[i] = float_to_f16(static_cast<float>(v)); break;
  }
}

inline double decode(DType dtype, const void* src, std::int64_t i) {
  switch (dtype) {
    case DType::f32: return static_cast<const float*>(src)[i];
    case DType::bf16: return bf16_to_float(static_cast<const std::uint16_t*>(src)[i]);
    case DType::f16: return f16_to_float(static_cast<const std::uint16_t*>(src)[i]);
  }
  return 0.0;
}

/// A buffer on `device` holding a (possibly strided) view of logical shape `shape`. Storage is
/// `shape` with `pad` extra elements in the last dimension's stride and `offset` leading elements,
/// so views can be column slices and start unaligned. Storage starts poisoned (all bits set: NaN
/// in every dtype), so untouched or unwritten elements are detectable.
class Buffer {
 public:
  Buffer(DType dtype, std::vector<std::int64_t> shape, Device device, std::int64_t pad = 0, std::int64_t offset = 0)
      : dtype_(dtype), shape_(std::move(shape)), device_(device), offset_(offset) {
    const int rank = static_cast<int>(shape_.size());
    strides_.assign(rank, 1);
    std::int64_t stride = 1;
    for (int d = rank - 1; d >= 0; --d) {
      strides_[d] = stride;
      stride *= shape_[d] + (d == rank - 1 ? pad : 0);
    }
    storage_elems_ = offset_ + stride;
    storage_ = Tensor(dtype, {storage_elems_}, device);
    host_.assign(static_cast<std::size_t>(storage_elems_) * dtype_size(dtype), std::byte{0xff});
    upload();
  }

  TensorView view() const {
    return TensorView(static_cast<char*>(storage_.data()) + offset_ * static_cast<std::int64_t>(dtype_size(dtype_)), dtype_,
                      device_, std::span<const std::int64_t>(shape_), std::span<const std::int64_t>(strides_));
  }

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto s : shape_) n *= s;
    return n;
  }

  // Storage index of logical element `i` (row-major over shape).
  std::int64_t storage_index(std::int64_t i) const {
    std::int64_t idx = offset_;
    for (int d = static_cast<int>(shape_.size()) - 1; d >= 0; --d) {
      idx += (i % shape_[d]) * strides_[d];
      i /= shape_[d];
    }
    return idx;
  }

  /// Fills the logical elements with uniform values in [-1, 1], rounded to the dtype; returns the
  /// rounded values in fp64.
  std::vector<double> fill_random(std::mt19937_64& rng) {
    std::uniform_real_distribution<double> dist(-1.0, 1.0);
    std::vector<double> values(static_cast<std::size_t>(numel()));
    for (std::int64_t i = 0; i < numel(); ++i) {
      double v = dist(rng);
      if (v == 0.0) v = 0.5;
      encode(dtype_, v, host_.data(), storage_index(i));
      values[i] = decode(dtype_, host_.data(), storage_index(i));
    }
    upload();
    return values;
  }

  void upload() { storage_.copy_from_host(host_.data()); }

  /// Reads the device storage back; returns the logical elements as fp64.
  std::vector<double> download() {
    storage_.copy_to_host(host_.data());
    std::vector<double> values(static_cast<std::size_t>(numel()));
    for (std::int64_t i = 0; i < numel(); ++i) values[i] = decode(dtype_, host_.data(), storage_index(i));
    return values;
  }

  /// Raw bytes of the whole storage (after download()).
  const std::vector<std::byte>& host_bytes() const { return host_; }

  /// Number of storage elements outside the view that are no longer poisoned (after download()).
  std::int64_t touched_outside_view() const {
    std::vector<bool> inside(static_cast<std::size_t>(storage_elems_), false);
    for (std::int64_t i = 0; i < numel(); ++i) inside[storage_index(i)] = true;
    const std::size_t es = dtype_size(dtype_);
    std::int64_t touched = 0;
    for (std::int64_t e = 0; e < storage_elems_; ++e) {
      if (inside[e]) continue;
      for (std::size_t b = 0; b < es; ++b)
        if (host_[e * es + b] != std::byte{0xff}) {
          ++touched;
          break;
        }
    }
    return touched;
  }

  DType dtype() const { return dtype_; }

 private:
  DType dtype_;
  std::vector<std::int64_t> shape_, strides_;
  Device device_;
  std::int64_t offset_ = 0, storage_elems_ = 0;
  Tensor storage_;
  std::vector<std::byte> host_;
};

// ---- tolerance and comparison -------------------------------------------------------------

/// Relative tolerance for a result stored in `dtype`, applied to the sum of |terms|.
inline double rel_tolerance(DType dtype) {
  switch (dtype) {
    case DType::f32: return 2e-5;
    case DType::bf16: return 1.0 / 256 + 2e-5;   // 8-bit mantissa: half an ulp is 2^-9
    case DType::f16: return 1.0 / 1024 + 2e-5;   // 11-bit mantissa
  }
  return 0.0;
}

struct Comparison {
  std::string name;
  double worst = 0.0;  // max |a - r| / tol
  std::int64_t worst_index = -1;
  double got = 0.0, want = 0.0;
  bool ok() const { return worst <= 1.0; }
  std::string str() const {
    std::ostringstream os;
    os << name << ": worst error " << worst << " x tolerance at index " << worst_index << " (got " << got << ", want "
       << want << ")";
    return os.str();
  }
};

inline Comparison compare(const std::string& name, const std::vector<double>& got, const RefResult& ref, DType dtype) {
  Comparison c{name};
  const double rtol = rel_tolerance(dtype), atol = 1e-6;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double tol = atol + rtol * ref.abs_sum[i];
    const double err = std::fabs(got[i] - ref.value[i]);
    const double ratio = std::isfinite(got[i]) ? err / tol : std::numeric_limits<double>::infinity();
    if (ratio > c.worst || c.worst_index < 0) {
      c.worst = ratio;
      c.worst_index = static_cast<std::int64_t>(i);
      c.got = got[i];
      c.want = ref.value[i];
    }
  }
  return c;
}

// ---- one forward + backward problem -------------------------------------------------------

struct Problem {
  std::int64_t B = 1, T = 1, C = 1, K = 1;
  DType dtype = DType::f32;
  DType wdtype = DType::f32;
  bool bias = true;
  bool strided = false;  // x, dy: column slices of a [B, T, 3C] buffer; y, dx: unaligned slices
  // x, dy: 16-byte aligned column slices of a [B, T, 3Cp] buffer, y, dx: rows padded to Cp, with
  // Cp = C rounded up to 8 elements: token strides > C that the CUDA tiled kernels take (their
  // 16-byte copies then end inside a row when C is not a multiple of 8). Ignored with `strided`.
  bool padded = false;

  std::string name() const {
    std::ostringstream os;
    os << "B" << B << "_T" << T << "_C" << C << "_K" << K << "_" << dtype_name(dtype) << "_w" << dtype_name(wdtype)
       << (bias ? "_bias" : "") << (strided ? "_strided" : padded ? "_padded" : "");
    return os.str();
  }
};

struct ProblemResult {
  std::vector<Comparison> comparisons;
  std::int64_t touched_outside = 0;  // poisoned gap elements that were written
  std::vector<std::vector<std::byte>> raw;  // y, dx, dw, db storage bytes, for bitwise checks
};

/// Runs forward and backward of `p` on `device` with fresh random inputs from `seed` and
/// compares every output with the fp64 reference.
inline ProblemResult run_problem(const Problem& p, Device device, std::uint64_t seed,
                                 Variant variant = Variant::fast) {
  std::mt19937_64 rng(seed);
  const std::int64_t Cp = (p.C + 7) / 8 * 8;
  const bool padded = p.padded && !p.strided;
  const std::int64_t pad = p.strided ? 2 * p.C : padded ? 3 * Cp - p.C : 0;
  Buffer x(p.dtype, {p.B, p.T, p.C}, device, pad, p.strided ? p.C : padded ? Cp : 0);
  Buffer dy(p.dtype, {p.B, p.T, p.C}, device, pad, p.strided ? 2 * p.C : padded ? 2 * Cp : 0);
  Buffer y(p.dtype, {p.B, p.T, p.C}, device, p.strided ? 3 : padded ? Cp - p.C : 0, p.strided ? 1 : 0);
  Buffer dx(p.dtype, {p.B, p.T, p.C}, device, p.strided ? 5 : padded ? Cp - p.C : 0, p.strided ? 3 : 0);
  Buffer w(p.wdtype, {p.C, p.K}, device);
  Buffer bias(p.wdtype, {p.C}, device);
  Buffer dw(p.wdtype, {p.C, p.K}, device);
  Buffer db(p.wdtype, {p.C}, device);
  const auto xv = x.fill_random(rng);
  const auto dyv = dy.fill_random(rng);
  const auto wv = w.fill_random(rng);
  const auto bv = bias.fill_random(rng);

  Conv1dForwardArgs fwd{.x = x.view(), .weight = w.view(), .bias = std::nullopt, .y = y.view(), .variant = variant};
  if (p.bias) fwd.bias = bias.view();
  conv1d_forward(fwd);
  conv1d_backward({.x = x.view(), .weight = w.view(), .dy = dy.view(), .dx = dx.view(), .dweight = dw.view(),
                   .dbias = db.view(), .variant = variant});
  if (device.is_cuda()) synchronize(default_stream(device));

  const RefShape s{p.B, p.T, p.C, p.K};
  ProblemResult r;
  r.comparisons.push_back(compare("y", y.download(), ref_forward(s, xv, wv, p.bias ? &bv : nullptr), p.dtype));
  r.comparisons.push_back(compare("dx", dx.download(), ref_dx(s, wv, dyv), p.dtype));
  r.comparisons.push_back(compare("dweight", dw.download(), ref_dw(s, xv, dyv), p.wdtype));
  r.comparisons.push_back(compare("dbias", db.download(), ref_dbias(s, dyv), p.wdtype));
  r.touched_outside = y.touched_outside_view() + dx.touched_outside_view();
  r.raw = {y.host_bytes(), dx.host_bytes(), dw.host_bytes(), db.host_bytes()};
  return r;
}

inline void expect_problem_ok(const Problem& p, Device device, std::uint64_t seed, Variant variant = Variant::fast) {
  const ProblemResult r = run_problem(p, device, seed, variant);
  for (const Comparison& c : r.comparisons) EXPECT_TRUE(c.ok()) << p.name() << " on " << device.str() << ": " << c.str();
  EXPECT_EQ(r.touched_outside, 0) << p.name() << ": wrote outside the output views";
}

/// The sweep every backend runs: widths, edge lengths, channel counts, batches, dtypes, strides.
inline std::vector<Problem> sweep_problems() {
  std::vector<Problem> out;
  const std::int64_t widths[] = {1, 2, 3, 4, 5, 7, 8, 16, 33};
  const std::int64_t channels[] = {1, 3, 8, 33};
  struct DT {
    DType x, w;
  };
  const DT dtypes[] = {{DType::f32, DType::f32}, {DType::bf16, DType::bf16}, {DType::f16, DType::f16}, {DType::bf16, DType::f32}};
  int n = 0;
  for (std::int64_t K : widths) {
    std::vector<std::int64_t> lengths = {1, 2, K - 1, K, K + 1, 37, 1031};
    std::sort(lengths.begin(), lengths.end());
    lengths.erase(std::unique(lengths.begin(), lengths.end()), lengths.end());
    for (std::int64_t T : lengths) {
      if (T < 1) continue;
      for (std::int64_t C : channels)
        for (std::int64_t B : {1, 3})
          for (const DT& dt : dtypes) {
            ++n;
            out.push_back({B, T, C, K, dt.x, dt.w, n % 3 != 0, B == 3});
          }
    }
  }
  // Wide channel counts, cheap lengths (the fp64 reference for dweight is O(B*T*C*K)).
  for (std::int64_t K : {1, 3, 4, 8, 16, 33})
    for (std::int64_t T : {std::int64_t{1}, K + 1, std::int64_t{37}})
      for (const DT& dt : dtypes) out.push_back({2, T, 4096, K, dt.x, dt.w, true, K % 2 == 1});
  out.push_back({3, 1031, 4096, 4, DType::f32, DType::f32, true, true});
  out.push_back({1, 1031, 4096, 4, DType::bf16, DType::bf16, true, false});
  // Padded rows and aligned column slices: C a multiple of 8, and not.
  for (std::int64_t K : {1, 4, 5, 16, 33})
    for (std::int64_t C : {33, 136})
      for (const DT& dt : dtypes) {
        Problem p{2, 71, C, K, dt.x, dt.w, K % 2 == 0, false};
        p.padded = true;
        out.push_back(p);
      }
  return out;
}

inline std::string problem_name(const testing::TestParamInfo<Problem>& info) { return info.param.name(); }

}  // namespace shortconv::test
