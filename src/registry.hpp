// Kernel registry: implementations keyed by (backend, op, dtype, variant).
// Backends add entries from their register_kernels(); the front end only looks them up, so a
// new backend or dtype means new entries, not edits to the front end.
#pragma once

#include <compare>
#include <map>
#include <string>
#include <variant>

#include "params.hpp"
#include "shortconv/device.hpp"
#include "shortconv/ops.hpp"

namespace shortconv::detail {

enum class Op : unsigned char { forward, backward, update };

struct KernelKey {
  DeviceType backend;
  Op op;
  DType dtype;
  Variant variant;
  friend auto operator<=>(const KernelKey&, const KernelKey&) = default;
};

std::string to_string(const KernelKey& key);

using ForwardFn = void (*)(const ForwardParams&);
using BackwardFn = void (*)(const BackwardParams&);
using UpdateFn = void (*)(const UpdateParams&);
using KernelFn = std::variant<ForwardFn, BackwardFn, UpdateFn>;

class Registry {
 public:
  /// The process-wide registry, filled with every backend this build has on first use.
  static const Registry& instance();

  /// Adds an entry; a duplicate key is a programming error and throws std::logic_error.
  void add(const KernelKey& key, KernelFn fn);

  /// The kernel for `key`; throws Unsupported naming the key when there is none.
  template <class Fn>
  Fn find(const KernelKey& key) const {
    return std::get<Fn>(find_any(key));
  }

  bool contains(const KernelKey& key) const { return table_.count(key) != 0; }

 private:
  const KernelFn& find_any(const KernelKey& key) const;
  std::map<KernelKey, KernelFn> table_;
};

}  // namespace shortconv::detail

namespace shortconv::cpu {
void register_kernels(detail::Registry& registry);
}

namespace shortconv::cuda {
/// Adds the CUDA kernels; a no-op in builds without CUDA.
void register_kernels(detail::Registry& registry);
}
