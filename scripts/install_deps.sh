#!/usr/bin/env bash
# Installs the Debian packages shortconv needs to build and test, skipping those already present.
#   scripts/install_deps.sh [--fuzz]    (--fuzz: only what tests/fuzz/run_fuzz.sh needs)
# Runs as root (CI and the dev machines) or through sudo when available.
set -euo pipefail
packages=(cmake ninja-build g++ make libgtest-dev libcli11-dev libopenblas-dev python3)
if [ "${1:-}" = "--fuzz" ]; then
  # clang, its libFuzzer runtime and its OpenMP (CMake's configure looks for it with any compiler),
  # for tests/fuzz/run_fuzz.sh: present when a fuzz target links and an OpenMP program builds.
  fuzz_links() {
    command -v clang++ >/dev/null &&
      echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }' |
      clang++ -fsanitize=fuzzer,address,undefined -x c++ - -o /dev/null 2>/dev/null &&
      printf '#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n' |
      clang++ -fopenmp -x c++ - -o /dev/null 2>/dev/null
  }
  fuzz_links && { echo "install_deps: clang, libFuzzer and OpenMP present"; exit 0; }
  packages=(clang libomp-dev)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ] && [ "${1:-}" != "--fuzz" ]; then
  echo "install_deps: all present"
  exit 0
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  echo "install_deps: installing ${missing[*]}"
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "${1:-}" = "--fuzz" ] && ! fuzz_links; then
  # The libFuzzer runtime is its own package on Debian 12+ and Ubuntu 23.04+ (part of
  # libclang-common-*-dev, which clang pulls in, before).
  echo "install_deps: installing libclang-rt-dev"
  $sudo apt-get install -y -qq --no-install-recommends libclang-rt-dev >/dev/null
  fuzz_links || { echo "install_deps: clang++ still cannot build a fuzz target or an OpenMP program"; exit 1; }
fi
