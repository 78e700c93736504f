// Exception types thrown by the shortconv C++ API. No library code exits or aborts.
#pragma once

#include <stdexcept>
#include <string>

namespace shortconv {

/// Base of every shortconv exception; catch this to catch them all.
class Error {
 public:
  virtual ~Error() = default;
  virtual const char* what() const noexcept = 0;
};

/// Bad input: shapes, dtypes, devices, strides, aliasing, sizes. Nothing was written.
class InvalidArgument : public std::invalid_argument, public Error {
 public:
  explicit InvalidArgument(const std::string& msg) : std::invalid_argument(msg) {}
  const char* what() const noexcept override { return std::invalid_argument::what(); }
};

/// A valid request that this build has no kernel for (backend, op, dtype, variant).
class Unsupported : public std::runtime_error, public Error {
 public:
  explicit Unsupported(const std::string& msg) : std::runtime_error(msg) {}
  const char* what() const noexcept override { return std::runtime_error::what(); }
};

/// A failure reported by a device runtime (out of memory, launch failure, no device).
class DeviceError : public std::runtime_error, public Error {
 public:
  explicit DeviceError(const std::string& msg) : std::runtime_error(msg) {}
  const char* what() const noexcept override { return std::runtime_error::what(); }
};

}  // namespace shortconv
