#!/usr/bin/env bash
# Every GPU step in one call on a lent NVIDIA machine (see README "Testing on a GPU"):
# unpack the carried wheels (.devsite/wheels: numpy 2.4, hip-python, pytest), lay the package out
# as installed (kernels/ -> rocmstreams/kernels), build the HIP-on-CUDA libamdhip64.so, then run
# the suite on the cuda and hip backends and the demo on cuda, hip and cpu.
# Usage: bash tests/gpu/device_run.sh [pytest args...]; logs go to $OUT (or /tmp/out).
# BENCH=1 adds the benchmarks; BENCH_ONLY=1 runs only them (after the pytest args, if any, on cuda).
set -u
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-/tmp/out}; mkdir -p "$out"
mkdir -p /tmp/site
for w in "$repo"/.devsite/wheels/*.whl; do python3 -m zipfile -e "$w" /tmp/site; done
lay_out() {  # repo dir, target: the package as installed (kernels/ -> rocmstreams/kernels)
  rm -rf "$2" && mkdir -p "$2"
  cp -r "$1/rocmstreams" "$1/tests" "$1/benchmarks" "$2/"
  rm -rf "$2/rocmstreams/kernels" && cp -r "$1/kernels" "$2/rocmstreams/kernels"
}
lay_out "$repo" /tmp/src
export PYTHONPATH=/tmp/src:/tmp/site PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
nvidia-smi -L
python3 -c "import numpy, numba, numba.cuda, cuda.bindings, rocm.bindings.hip as h; print('numpy', numpy.__version__, 'numba', numba.__version__, 'cuda.bindings', cuda.bindings.__version__)"
bash "$repo/tests/hip_on_cuda/build.sh" /tmp/hiplib || echo "HIP-on-CUDA build FAILED"
cd /tmp/src
PYTEST_ARGS=("$@")
run_suite() {  # backend, extra env...
  local be=$1; shift
  echo "=== suite on $be ==="
  env "$@" ROCMSTREAMS_BACKEND=$be timeout 280 python3 -m pytest -q -p no:cacheprovider \
    -o timeout=90 -rfEs tests "${PYTEST_ARGS[@]}" > "$out/suite_$be.log" 2>&1
  echo "exit $?"; tail -n 25 "$out/suite_$be.log"
}
hipenv=(LD_LIBRARY_PATH=/tmp/hiplib:${LD_LIBRARY_PATH:-} ROCMSTREAMS_HIP_KERNELS=numba-cuda)
if [ "${BENCH_ONLY:-0}" = 1 ]; then  # benchmarks only; pytest args, if any, run first on cuda
  if [ ${#PYTEST_ARGS[@]} -gt 0 ]; then
    ROCMSTREAMS_BACKEND=cuda timeout 200 python3 -m pytest -q -p no:cacheprovider "${PYTEST_ARGS[@]}" 2>&1 | tail -n 15
  fi
else
for be in cuda hip cpu; do
  echo "=== demo on $be ==="
  if [ $be = hip ]; then env "${hipenv[@]}" ROCMSTREAMS_BACKEND=hip timeout 120 python3 -m rocmstreams demo
  else ROCMSTREAMS_BACKEND=$be timeout 120 python3 -m rocmstreams demo; fi
done 2>&1 | tee "$out/demos.txt"
if [ "${PER_FILE:-0}" = 1 ]; then  # one process per test file: a crash names its file
  echo "=== suite on cuda, file by file ==="
  for f in tests/test_*.py; do
    ROCMSTREAMS_BACKEND=cuda timeout 120 python3 -X faulthandler -m pytest -q -p no:cacheprovider \
      -o timeout=90 "$f" > "$out/file_$(basename "$f" .py).log" 2>&1
    echo "$(basename "$f"): exit $? $(tail -n 1 "$out/file_$(basename "$f" .py).log")"
  done
else
  run_suite cuda
fi
run_suite hip "${hipenv[@]}"
fi
# STRESS=1: tests/stress_harness.py at 10^5 operations on cuda and hip; SANITIZE=1:
# compute-sanitizer memcheck, racecheck and synccheck over the kernel tests on cuda.
if [ "${STRESS:-0}" = 1 ]; then
  for be in cuda hip; do
    echo "=== stress on $be ==="
    if [ $be = hip ]; then env "${hipenv[@]}" ROCMSTREAMS_BACKEND=hip timeout 240 python3 tests/stress_harness.py --ops 100000
    else ROCMSTREAMS_BACKEND=cuda timeout 240 python3 tests/stress_harness.py --ops 100000; fi
    echo "exit $?"
  done
fi
if [ "${SANITIZE:-0}" = 1 ]; then
  for tool in memcheck racecheck synccheck; do
    echo "=== compute-sanitizer --tool $tool (cuda) ==="
    ROCMSTREAMS_BACKEND=cuda timeout 280 compute-sanitizer --tool $tool --print-limit 20 \
      python3 -m pytest -q -p no:cacheprovider tests/test_prepared_launch.py tests/test_ordering.py \
      tests/test_cross_stream.py tests/test_graph_capture.py 2>&1 | tail -n 6
  done
fi
# COMPARE=DIR: benchmarks/overhead.py of the tree in DIR (an older commit, untracked copy) and
# of this one, alternating twice, then both side by side (benchmarks/compare_overhead.py).
if [ -n "${COMPARE:-}" ]; then
  lay_out "$repo/$COMPARE" /tmp/old
  for round in 1 2; do
    for side in old new; do
      src=/tmp/src; [ $side = old ] && src=/tmp/old
      echo "=== overhead.py, $side tree, round $round ==="
      (cd $src && PYTHONPATH=$src:/tmp/site ROCMSTREAMS_BACKEND=cuda timeout 240 python3 \
        benchmarks/overhead.py --json "$out/overhead_${side}_$round.json" \
        > "$out/overhead_${side}_$round.txt" 2>&1; echo "exit $?")
    done
  done
  python3 /tmp/src/benchmarks/compare_overhead.py "$out"/overhead_old_*.json -- \
    "$out"/overhead_new_*.json | tee "$out/compare.txt"
fi
# BENCH=1: the benchmarks too (benchmarks/README.md), tables on stdout, JSON in $OUT.
if [ "${BENCH:-0}" = 1 ] || [ "${BENCH_ONLY:-0}" = 1 ]; then
  export ROCMSTREAMS_BACKEND=cuda
  echo "=== benchmarks/overhead.py (cuda) ==="
  timeout 300 python3 benchmarks/overhead.py --json "$out/overhead.json" > "$out/overhead.txt" 2>&1
  echo "exit $?"; sed -n '/^targets/,$p' "$out/overhead.txt"
  echo "=== benchmarks/staged_copies.py ==="
  timeout 200 python3 benchmarks/staged_copies.py --json "$out/staged_copies.json" > "$out/staged_copies.txt" 2>&1
  echo "exit $?"; tail -n 30 "$out/staged_copies.txt"
  echo "=== benchmarks/pipeline.py ==="
  timeout 200 python3 benchmarks/pipeline.py --json "$out/pipeline.json" > "$out/pipeline.txt" 2>&1
  echo "exit $?"; tail -n 30 "$out/pipeline.txt"
fi
