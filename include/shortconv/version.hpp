// Library version and build configuration.
#pragma once

namespace shortconv {

inline constexpr int kVersionMajor = 0;
inline constexpr int kVersionMinor = 1;
inline constexpr int kVersionPatch = 0;

/// True when the library was built with the CUDA backend.
bool built_with_cuda() noexcept;

}  // namespace shortconv
