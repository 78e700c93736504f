#!/usr/bin/env bash
# Installs the Debian packages shortconv needs to build and test, skipping those already present.
# Runs as root (CI and the dev machines) or through sudo when available.
set -euo pipefail
packages=(cmake ninja-build g++ make libgtest-dev libcli11-dev libopenblas-dev python3)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all present"
  exit 0
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
