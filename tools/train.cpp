// `shortconv train` (see train.hpp): student-teacher distillation of a short-conv mixer on the
// autograd tape, with a live progress line, a CSV loss curve, an SVG plot on a log axis and, with
// --profile, the share of the step spent in each op.
//
// Each step: x ~ N(0, 1) [B, T, D] drawn on the device (Tape::randn), teacher forward (constants,
// no gradient), student forward, MSE, backward, AdamW, then the loss is copied into a history
// buffer on the device and the tape is reset. The host reads the history back every step on the
// CPU and every kReportEvery steps on CUDA, so the GPU is not drained after each step.
#include "train.hpp"

#include <unistd.h>

#include <iterator>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "common.hpp"
#include "shortconv/autograd.hpp"
#include "shortconv/optim.hpp"

namespace shortconv::tool {
namespace {

namespace ag = shortconv::autograd;

constexpr std::int64_t kReportEvery = 10;  // CUDA: steps between host reads of the loss history
constexpr float kMinLrRatio = 0.05f;       // the cosine decay ends at this fraction of the peak lr
// AdamW moments, tuned with the peak lr at the default size (loss ratio, seed 0): betas (0.9, 0.999)
// with lr 4e-3: 6x after 400 steps; (0.5, 0.95) with lr 3e-2: 210x after 600; (0.7, 0.95) with
// lr 2e-2: 430x after 600; (0.5, 0.95) with lr 1.5e-2: 950x after 600, 380x after 400 (seeds 1-3:
// 230-310x). Every step sees fresh data, and shorter moment memories track the fast-moving
// features better.
constexpr float kBeta1 = 0.5f;
constexpr float kBeta2 = 0.95f;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The mixer's weights. The constructor draws them from N(0, 1/fan_in), so that with x ~ N(0, 1)
// the projections and the conv output have unit variance and the output about 0.36 (E silu(z)² for
// z ~ N(0, 1)).
struct Mixer {
  ag::Parameter w_in, w_gate, w_conv, w_out;

  Mixer(const char* who, const TrainOptions& o, Device device, bool trainable, std::uint64_t seed)
      : w_in(std::string(who) + ".w_in", {o.channels, o.d_model}, device, trainable),
        w_gate(std::string(who) + ".w_gate", {o.channels, o.d_model}, device, trainable),
        w_conv(std::string(who) + ".w_conv", {o.channels, o.width}, device, trainable),
        w_out(std::string(who) + ".w_out", {o.d_model, o.channels}, device, trainable) {
    std::mt19937_64 gen(seed);
    init(w_in, o.d_model, gen);
    init(w_gate, o.d_model, gen);
    init(w_conv, o.width, gen);
    init(w_out, o.channels, gen);
  }

  static void init(ag::Parameter& p, std::int64_t fan_in, std::mt19937_64& gen) {
    std::normal_distribution<float> normal(0.0f, 1.0f / std::sqrt(static_cast<float>(fan_in)));
    std::vector<float> v(static_cast<std::size_t>(p.numel()));
    for (float& e : v) e = normal(gen);
    p.copy_from_host(v);
  }

  std::vector<ag::Parameter*> params() { return {&w_in, &w_gate, &w_conv, &w_out}; }
  std::int64_t numel() const { return w_in.numel() + w_gate.numel() + w_conv.numel() + w_out.numel(); }

  // out [B, T, D] = W_o · (silu(conv(W_in · x)) ⊙ (W_g · x))
  ag::Var forward(ag::Tape& tape, const ag::Var& x) {
    const ag::Var u = ag::linear(x, tape.param(w_in));                                                  // [B, T, C]
    const ag::Var s = ag::conv1d(u, tape.param(w_conv), {.bias = {}, .activation = Activation::silu, .initial_state = {}});  // [B, T, C]
    const ag::Var g = ag::linear(x, tape.param(w_gate));                                                // [B, T, C]
    return ag::linear(ag::mul(s, g), tape.param(w_out));                                                // [B, T, D]
  }
};

// Linear warm-up, then cosine decay to kMinLrRatio of the peak at the last step.
float lr_at(const TrainOptions& o, std::int64_t step) {
  const float warm = o.warmup > 0 ? std::min(1.0f, static_cast<float>(step + 1) / static_cast<float>(o.warmup)) : 1.0f;
  const std::int64_t decay_steps = std::max<std::int64_t>(1, o.steps - o.warmup);
  const float p = std::clamp(static_cast<float>(step - o.warmup) / static_cast<float>(decay_steps), 0.0f, 1.0f);
  const float cosine = 0.5f * (1.0f + std::cos(3.14159265358979f * p));
  return o.lr * warm * (kMinLrRatio + (1.0f - kMinLrRatio) * cosine);
}

std::string si(double v) {
  if (v >= 1e9) return format("%.2fG", v / 1e9);
  if (v >= 1e6) return format("%.2fM", v / 1e6);
  if (v >= 1e3) return format("%.1fk", v / 1e3);
  return format("%.0f", v);
}

// ---- SVG plot -------------------------------------------------------------------------------

// 1, 2 or 5 times a power of ten, near range / 6.
double nice_step(double range) {
  const double raw = std::max(range / 6.0, 1e-12);
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0})
    if (m * p >= raw) return m * p;
  return 10.0 * p;
}

std::string escape_xml(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      default: out += c;
    }
  }
  return out;
}

void write_svg(const std::string& path, const std::vector<float>& loss, const std::string& title,
               const std::string& subtitle) {
  constexpr double kW = 800, kH = 500, kLeft = 80, kRight = 30, kTop = 70, kBottom = 60;
  const double pw = kW - kLeft - kRight, ph = kH - kTop - kBottom;
  double lo = INFINITY, hi = -INFINITY;
  for (float v : loss)
    if (std::isfinite(v) && v > 0) {
      lo = std::min(lo, static_cast<double>(v));
      hi = std::max(hi, static_cast<double>(v));
    }
  if (!(lo <= hi)) lo = 1e-3, hi = 1.0;
  const int dlo = static_cast<int>(std::floor(std::log10(lo))), dhi = std::max(dlo + 1, static_cast<int>(std::ceil(std::log10(hi))));
  const double xmax = std::max<double>(1.0, static_cast<double>(loss.size() - 1));
  auto X = [&](double step) { return kLeft + pw * step / xmax; };
  auto Y = [&](double v) { return kTop + ph * (1.0 - (std::log10(v) - dlo) / (dhi - dlo)); };

  std::ofstream out(path);
  if (!out) throw InvalidArgument("train: cannot write " + path);
  out << format(R"(<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" )"
                R"(font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">)"
                "\n",
                kW, kH, kW, kH);
  out << R"(<rect width="100%" height="100%" fill="white"/>)" << "\n";
  out << format(R"(<text x="%.0f" y="28" font-size="16" text-anchor="middle">%s</text>)", kW / 2, escape_xml(title).c_str()) << "\n";
  out << format(R"(<text x="%.0f" y="48" font-size="12" fill="#444" text-anchor="middle">%s</text>)", kW / 2,
                escape_xml(subtitle).c_str())
      << "\n";
  // y: decades (labelled, grid) and 2..9 (minor ticks, light grid).
  for (int d = dlo; d <= dhi; ++d) {
    const double y = Y(std::pow(10.0, d));
    out << format(R"(<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ccc"/>)", kLeft, y, kLeft + pw, y) << "\n";
    out << format(R"(<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>)", kLeft - 6, y, kLeft, y) << "\n";
    out << format(R"(<text x="%.1f" y="%.1f" text-anchor="end">10<tspan dy="-6" font-size="9">%d</tspan></text>)",
                  kLeft - 9, y + 4, d)
        << "\n";
    if (d == dhi) break;
    for (int m = 2; m <= 9; ++m) {
      const double ym = Y(m * std::pow(10.0, d));
      out << format(R"(<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>)", kLeft, ym, kLeft + pw, ym) << "\n";
      out << format(R"(<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>)", kLeft - 3, ym, kLeft, ym) << "\n";
    }
  }
  // x: steps.
  const double xs = nice_step(xmax);
  for (double s = 0; s <= xmax + 1e-9; s += xs) {
    const double x = X(s);
    out << format(R"(<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>)", x, kTop, x, kTop + ph) << "\n";
    out << format(R"(<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>)", x, kTop + ph, x, kTop + ph + 6) << "\n";
    out << format(R"(<text x="%.1f" y="%.1f" text-anchor="middle">%.0f</text>)", x, kTop + ph + 20, s) << "\n";
  }
  out << format(R"(<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="black"/>)", kLeft, kTop, pw, ph) << "\n";
  out << format(R"(<text x="%.1f" y="%.1f" text-anchor="middle">step</text>)", kLeft + pw / 2, kH - 18) << "\n";
  out << format(R"svg(<text transform="translate(22 %.1f) rotate(-90)" text-anchor="middle">MSE loss (log scale)</text>)svg",
                kTop + ph / 2)
      << "\n";
  // The curve; non-finite or non-positive losses break it.
  std::string points;
  auto flush = [&] {
    if (!points.empty())
      out << R"(<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" stroke-linejoin="round" points=")" << points
          << "\"/>\n";
    points.clear();
  };
  for (std::size_t i = 0; i < loss.size(); ++i) {
    if (!std::isfinite(loss[i]) || loss[i] <= 0) {
      flush();
      continue;
    }
    points += format("%.1f,%.1f ", X(static_cast<double>(i)), Y(loss[i]));
  }
  flush();
  out << "</svg>\n";
  if (!out) throw InvalidArgument("train: failed writing " + path);
}

// ---- profile table --------------------------------------------------------------------------

void print_profile(const std::vector<ag::OpTiming>& timings, std::int64_t steps, double step_ms, double gemm_flops) {
  std::printf("\nper-op time (profile mode; every op timed, the stream synchronised at each reset), mean of %lld steps\n",
              static_cast<long long>(steps));
  std::printf("  %-16s %-9s %10s %10s %8s\n", "op", "phase", "calls/step", "ms/step", "share");
  double gemm = 0, conv = 0, other = 0, total = 0;
  for (const ag::OpTiming& t : timings) {
    const double ms = t.ms / static_cast<double>(steps);
    total += ms;
    (t.op == "linear" ? gemm : t.op == "conv1d" ? conv : other) += ms;
    std::printf("  %-16s %-9s %10.1f %10.3f %7.1f%%\n", t.op.c_str(), t.phase.c_str(),
                static_cast<double>(t.calls) / static_cast<double>(steps), ms, 100.0 * ms / step_ms);
  }
  std::printf("  %-26s %21.3f %7.1f%%   (%.1f GFLOP/s)\n", "GEMM (linear)", gemm, 100.0 * gemm / step_ms,
              gemm_flops / (gemm * 1e-3) / 1e9);
  std::printf("  %-26s %21.3f %7.1f%%\n", "conv1d", conv, 100.0 * conv / step_ms);
  std::printf("  %-26s %21.3f %7.1f%%\n", "elementwise, loss, AdamW", other, 100.0 * other / step_ms);
  std::printf("  %-26s %21.3f %7.1f%%\n", "gaps (launch, host)", step_ms - total, 100.0 * (step_ms - total) / step_ms);
  std::printf("  %-26s %21.3f %7.1f%%\n", "step (host clock)", step_ms, 100.0);
}

}  // namespace

void restart_for_blas_kernels(const TrainOptions& o, char** argv) {
#if defined(__linux__) && (defined(__x86_64__) || defined(__i386__))
  try {
    if (!resolve_device(o.device).is_cpu()) return;
  } catch (const std::exception&) {
    return;  // run_train reports it
  }
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  const ag::CpuBlasInfo blas = ag::cpu_blas_info();
  const char* generic[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom"};
  if (blas.name != "OpenBLAS" || std::find(std::begin(generic), std::end(generic), blas.kernels) == std::end(generic)) return;
  const char* better = nullptr;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl")) {
    better = "SkylakeX";
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    better = "Haswell";
  }
  if (better == nullptr) return;
  std::fprintf(stderr,
               "note: OpenBLAS %s chose its generic %s kernels on this CPU; restarting with OPENBLAS_CORETYPE=%s "
               "(set OPENBLAS_CORETYPE yourself to override)\n",
               blas.version.c_str(), blas.kernels.c_str(), better);
  std::fflush(stderr);
  std::fflush(stdout);
  if (setenv("OPENBLAS_CORETYPE", better, 1) == 0) execv("/proc/self/exe", argv);
  unsetenv("OPENBLAS_CORETYPE");  // exec failed: carry on with the generic kernels
#else
  (void)o;
  (void)argv;
#endif
}

int run_train(const TrainOptions& o) {
  const Device device = resolve_device(o.device);
  check_shape_size("train", o.batch, o.seqlen, o.channels, o.width);
  check_shape_size("train", o.batch, o.seqlen, o.d_model, 1);
  if (o.steps < 1) throw InvalidArgument("train: --steps must be at least 1");
  const std::int64_t tokens = o.batch * o.seqlen;
  const double gemm_flops = 10.0 * 2.0 * static_cast<double>(tokens) * static_cast<double>(o.d_model) *
                            static_cast<double>(o.channels);  // 3 teacher + 3 student forward + 4 backward

  std::printf("shortconv train: distil a fixed random short-conv mixer into a student from another init\n");
  std::printf("  out = W_o (silu(conv_K(W_in x)) * (W_g x)),  d_model %lld, C %lld, K %lld, T %lld, B %lld\n",
              static_cast<long long>(o.d_model), static_cast<long long>(o.channels), static_cast<long long>(o.width),
              static_cast<long long>(o.seqlen), static_cast<long long>(o.batch));
  if (device.is_cuda()) {
    std::printf("  device %s, GEMMs in %s (cuBLAS)\n", describe_device(device).c_str(), o.tf32 ? "TF32" : "FP32");
  } else {
    const ag::CpuBlasInfo blas = ag::cpu_blas_info();
    std::printf("  device %s, GEMMs in FP32 (%s%s%s%s)\n", describe_device(device).c_str(), blas.name.c_str(),
                blas.version.empty() ? "" : (" " + blas.version).c_str(),
                blas.kernels.empty() ? "" : (", " + blas.kernels + " kernels").c_str(),
                std::getenv("OPENBLAS_CORETYPE") != nullptr ? " from OPENBLAS_CORETYPE" : "");
  }

  ag::Tape tape(device, default_stream(device), {.profile = o.profile, .tf32 = o.tf32});
  Mixer teacher("teacher", o, device, false, o.seed * 4 + 1);
  Mixer student("student", o, device, true, o.seed * 4 + 2);
  ag::AdamW opt(student.params(), {.lr = o.lr, .beta1 = kBeta1, .beta2 = kBeta2, .eps = 1e-8f, .weight_decay = o.weight_decay},
                tape.stream());
  std::printf("  student %s parameters, AdamW (betas %g, %g) peak lr %g (warm-up %lld, cosine to %g), weight decay %g, "
              "%lld steps%s\n",
              si(static_cast<double>(student.numel())).c_str(), static_cast<double>(kBeta1), static_cast<double>(kBeta2),
              static_cast<double>(o.lr),
              static_cast<long long>(o.warmup), static_cast<double>(o.lr * kMinLrRatio),
              static_cast<double>(o.weight_decay), static_cast<long long>(o.steps),
              o.time_limit > 0 ? format(", at most %.0f s", o.time_limit).c_str() : "");

  Tensor history(DType::f32, {o.steps}, device);  // loss of each step, written on the device
  std::vector<float> loss(static_cast<std::size_t>(o.steps), NAN);
  std::vector<double> seconds(static_cast<std::size_t>(o.steps), 0.0);  // when each loss was read
  const bool tty = isatty(fileno(stdout)) != 0;
  const std::int64_t report_every = device.is_cuda() ? kReportEvery : 1;
  const std::uint64_t x_seed = 0x5eed0000ull + o.seed * 1000003ull;

  const auto t0 = std::chrono::steady_clock::now();
  double warm_s = 0, last_print = -1, last_s = 0;
  std::int64_t done = 0, last_done = 0;
  for (std::int64_t step = 0; step < o.steps; ++step) {
    opt.set_lr(lr_at(o, step));
    const ag::Var x = tape.randn({o.batch, o.seqlen, o.d_model}, x_seed + static_cast<std::uint64_t>(step));
    const ag::Var target = teacher.forward(tape, x);
    const ag::Var l = ag::mse_loss(student.forward(tape, x), target);
    tape.backward(l);
    tape.profile_section("adamw", [&] { opt.step(); });
    tape.copy_value(l, history.view().narrow(0, step, 1));
    tape.reset();
    done = step + 1;
    if (step != 0 && done % report_every != 0 && done != o.steps) continue;

    synchronize(tape.stream());
    history.copy_to_host(loss.data());
    const double now = seconds_since(t0);
    for (std::int64_t s = last_done; s < done; ++s) seconds[static_cast<std::size_t>(s)] = now;
    if (step == 0) {
      warm_s = now;  // the first step allocates and warms up: left out of the step time
      tape.clear_profile();
    }
    const double rate = done > last_done && now > last_s ? static_cast<double>((done - last_done) * tokens) / (now - last_s) : 0;
    last_done = done;
    last_s = now;
    const bool out_of_time = o.time_limit > 0 && now >= o.time_limit;
    if (tty ? now - last_print >= 0.1 || done == o.steps || out_of_time : now - last_print >= 2.0) {
      last_print = now;
      const float cur = loss[static_cast<std::size_t>(step)];
      std::printf("%sstep %5lld/%lld  loss %.3e  (%.1fx below step 0)  lr %.2e  %s tokens/s  %.1f s%s", tty ? "\r" : "  ",
                  static_cast<long long>(done), static_cast<long long>(o.steps), static_cast<double>(cur),
                  static_cast<double>(loss[0] / cur), static_cast<double>(lr_at(o, step)), si(rate).c_str(), now,
                  tty ? "   " : "\n");
      std::fflush(stdout);
    }
    if (out_of_time) break;
  }
  const double total_s = seconds_since(t0);
  if (tty) std::printf("\n");

  loss.resize(static_cast<std::size_t>(done));
  seconds.resize(static_cast<std::size_t>(done));
  const std::size_t tail = std::min<std::size_t>(10, loss.size());
  double final_loss = 0;
  for (std::size_t i = loss.size() - tail; i < loss.size(); ++i) final_loss += loss[i];
  final_loss /= static_cast<double>(tail);
  const double ratio = loss[0] / final_loss;
  const double step_ms = done > 1 ? (total_s - warm_s) * 1e3 / static_cast<double>(done - 1) : total_s * 1e3;
  std::printf("result: loss %.3e at step 0 -> %.3e (mean of the last %zu steps): %.1fx lower in %lld steps, %.1f s\n",
              static_cast<double>(loss[0]), final_loss, tail, ratio, static_cast<long long>(done), total_s);
  std::printf("        %.2f ms/step after the first (%s tokens/s; GEMMs %.2f GFLOP/step)%s\n", step_ms,
              si(static_cast<double>(tokens) / (step_ms * 1e-3)).c_str(), gemm_flops * 1e-9,
              o.profile ? " [profile mode: synchronised every step]" : "");
  if (o.profile && done > 1) print_profile(tape.profile(), done - 1, step_ms, gemm_flops);

  if (o.csv) {
    std::ofstream csv(*o.csv);
    if (!csv) throw InvalidArgument("train: cannot write " + *o.csv);
    csv << "step,loss,lr,seconds\n";
    for (std::size_t i = 0; i < loss.size(); ++i)
      csv << format("%zu,%.6e,%.6e,%.3f\n", i, static_cast<double>(loss[i]),
                    static_cast<double>(lr_at(o, static_cast<std::int64_t>(i))), seconds[i]);
    if (!csv) throw InvalidArgument("train: failed writing " + *o.csv);
    std::printf("wrote %s\n", o.csv->c_str());
  }
  if (o.svg) {
    const std::string title = format("shortconv train: student vs teacher MSE (d_model %lld, C %lld, K %lld, T %lld, B %lld, %s)",
                                     static_cast<long long>(o.d_model), static_cast<long long>(o.channels),
                                     static_cast<long long>(o.width), static_cast<long long>(o.seqlen),
                                     static_cast<long long>(o.batch), device.str().c_str());
    const std::string subtitle = format("AdamW, peak lr %g; loss %.2e -> %.2e (%.0fx lower) in %lld steps, %.1f s",
                                        static_cast<double>(o.lr), static_cast<double>(loss[0]), final_loss, ratio,
                                        static_cast<long long>(done), total_s);
    write_svg(*o.svg, loss, title, subtitle);
    std::printf("wrote %s\n", o.svg->c_str());
  }
  return std::isfinite(final_loss) ? 0 : 1;
}

}  // namespace shortconv::tool
