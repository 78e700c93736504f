// `shortconv check`: runs conv1d_forward and conv1d_backward on a device and compares every output
// with the fp64 reference of reference_check.hpp, computed from the same rounded inputs.
//
// Inputs are uniform in [-1, 1] from a seeded mt19937_64 (redrawn when they round to zero), one
// generator per dtype with the same seed, so every dtype sees the same values before rounding.
// Outputs are filled with all-ones bytes (a NaN in f32, bf16 and f16) before the run, so an element
// the kernel never writes fails the comparison.
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "common.hpp"
#include "reference_check.hpp"

namespace shortconv::tool {
namespace {

// Per-element tolerance of one dtype (outputs of [B, T, C]); reductions over B*T scale atol.
Tolerance base_tolerance(DType dtype) {
  switch (dtype) {
    case DType::f32: return {1e-5, 1e-4};
    case DType::bf16: return {1e-2, 2e-2};
    case DType::f16: return {2e-3, 5e-3};
  }
  throw Unsupported("check: unknown dtype");
}

// A host tensor: the bits handed to the device and their exact values in double.
struct HostTensor {
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  std::vector<unsigned char> bytes;
  std::vector<double> values;
};

std::int64_t numel(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (std::int64_t s : shape) n *= s;
  return n;
}

HostTensor random_tensor(DType dtype, std::vector<std::int64_t> shape, std::mt19937_64& gen) {
  HostTensor t{dtype, std::move(shape), {}, {}};
  const std::int64_t n = numel(t.shape);
  t.bytes.resize(static_cast<std::size_t>(n) * dtype_size(dtype));
  t.values.resize(static_cast<std::size_t>(n));
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (std::int64_t i = 0; i < n; ++i) {
    float v = 0.0f;
    while (round_to(dtype, v) == 0.0f) v = uniform(gen);  // never zero: a zero hides missed terms
    store_host(t.bytes.data(), dtype, i, v);
    t.values[i] = load_host(t.bytes.data(), dtype, i);
  }
  return t;
}

Tensor upload(const HostTensor& host, Device device) {
  Tensor t(host.dtype, std::span<const std::int64_t>(host.shape), device);
  t.copy_from_host(host.bytes.data());
  return t;
}

// An output tensor whose every element is a NaN.
Tensor poisoned(DType dtype, const std::vector<std::int64_t>& shape, Device device) {
  Tensor t(dtype, std::span<const std::int64_t>(shape), device);
  const std::vector<unsigned char> nan_bytes(t.nbytes(), 0xff);  // all-ones: NaN in every format
  t.copy_from_host(nan_bytes.data());
  return t;
}

std::vector<double> download(const Tensor& t) {
  std::vector<unsigned char> bytes(t.nbytes());
  t.copy_to_host(bytes.data());
  std::vector<double> values(static_cast<std::size_t>(t.numel()));
  for (std::int64_t i = 0; i < t.numel(); ++i) values[i] = load_host(bytes.data(), t.dtype(), i);
  return values;
}

// Multi-index "[b, t, c]" of flat row-major index `flat`.
std::string index_str(std::int64_t flat, std::span<const std::int64_t> shape) {
  std::vector<std::int64_t> idx(shape.size());
  for (std::size_t d = shape.size(); d-- > 0;) {
    idx[d] = flat % shape[d];
    flat /= shape[d];
  }
  return shape_str(idx);
}

// Compares one output, prints its row and returns whether it passed.
bool report(const char* name, const Tensor& out, const std::vector<double>& want, Tolerance tol) {
  const Comparison cmp = compare(download(out), want, tol);
  const std::string shape = shape_str(out.view().shape());
  const std::string at = index_str(cmp.index, out.view().shape());
  std::printf("  %-8s %-16s %10.3g  %-16s %15.8g %15.8g %10.2e  %s\n", name, shape.c_str(), cmp.worst, at.c_str(),
              cmp.got, cmp.want, std::abs(cmp.got - cmp.want), cmp.pass() ? "PASS" : "FAIL");
  return cmp.pass();
}

// Runs and checks all four outputs for one dtype; returns the number that passed.
int check_dtype(Device device, DType dtype, const CheckOptions& o) {
  const RefShape s{o.batch, o.seqlen, o.channels, o.width};
  const std::vector<std::int64_t> act{s.batch, s.seqlen, s.channels}, wshape{s.channels, s.width},
      bshape{s.channels};
  const DType wdtype = dtype;  // weights in the activation dtype

  std::mt19937_64 gen(o.seed);
  const HostTensor x = random_tensor(dtype, act, gen);
  const HostTensor w = random_tensor(wdtype, wshape, gen);
  const HostTensor bias = random_tensor(wdtype, bshape, gen);
  const HostTensor dy = random_tensor(dtype, act, gen);

  const Tensor x_dev = upload(x, device), w_dev = upload(w, device), b_dev = upload(bias, device),
               dy_dev = upload(dy, device);
  const Tensor y = poisoned(dtype, act, device), dx = poisoned(dtype, act, device),
               dw = poisoned(wdtype, wshape, device), db = poisoned(wdtype, bshape, device);

  const Stream stream = default_stream(device);
  conv1d_forward({.x = x_dev, .weight = w_dev, .bias = b_dev.view(), .y = y}, stream);
  conv1d_backward({.x = x_dev, .weight = w_dev, .dy = dy_dev, .dx = dx.view(), .dweight = dw.view(),
                   .dbias = db.view()},
                  stream);
  synchronize(stream);

  std::vector<double> y_ref, dx_ref, dw_ref, db_ref;
  reference_forward(s, x.values, w.values, bias.values, y_ref);
  reference_backward(s, x.values, w.values, dy.values, dx_ref, dw_ref, db_ref);

  const Tolerance tol = base_tolerance(dtype);
  // dweight and dbias sum B*T terms: rounding grows like sqrt(B*T), so atol does too.
  const double scale = std::sqrt(static_cast<double>(s.batch * s.seqlen));
  const Tolerance reduced{tol.atol * scale, tol.rtol};

  std::printf("%s (weight %s): atol %g rtol %g; dweight/dbias atol %g (x sqrt(B*T) = %.4g)\n",
              std::string(dtype_name(dtype)).c_str(), std::string(dtype_name(wdtype)).c_str(), tol.atol, tol.rtol,
              reduced.atol, scale);
  std::printf("  %-8s %-16s %10s  %-16s %15s %15s %10s  %s\n", "output", "shape", "worst/tol", "at", "got",
              "reference", "|a-r|", "result");
  int passed = 0;
  passed += report("y", y, y_ref, tol);
  passed += report("dx", dx, dx_ref, tol);
  passed += report("dweight", dw, dw_ref, reduced);
  passed += report("dbias", db, db_ref, reduced);
  return passed;
}

}  // namespace

int run_check(const CheckOptions& o) {
  const Device device = resolve_device(o.device);
  check_shape_size("check", o.batch, o.seqlen, o.channels, o.width);
  std::vector<DType> dtypes;
  if (o.dtype == "all") {
    dtypes = {DType::f32, DType::bf16, DType::f16};
  } else {
    dtypes = {parse_dtype(o.dtype)};
  }

  std::printf("shortconv check: device %s, B=%lld T=%lld C=%lld K=%lld, seed %llu\n", describe_device(device).c_str(),
              static_cast<long long>(o.batch), static_cast<long long>(o.seqlen), static_cast<long long>(o.channels),
              static_cast<long long>(o.width), static_cast<unsigned long long>(o.seed));
  int passed = 0, total = 0;
  for (DType dtype : dtypes) {
    passed += check_dtype(device, dtype, o);
    total += 4;
  }
  const bool ok = passed == total;
  std::printf("overall: %s (%d of %d outputs within tolerance)\n", ok ? "PASS" : "FAIL", passed, total);
  std::fflush(stdout);
  return ok ? 0 : 1;
}

}  // namespace shortconv::tool
