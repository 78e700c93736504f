// Bad input: each kind throws the documented error type with the op and shapes in the message,
// and leaves every output byte untouched.
#include <cstring>
#include <functional>

#include "harness.hpp"
#include "registry.hpp"  // internal: the test checks lookups directly

namespace shortconv::test {
namespace {

constexpr std::int64_t B = 2, T = 5, C = 6, K = 3;

// Host buffers for one call; outputs start as a byte pattern that must survive a rejected call.
struct Fixture {
  std::vector<float> x = std::vector<float>(B * T * C, 0.25f), dy = std::vector<float>(B * T * C, -0.5f);
  std::vector<float> w = std::vector<float>(C * K, 0.5f), bias = std::vector<float>(C, 1.0f);
  std::vector<float> y = std::vector<float>(B * T * C), dx = std::vector<float>(B * T * C);
  std::vector<float> dw = std::vector<float>(C * K), db = std::vector<float>(C);

  Fixture() {
    for (auto* v : {&y, &dx, &dw, &db}) std::memset(v->data(), 0x5a, v->size() * sizeof(float));
  }
  TensorView xv() { return {x.data(), DType::f32, Device::cpu(), {B, T, C}}; }
  TensorView dyv() { return {dy.data(), DType::f32, Device::cpu(), {B, T, C}}; }
  TensorView wv() { return {w.data(), DType::f32, Device::cpu(), {C, K}}; }
  TensorView bv() { return {bias.data(), DType::f32, Device::cpu(), {C}}; }
  TensorView yv() { return {y.data(), DType::f32, Device::cpu(), {B, T, C}}; }
  TensorView dxv() { return {dx.data(), DType::f32, Device::cpu(), {B, T, C}}; }
  TensorView dwv() { return {dw.data(), DType::f32, Device::cpu(), {C, K}}; }
  TensorView dbv() { return {db.data(), DType::f32, Device::cpu(), {C}}; }
  Conv1dForwardArgs fwd() { return {.x = xv(), .weight = wv(), .bias = bv(), .y = yv()}; }
  Conv1dBackwardArgs bwd() { return {.x = xv(), .weight = wv(), .dy = dyv(), .dx = dxv(), .dweight = dwv(), .dbias = dbv()}; }

  bool outputs_untouched() const {
    for (const auto* v : {&y, &dx, &dw, &db}) {
      std::vector<float> pattern(v->size());
      std::memset(pattern.data(), 0x5a, pattern.size() * sizeof(float));
      if (std::memcmp(v->data(), pattern.data(), v->size() * sizeof(float)) != 0) return false;
    }
    return true;
  }
};

// Runs `call`, which must throw E with every string of `needles` in its message, and checks
// that no output was written.
template <class E>
void expect_rejected(Fixture& f, const std::function<void()>& call, std::initializer_list<const char*> needles) {
  try {
    call();
    ADD_FAILURE() << "no exception";
  } catch (const E& e) {
    const std::string msg = e.what();
    for (const char* n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "message '" << msg << "' lacks '" << n << "'";
    EXPECT_NE(dynamic_cast<const Error*>(&e), nullptr) << "not a shortconv::Error";
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
  EXPECT_TRUE(f.outputs_untouched()) << "a rejected call wrote an output";
}

TEST(BadInput, GoodCallsPass) {
  Fixture f;
  conv1d_forward(f.fwd());
  conv1d_backward(f.bwd());
  EXPECT_FALSE(f.outputs_untouched());
}

TEST(BadInput, ZeroOrNegativeDimension) {
  Fixture f;
  for (std::int64_t bad : {std::int64_t{0}, std::int64_t{-3}}) {
    auto a = f.fwd();
    a.x = TensorView(f.x.data(), DType::f32, Device::cpu(), {bad, T, C}, {T * C, C, 1});
    a.y = TensorView(f.y.data(), DType::f32, Device::cpu(), {bad, T, C}, {T * C, C, 1});
    expect_rejected<InvalidArgument>(f, [&] { conv1d_forward(a); }, {"conv1d_forward", "zero or negative"});
  }
  auto a = f.fwd();
  a.weight = TensorView(f.w.data(), DType::f32, Device::cpu(), {C, 0}, {K, 1});
  expect_rejected<InvalidArgument>(f, [&] { conv1d_forward(a); }, {"weight", "zero or negative"});
}

TEST(BadInput, WrongRank) {
  Fixture f;
  auto a = f.fwd();
  a.x = TensorView(f.x.data(), DType::f32, Device::cpu(), {B * T, C});
  expect_rejected<InvalidArgument>(f, [&] { conv1d_forward(a); }, {"conv1d_forward", "x must have 3 dimensions", "[10, 6]"});
}

TEST(BadInput, ShapeMismatch) {
  Fixture f;
  {
    auto a = f.fwd();
    a.weight = TensorView(f.w.data(), DType::f32, Device::cpu(), {C - 1, K});
    expect_rejected<InvalidArgument>(f, [&] { conv1d_forward(a); }, {"conv1d_forward: weight is [5, 3] but x has 6 channels"});
  }
  {
    auto a = f.fwd();
    a.bias = TensorView(f.bias.data(), DType::f32, Device::cpu(), {C - 2});
    expect_rejected<InvalidArgument>(f, [&] { conv1d_forward(a); }, {"bias is [4]"});
  }
  {
    auto a = f.fwd();
    a.y = TensorView(f.y.data(), DType::f32, Device::cpu(), {B, T - 1, C});
    expect_rejected<InvalidArgument>(f, [&] { conv1d_forward(a); }, {"y is [2, 4, 6] but x is [2, 5, 6]"});
  }
  {
    auto a = f.bwd();
    a.dweight = TensorView(f.dw.data(), DType::f32, Device::cpu(), {C, K - 1});
    expect_rejected<InvalidArgument>(f, [&] { conv1d_backward(a); }, {"conv1d_backward", "dweight is [6, 2]"});
  }
  {
    auto a = f.bwd();
    a.dy = TensorView(f.dy.data(), DType::f32, Device::cpu(), {B, T, C - 1});
    expect_rejected<InvalidArgument>(f, [&] { conv1d_backward(a); }, {"dy is [2, 5, 5]"});
  }
}

TEST(BadInput, DtypeMismatch) {
  Fixture f;
  {
    auto a = f.fwd();
    a.y = TensorView(f.y.data(), DType::bf16, Device::cpu(), {B, T, C});
    expect_rejected<InvalidArgument>(f, [&] { conv1d_forward(a); }, {"y has dtype bf16 but must be f32"});
  }
  {
    // f16 activations with bf16 weights: weights must be f32 or f16.
    auto a = f.fwd();
    a.x = TensorView(f.x.data(), DType::f16, Device::cpu(), {B, T, C});
    a.y = TensorView(f.y.data(), DType::f16, Device::cpu(), {B, T, C});
    a.weight = TensorView(f.w.data(), DType::bf16, Device::cpu(), {C, K});
    a.bias.reset();
    expect_rejected<InvalidArgument>(f, [&] { conv1d_forward(a); }, {"weight has dtype bf16 but must be f32 or f16"});
  }
  {
    auto a = f.bwd();
    a.dbias = TensorView(f.db.data(), DType::bf16, Device::cpu(), {C});
    expect_rejected<InvalidArgument>(f, [&] { conv1d_backward(a); }, {"dbias has dtype bf16"});
  }
}

TEST(BadInput, NullPointer) {
  Fixture f;
  auto a = f.fwd();
  a.x = TensorView(nullptr, DType::f32, Device::cpu(), {B, T, C});
  expect_rejected<InvalidArgument>(f, [&] { conv1d_forward(a); }, {"x has a null data pointer"});
  auto b = f.bwd();
  b.dx = TensorView(nullptr, DType::f32, Device::cpu(), {B, T, C});
  expect_rejected<InvalidArgument>(f, [&] { conv1d_backward(b); }, {"dx has a null data pointer"});
}

TEST(BadInput, ChannelStrideNotOne) {
  Fixture f;
  auto a = f.fwd();
  a.x = TensorView(f.x.data(), DType::f32, Device::cpu(), {B, T, C / 2}, {T * C, C, 2});
  a.y = TensorView(f.y.data(), DType::f32, Device::cpu(), {B, T, C / 2}, {T * C, C, 1});
  a.weight = TensorView(f.w.data(), DType::f32, Device::cpu(), {C / 2, K});
  a.bias.reset();
  expect_rejected<InvalidArgument>(f, [&] { conv1d_forward(a); }, {"x must have channel stride 1 but has 2"});
}

TEST(BadInput, NegativeStride) {
  Fixture f;
  auto a = f.fwd();
  a.x = TensorView(f.x.data() + (T - 1) * C, DType::f32, Device::cpu(), {1, T, C}, {T * C, -C, 1});
  a.y = TensorView(f.y.data(), DType::f32, Device::cpu(), {1, T, C});
  expect_rejected<InvalidArgument>(f, [&] { conv1d_forward(a); }, {"x has a negative stride"});
}

TEST(BadInput, AliasedOutputs) {
  Fixture f;
  {
    auto a = f.fwd();
    a.x = f.yv();  // in place
    expect_rejected<InvalidArgument>(f, [&] { conv1d_forward(a); }, {"y overlaps x"});
  }
  {
    // dx shifted by one token over dy.
    auto a = f.bwd();
    a.dy = TensorView(f.dx.data() + C, DType::f32, Device::cpu(), {1, T - 1, C});
    a.x = TensorView(f.x.data(), DType::f32, Device::cpu(), {1, T - 1, C});
    a.dx = TensorView(f.dx.data(), DType::f32, Device::cpu(), {1, T - 1, C});
    a.dweight.reset();
    a.dbias.reset();
    expect_rejected<InvalidArgument>(f, [&] { conv1d_backward(a); }, {"dx overlaps dy"});
  }
  {
    auto a = f.bwd();
    a.dbias = TensorView(f.dw.data(), DType::f32, Device::cpu(), {C});
    expect_rejected<InvalidArgument>(f, [&] { conv1d_backward(a); }, {"overlaps"});
  }
  {
    // Token stride 0: every token of y at one address.
    auto a = f.fwd();
    a.y = TensorView(f.y.data(), DType::f32, Device::cpu(), {B, T, C}, {C, 0, 1});
    expect_rejected<InvalidArgument>(f, [&] { conv1d_forward(a); }, {"y is an output whose elements overlap"});
  }
}

TEST(BadInput, ByteSizeOverflow) {
  Fixture f;
  auto a = f.fwd();
  const std::int64_t huge = std::int64_t{1} << 40;
  a.x = TensorView(f.x.data(), DType::f32, Device::cpu(), {huge, huge, C}, {huge * C, C, 1});
  a.y = TensorView(f.y.data(), DType::f32, Device::cpu(), {huge, huge, C}, {huge * C, C, 1});
  expect_rejected<InvalidArgument>(f, [&] { conv1d_forward(a); }, {"x spans more elements than int64 can index"});
}

TEST(BadInput, MisalignedPointer) {
  Fixture f;
  auto a = f.fwd();
  a.x = TensorView(reinterpret_cast<char*>(f.x.data()) + 2, DType::f32, Device::cpu(), {1, T, C});
  a.y = TensorView(f.y.data(), DType::f32, Device::cpu(), {1, T, C});
  expect_rejected<InvalidArgument>(f, [&] { conv1d_forward(a); }, {"x data pointer is not aligned to its 4-byte element size"});
}

TEST(BadInput, DeviceMismatch) {
  Fixture f;
  auto a = f.fwd();
  a.weight = TensorView(f.w.data(), DType::f32, Device::cuda(0), {C, K});
  expect_rejected<InvalidArgument>(f, [&] { conv1d_forward(a); }, {"weight is on cuda:0 but x is on cpu"});
  auto b = f.fwd();
  expect_rejected<InvalidArgument>(f, [&] { conv1d_forward(b, Stream::cuda_default(0)); },
                                   {"the stream is on cuda:0 but the tensors are on cpu"});
}

// Every argument of every op, moved alone to the other device: InvalidArgument naming the op and
// both devices, before anything is read or written. The views keep their host pointers, so a
// dereference or a device copy before the check would crash or fail; no GPU is needed (issue #5:
// a CUDA x with a CPU weight from Python). Also the reverse: x alone on the GPU.
TEST(BadInput, MixedDevicesEveryArgument) {
  constexpr std::int64_t N = 2, S = 3;  // sequences (forward/backward), state slots (update)
  // Every buffer starts as a byte pattern; a rejected call must leave all of them as they were.
  std::vector<std::vector<float>> buf;
  auto make = [&](std::int64_t n) { return &buf.emplace_back(static_cast<std::size_t>(n), 0.0f); };
  auto view = [](std::vector<float>* b, std::initializer_list<std::int64_t> shape) {
    return TensorView(b->data(), DType::f32, Device::cpu(), shape);
  };
  buf.reserve(32);  // views keep pointers into the vectors
  std::vector<std::int32_t> cu = {0, 2, T};
  std::vector<std::int64_t> slots = {2, -1};
  const TensorView cu_v(cu.data(), DType::i32, Device::cpu(), {N + 1});
  const TensorView slots_v(slots.data(), DType::i64, Device::cpu(), {2});

  Conv1dForwardArgs fwd{.x = view(make(T * C), {1, T, C}), .weight = view(make(C * K), {C, K}),
                        .bias = view(make(C), {C}), .y = view(make(T * C), {1, T, C}),
                        .activation = Activation::silu, .initial_state = view(make(N * (K - 1) * C), {N, K - 1, C}),
                        .final_state = view(make(N * (K - 1) * C), {N, K - 1, C}), .cu_seqlens = cu_v};
  Conv1dBackwardArgs bwd{.x = view(make(T * C), {1, T, C}), .weight = view(make(C * K), {C, K}),
                         .bias = view(make(C), {C}), .dy = view(make(T * C), {1, T, C}),
                         .activation = Activation::silu, .initial_state = view(make(N * (K - 1) * C), {N, K - 1, C}),
                         .d_final_state = view(make(N * (K - 1) * C), {N, K - 1, C}), .cu_seqlens = cu_v,
                         .dx = view(make(T * C), {1, T, C}), .dweight = view(make(C * K), {C, K}),
                         .dbias = view(make(C), {C}), .d_initial_state = view(make(N * (K - 1) * C), {N, K - 1, C})};
  Conv1dUpdateArgs upd{.x = view(make(2 * C), {2, 1, C}), .conv_state = view(make(S * (K - 1) * C), {S, K - 1, C}),
                       .weight = view(make(C * K), {C, K}), .bias = view(make(C), {C}),
                       .y = view(make(2 * C), {2, 1, C}), .activation = Activation::silu, .state_indices = slots_v};
  for (auto& b : buf) std::memset(b.data(), 0x5a, b.size() * sizeof(float));
  const auto buf0 = buf;
  const auto cu0 = cu;
  const auto slots0 = slots;

  // Each case: the op's name, its arguments by name, and a call running it.
  struct Case {
    const char* op;
    std::vector<std::pair<const char*, TensorView*>> args;
    std::function<void()> call;
  };
  const std::vector<Case> cases = {
      {"conv1d_forward",
       {{"x", &fwd.x}, {"weight", &fwd.weight}, {"bias", &*fwd.bias}, {"y", &fwd.y},
        {"initial_state", &*fwd.initial_state}, {"final_state", &*fwd.final_state}, {"cu_seqlens", &*fwd.cu_seqlens}},
       [&] { conv1d_forward(fwd); }},
      {"conv1d_backward",
       {{"x", &bwd.x}, {"weight", &bwd.weight}, {"bias", &*bwd.bias}, {"dy", &bwd.dy},
        {"initial_state", &*bwd.initial_state}, {"d_final_state", &*bwd.d_final_state},
        {"cu_seqlens", &*bwd.cu_seqlens}, {"dx", &*bwd.dx}, {"dweight", &*bwd.dweight}, {"dbias", &*bwd.dbias},
        {"d_initial_state", &*bwd.d_initial_state}},
       [&] { conv1d_backward(bwd); }},
      {"conv1d_update",
       {{"x", &upd.x}, {"conv_state", &upd.conv_state}, {"weight", &upd.weight}, {"bias", &*upd.bias},
        {"y", &upd.y}, {"state_indices", &*upd.state_indices}},
       [&] { conv1d_update(upd); }},
  };
  auto relabel = [](TensorView* v, Device d) { *v = TensorView(v->data(), v->dtype(), d, v->shape(), v->strides()); };
  for (const Case& c : cases) {
    // The first named argument (x) is the reference the message compares with; the second one
    // is the first mismatch when x is the odd one out.
    const std::string second = c.args[1].first;
    for (const auto& [name, v] : c.args) {
      for (bool odd_on_gpu : {true, false}) {
        // odd_on_gpu: this argument on cuda:0, the rest on the CPU; otherwise the reverse.
        for (const auto& a : c.args) relabel(a.second, odd_on_gpu ? Device::cpu() : Device::cuda(0));
        relabel(v, odd_on_gpu ? Device::cuda(0) : Device::cpu());
        const std::string odd_dev = odd_on_gpu ? "cuda:0" : "cpu", rest_dev = odd_on_gpu ? "cpu" : "cuda:0";
        const std::string want = std::string(name) == "x"
                                     ? second + " is on " + rest_dev + " but x is on " + odd_dev
                                     : std::string(name) + " is on " + odd_dev + " but x is on " + rest_dev;
        SCOPED_TRACE(std::string(c.op) + ": " + name + " on " + odd_dev);
        try {
          c.call();
          ADD_FAILURE() << "no exception";
        } catch (const InvalidArgument& e) {
          const std::string msg = e.what();
          EXPECT_EQ(msg.rfind(std::string(c.op) + ": ", 0), 0u) << msg;
          EXPECT_NE(msg.find(want), std::string::npos) << "message '" << msg << "' lacks '" << want << "'";
        } catch (const std::exception& e) {
          ADD_FAILURE() << "wrong exception type: " << e.what();
        }
        EXPECT_TRUE(buf == buf0 && cu == cu0 && slots == slots0) << "a rejected call touched a buffer";
      }
    }
    for (const auto& a : c.args) relabel(a.second, Device::cpu());
  }
  // The same arguments all on the CPU are valid: each rejection above was the device alone.
  EXPECT_NO_THROW(conv1d_forward(fwd));
  EXPECT_NO_THROW(conv1d_backward(bwd));
  EXPECT_NO_THROW(conv1d_update(upd));
}

TEST(BadInput, CudaWithoutDevice) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is present";
  Fixture f;
  // Pointers are never dereferenced: the call must fail before any launch.
  auto a = f.fwd();
  for (TensorView* v : {&a.x, &a.weight, &*a.bias, &a.y})
    *v = TensorView(v->data(), v->dtype(), Device::cuda(0), v->shape(), v->strides());
  try {
    conv1d_forward(a);
    ADD_FAILURE() << "no exception";
  } catch (const Error& e) {
    EXPECT_TRUE(dynamic_cast<const DeviceError*>(&e) != nullptr || dynamic_cast<const Unsupported*>(&e) != nullptr) << e.what();
  }
  EXPECT_TRUE(f.outputs_untouched());
  EXPECT_THROW(Tensor(DType::f32, {4}, Device::cuda(0)), Error);
}

// ---- sequence-model arguments ----------------------------------------------------------------

TEST(BadInput, BadCuSeqlens) {
  // x packed as [total = 10, C]; every bad cu_seqlens is rejected before anything is written.
  const std::int64_t total = B * T;
  std::vector<float> x(total * C, 0.5f), y(total * C);
  std::memset(y.data(), 0x5a, y.size() * sizeof(float));
  const std::vector<float> y0 = y;
  std::vector<float> w(C * K, 0.25f);
  auto call = [&](std::vector<std::int32_t> cu) {
    Conv1dForwardArgs a;
    a.x = TensorView(x.data(), DType::f32, Device::cpu(), {total, C});
    a.weight = TensorView(w.data(), DType::f32, Device::cpu(), {C, K});
    a.y = TensorView(y.data(), DType::f32, Device::cpu(), {total, C});
    a.cu_seqlens = TensorView(cu.data(), DType::i32, Device::cpu(), {static_cast<std::int64_t>(cu.size())});
    conv1d_forward(a);
  };
  auto expect_bad = [&](std::vector<std::int32_t> cu, const char* needle) {
    try {
      call(cu);
      ADD_FAILURE() << "no exception for " << needle;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    EXPECT_EQ(0, std::memcmp(y.data(), y0.data(), y.size() * sizeof(float))) << "a rejected call wrote y";
  };
  expect_bad({1, 4, 10}, "must start at 0");
  expect_bad({0, 6, 4, 10}, "must be non-decreasing");
  expect_bad({0, 4, 9}, "ends at 9 but x has 10 tokens");
  expect_bad({0}, "at least 2 entries");
  EXPECT_NO_THROW(call({0, 4, 4, 10}));  // an empty sequence is fine
}

TEST(BadInput, BadStates) {
  Fixture f;
  std::vector<float> state(B * (K - 1) * C, 1.0f);
  auto a = f.fwd();
  a.initial_state = TensorView(state.data(), DType::f32, Device::cpu(), {B, K, C});
  expect_rejected<InvalidArgument>(f, [&] { conv1d_forward(a); }, {"initial_state is [2, 3, 6] but must be [2, 2, 6]"});
  auto b = f.fwd();
  b.final_state = TensorView(state.data(), DType::bf16, Device::cpu(), {B, K - 1, C});
  expect_rejected<InvalidArgument>(f, [&] { conv1d_forward(b); }, {"final_state has dtype bf16"});
  // final_state overlapping initial_state without being the same view.
  auto c = f.fwd();
  std::vector<float> big(B * (K - 1) * C + 1, 1.0f);
  c.initial_state = TensorView(big.data(), DType::f32, Device::cpu(), {B, K - 1, C});
  c.final_state = TensorView(big.data() + 1, DType::f32, Device::cpu(), {B, K - 1, C});
  expect_rejected<InvalidArgument>(f, [&] { conv1d_forward(c); }, {"final_state overlaps initial_state"});
}

TEST(BadInput, BadStateIndices) {
  // Decode on the CPU checks the indices on the host: out of range and duplicates are rejected,
  // and neither y nor any state slot is written.
  const std::int64_t S = 3;
  std::vector<float> x(B * C, 0.5f), y(B * C), w(C * K, 0.25f), state(S * (K - 1) * C, 2.0f);
  std::memset(y.data(), 0x5a, y.size() * sizeof(float));
  const std::vector<float> y0 = y, state0 = state;
  auto call = [&](std::vector<std::int64_t> idx) {
    conv1d_update({.x = TensorView(x.data(), DType::f32, Device::cpu(), {B, 1, C}),
                   .conv_state = TensorView(state.data(), DType::f32, Device::cpu(), {S, K - 1, C}),
                   .weight = TensorView(w.data(), DType::f32, Device::cpu(), {C, K}),
                   .bias = std::nullopt,
                   .y = TensorView(y.data(), DType::f32, Device::cpu(), {B, 1, C}),
                   .activation = Activation::none,
                   .state_indices = TensorView(idx.data(), DType::i64, Device::cpu(), {B})});
  };
  for (const auto& [idx, needle] : std::vector<std::pair<std::vector<std::int64_t>, const char*>>{
           {{0, 3}, "state_indices[1] is 3 but conv_state has 3 slots"},
           {{-2, 0}, "state_indices[0] is -2"},
           {{1, 1}, "uses slot 1 twice"}}) {
    try {
      call(idx);
      ADD_FAILURE() << "no exception for " << needle;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    EXPECT_EQ(y, y0);
    EXPECT_EQ(state, state0);
  }
  EXPECT_NO_THROW(call({-1, 2}));
}

TEST(BadInput, ParseErrors) {
  EXPECT_THROW(parse_dtype("f64"), InvalidArgument);
  EXPECT_THROW(parse_device("gpu"), InvalidArgument);
  EXPECT_THROW(parse_device("cuda:x"), InvalidArgument);
  EXPECT_EQ(parse_device("cuda:3"), Device::cuda(3));
  EXPECT_EQ(parse_dtype("bfloat16"), DType::bf16);
}

// Disjoint column slices of one [B, T, 3C] buffer share a byte range but no element: allowed.
TEST(Aliasing, DisjointColumnSlicesOfOneBufferAreAccepted) {
  std::vector<float> buf(B * T * 3 * C);
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<float> dist(-1, 1);
  for (auto& v : buf) v = dist(rng);
  std::vector<float> w(C * K);
  for (auto& v : w) v = dist(rng);
  const TensorView x(buf.data(), DType::f32, Device::cpu(), {B, T, C}, {T * 3 * C, 3 * C, 1});
  const TensorView y(buf.data() + 2 * C, DType::f32, Device::cpu(), {B, T, C}, {T * 3 * C, 3 * C, 1});
  const TensorView wv(w.data(), DType::f32, Device::cpu(), {C, K});
  std::vector<double> xd(B * T * C), wd(w.begin(), w.end());
  for (std::int64_t i = 0; i < B * T * C; ++i) xd[i] = buf[(i / C) * 3 * C + i % C];
  conv1d_forward(x, wv, nullptr, y);
  const RefResult ref = ref_forward({B, T, C, K}, xd, wd, nullptr);
  for (std::int64_t i = 0; i < B * T * C; ++i) EXPECT_NEAR(buf[(i / C) * 3 * C + 2 * C + i % C], ref.value[i], 1e-5);
  // Overlapping column windows are rejected.
  const TensorView y_bad(buf.data() + C / 2, DType::f32, Device::cpu(), {B, T, C}, {T * 3 * C, 3 * C, 1});
  EXPECT_THROW(conv1d_forward(x, wv, nullptr, y_bad), InvalidArgument);
}

TEST(Registry, MissingKernelIsUnsupportedAndNamed) {
  detail::Registry r;
  const detail::KernelKey key{DeviceType::cpu, detail::Op::forward, DType::bf16, Variant::naive};
  try {
    (void)r.find<detail::ForwardFn>(key);
    ADD_FAILURE() << "no exception";
  } catch (const Unsupported& e) {
    EXPECT_NE(std::string(e.what()).find("cpu/forward/bf16/naive"), std::string::npos) << e.what();
  }
  r.add(key, detail::ForwardFn{nullptr});
  EXPECT_TRUE(r.contains(key));
  EXPECT_THROW(r.add(key, detail::ForwardFn{nullptr}), std::logic_error);
  // The global registry has every CPU combination.
  for (DType d : {DType::f32, DType::bf16, DType::f16})
    for (Variant v : {Variant::fast, Variant::naive})
      for (detail::Op op : {detail::Op::forward, detail::Op::backward})
        EXPECT_TRUE(detail::Registry::instance().contains({DeviceType::cpu, op, d, v}));
}

}  // namespace
}  // namespace shortconv::test
