#include "registry.hpp"

#include <stdexcept>

#include "shortconv/error.hpp"

namespace shortconv::detail {

std::string to_string(const KernelKey& key) {
  std::string s = key.backend == DeviceType::cpu ? "cpu" : "cuda";
  s += key.op == Op::forward ? "/forward/" : key.op == Op::backward ? "/backward/" : "/update/";
  s += dtype_name(key.dtype);
  s += key.variant == Variant::fast ? "/fast" : "/naive";
  return s;
}

const Registry& Registry::instance() {
  static const Registry registry = [] {
    Registry r;
    cpu::register_kernels(r);
    cuda::register_kernels(r);
    return r;
  }();
  return registry;
}

void Registry::add(const KernelKey& key, KernelFn fn) {
  if (!table_.emplace(key, fn).second) throw std::logic_error("kernel registered twice: " + to_string(key));
}

const KernelFn& Registry::find_any(const KernelKey& key) const {
  auto it = table_.find(key);
  if (it == table_.end()) throw Unsupported("no kernel registered for " + to_string(key));
  return it->second;
}

}  // namespace shortconv::detail
