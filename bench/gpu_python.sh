#!/usr/bin/env bash
# One call on the GPU machine: install the Python package, run its test suite, then the Python
# benchmark (bench/python_bench.py, shortconv from torch against F.conv1d).
#   bench/gpu_python.sh [install|test|bench|all]...   (default: all)
# The machine has no internet: the package is built without build isolation and without an index,
# so scikit-build-core, nanobind, cmake and ninja must already be installed there (checked first).
# Logs go to $OUT (the device tool's result folder) or ./gpu_out. PYTEST_ARGS is added to the
# pytest line (e.g. PYTEST_ARGS="-k cupy"), BENCH_ARGS to python_bench.py (e.g. --quick).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=${OUT:-$PWD/gpu_out}
mkdir -p "$out"
stages=${*:-all}
has() { [[ " $stages " == *" $1 "* || " $stages " == *" all "* ]]; }
py=${PYTHON:-python3}
rc=0

# What the run depends on, in one block at the top of the log.
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -4
"$py" - <<'EOF'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("pip", "scikit_build_core", "nanobind", "cmake", "ninja", "numpy", "pytest", "torch", "cupy", "jax"):
    try:
        m = importlib.import_module(name)
        extra = ""
        if name == "torch":
            extra = f" (cuda {m.version.cuda}, available {m.cuda.is_available()})"
        print(f"  {name} {getattr(m, '__version__', '?')}{extra}")
    except Exception as e:  # noqa: BLE001 - report any import failure, never stop here
        print(f"  {name}: not importable ({type(e).__name__})")
EOF

if has install; then
  # --no-build-isolation uses the build requirements already installed; name the missing ones
  # instead of letting pip fail later with an index error.
  missing=$("$py" -c '
import importlib.util as u
print(" ".join(n for n in ("scikit_build_core", "nanobind") if u.find_spec(n) is None))')
  if [ -n "$missing" ]; then
    echo "install: FAILED: build requirements not installed: $missing (pip cannot fetch them offline)"
    exit 1
  fi
  start=$SECONDS
  if "$py" -m pip install -v --no-build-isolation --no-index --root-user-action=ignore . >"$out/pip_install.log" 2>&1; then
    echo "install: ok ($((SECONDS - start)) s): $("$py" -c 'import shortconv as s; print(s.__version__, "built_with_cuda", s.built_with_cuda(), "gpus", s.cuda_device_count())' 2>&1)"
  else
    echo "install: FAILED after $((SECONDS - start)) s; the first errors, then the end of $out/pip_install.log:"
    grep -nE "error|Error|ERROR|CMake Error|No matching distribution" "$out/pip_install.log" | head -30
    echo "..."
    tail -25 "$out/pip_install.log"
    exit 1
  fi
fi

if has test; then
  # Run from the repository root: python/tests goes on sys.path, python/ does not, so
  # `import shortconv` is the installed package (with _C), not the source tree.
  # -rs lists every skip with its reason; no -x: the whole suite runs. faulthandler (on by
  # default in pytest) prints the Python stack if the interpreter crashes.
  # shellcheck disable=SC2086  # PYTEST_ARGS is a word list
  "$py" -m pytest -q -rs -p no:cacheprovider python/tests ${PYTEST_ARGS:-} 2>&1 | tee "$out/pytest.log"
  t=${PIPESTATUS[0]}
  summary=$(grep -E "^=* ?[0-9]+ (passed|failed|errors?|skipped|deselected)|no tests ran" "$out/pytest.log" | tail -1)
  if [ "$t" -gt 128 ]; then
    echo "pytest: KILLED by signal $((t - 128)) (the crash's stack is above); last summary: ${summary:-none}"
  else
    echo "pytest summary (exit $t): ${summary:-no summary line}"
  fi
  [ "$t" -ne 0 ] && rc=$t
fi

if has bench; then
  if [ ! -f bench/python_bench.py ]; then
    echo "bench: bench/python_bench.py not present, skipped"
  elif ! "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "bench: skipped: torch with CUDA is not importable"
  else
    # shellcheck disable=SC2086  # BENCH_ARGS is a word list
    "$py" bench/python_bench.py --out "$out/python_bench.md" ${BENCH_ARGS:-} 2>&1 | tee "$out/python_bench.log"
    t=${PIPESTATUS[0]}; [ "$t" -ne 0 ] && rc=$t
  fi
fi
exit "$rc"
