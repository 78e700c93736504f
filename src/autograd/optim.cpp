// SGD and AdamW: one update kernel per parameter on the parameters' device, enqueued on the
// optimizer's stream. The step count and bias corrections live on the host and reach the kernel
// as arguments, so a step never reads anything back from the device.
#include <cmath>
#include <string>
#include <vector>

#include "kernels.hpp"
#include "shortconv/error.hpp"
#include "shortconv/optim.hpp"

namespace shortconv::autograd {
namespace {

// Checks the parameters and resolves the stream (a default stream follows the parameters).
Stream check_params(const char* op, const std::vector<Parameter*>& params, Stream stream) {
  for (std::size_t i = 0; i < params.size(); ++i) {
    const Parameter* p = params[i];
    if (p == nullptr) throw InvalidArgument(std::string(op) + ": parameter " + std::to_string(i) + " is null");
    if (!p->requires_grad())
      throw InvalidArgument(std::string(op) + ": parameter '" + p->name() + "' is a constant (requires_grad = false)");
    if (p->device() != params[0]->device())
      throw InvalidArgument(std::string(op) + ": parameter '" + p->name() + "' is on " + p->device().str() +
                            " but '" + params[0]->name() + "' is on " + params[0]->device().str());
  }
  const Device device = params.empty() ? stream.device : params[0]->device();
  if (stream.device.is_cpu() && stream.handle == nullptr) return default_stream(device);
  if (stream.device != device)
    throw InvalidArgument(std::string(op) + ": the stream is on " + stream.device.str() + " but the parameters are on " +
                          device.str());
  return stream;
}

detail::Exec exec_of(const Stream& s) {
  detail::Exec e;
  e.on_cuda = s.device.is_cuda();
  e.device = s.device.index;
  e.stream = s.handle;
  return e;
}

Tensor zeros_like(const Parameter& p) {
  Tensor t(DType::f32, p.value().shape(), p.device());
  const std::vector<float> zeros(static_cast<std::size_t>(p.numel()), 0.0f);
  t.copy_from_host(zeros.data());
  return t;
}

float* data(const TensorView& v) { return static_cast<float*>(v.data()); }

}  // namespace

SGD::SGD(std::vector<Parameter*> params, SGDOptions options, Stream stream)
    : params_(std::move(params)), options_(options), stream_(check_params("SGD", params_, stream)) {
  if (options_.momentum != 0.0f)
    for (const Parameter* p : params_) velocity_.push_back(zeros_like(*p));
}

void SGD::step() {
  const detail::Exec e = exec_of(stream_);
  for (std::size_t i = 0; i < params_.size(); ++i) {
    Parameter& p = *params_[i];
    detail::sgd_step(e, data(p.value()), data(p.grad()), velocity_.empty() ? nullptr : data(velocity_[i].view()),
                     p.numel(), options_.lr, options_.momentum, options_.weight_decay);
  }
}

AdamW::AdamW(std::vector<Parameter*> params, AdamWOptions options, Stream stream)
    : params_(std::move(params)), options_(options), stream_(check_params("AdamW", params_, stream)) {
  for (const Parameter* p : params_) {
    m_.push_back(zeros_like(*p));
    v_.push_back(zeros_like(*p));
  }
}

void AdamW::step() {
  ++steps_;
  const detail::Exec e = exec_of(stream_);
  const double t = static_cast<double>(steps_);
  const auto bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(options_.beta1), t));
  const auto bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(options_.beta2), t)));
  for (std::size_t i = 0; i < params_.size(); ++i) {
    Parameter& p = *params_[i];
    detail::adamw_step(e, data(p.value()), data(p.grad()), data(m_[i].view()), data(v_[i].view()), p.numel(),
                       options_.lr, options_.beta1, options_.beta2, options_.eps, options_.weight_decay, bc1, bc2_sqrt);
  }
}

}  // namespace shortconv::autograd
