// Where a tensor lives and where an op runs.
#pragma once

#include <string>
#include <string_view>

namespace shortconv {

enum class DeviceType : unsigned char { cpu, cuda };

struct Device {
  DeviceType type = DeviceType::cpu;
  int index = 0;  // CUDA ordinal; always 0 for the CPU

  static constexpr Device cpu() noexcept { return {DeviceType::cpu, 0}; }
  static constexpr Device cuda(int index = 0) noexcept { return {DeviceType::cuda, index}; }

  constexpr bool is_cpu() const noexcept { return type == DeviceType::cpu; }
  constexpr bool is_cuda() const noexcept { return type == DeviceType::cuda; }
  friend constexpr bool operator==(const Device&, const Device&) = default;

  /// "cpu" or "cuda:N".
  std::string str() const;
};

/// Parses "cpu", "cuda" or "cuda:N"; throws InvalidArgument otherwise.
Device parse_device(std::string_view name);

/// True when this build has the CUDA backend and at least one GPU is visible.
bool cuda_available() noexcept;

/// Number of visible GPUs (0 without the CUDA backend or a driver).
int cuda_device_count() noexcept;

/// The CUDA device when one is available, otherwise the CPU.
Device default_device() noexcept;

}  // namespace shortconv
