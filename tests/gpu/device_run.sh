#!/usr/bin/env bash
# Every GPU step in one call on a lent NVIDIA machine (see README "Testing on a GPU"):
# unpack the carried wheels (.devsite/wheels: numpy 2.4, hip-python, pytest), lay the package out
# as installed (kernels/ -> rocmstreams/kernels), build the HIP-on-CUDA libamdhip64.so, then run
# the suite on the cuda and hip backends and the demo on cuda, hip and cpu.
# Usage: bash tests/gpu/device_run.sh [pytest args...]; logs go to $OUT (or /tmp/out).
# The cuda and hip suites run side by side (SERIAL=1: one after the other), then
# tests/test_model_based.py on each (MODEL=0 leaves it out; MODEL_EXAMPLES, default 10).
# The compiled hot calls are built in place (gcc + the Python headers); NATIVE=0 leaves them
# out, NATIVE_OFF=1 runs the cuda suite once more with them turned off (ROCMSTREAMS_NATIVE_CALLS=0).
# BENCH=1 adds the benchmarks; BENCH_ONLY=1 runs only them (after the pytest args, if any, on cuda).
# STRESS, SANITIZE (SANITIZERS picks tools), PROBE, NOTEBOOKS, COMPARE (with ROUNDS): see each
# step below (SANITIZE_ARGS: extra pytest args there). SUITES=0 leaves the two suites out
# (EXTRA_TESTS="paths" then runs those test files alone on cuda and hip).
set -u
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-/tmp/out}; mkdir -p "$out"
mkdir -p /tmp/site
for w in "$repo"/.devsite/wheels/*.whl; do python3 -m zipfile -e "$w" /tmp/site; done
lay_out() {  # repo dir, target: the package as installed (kernels/ -> rocmstreams/kernels)
  rm -rf "$2" && mkdir -p "$2"
  cp -r "$1/rocmstreams" "$1/tests" "$1/benchmarks" "$2/"
  for f in README.md pyproject.toml notebooks docs; do [ -e "$1/$f" ] && cp -r "$1/$f" "$2/"; done
  rm -rf "$2/rocmstreams/kernels" && cp -r "$1/kernels" "$2/rocmstreams/kernels"
  build_native "$2"
}
build_native() {  # target: the compiled hot calls built in place, as pip install does (optional)
  local src="$1/rocmstreams/backends/native_calls.c"
  [ -f "$src" ] || { echo "native calls: $1 has none (an older tree)"; return 0; }
  local inc suffix
  inc=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  suffix=$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
  rm -f "$1"/rocmstreams/backends/native_calls.*.so
  if [ "${NATIVE:-1}" = 0 ]; then
    echo "native calls: NOT BUILT in $1 (NATIVE=0): every call through the Python bindings"
  elif gcc -O2 -Wall -shared -fPIC -I"$inc" -o "$1/rocmstreams/backends/native_calls$suffix" \
      "$src" 2> "$out/native_build.log"; then
    echo "native calls: BUILT in $1 ($(basename "$1"/rocmstreams/backends/native_calls*.so))"
  else
    echo "native calls: BUILD FAILED in $1 (the Python path runs): $(tail -n 3 "$out/native_build.log")"
  fi
}
lay_out "$repo" /tmp/src
export PYTHONPATH=/tmp/src:/tmp/site PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
nvidia-smi -L
python3 -c "import numpy, numba, numba.cuda, cuda.bindings, rocm.bindings.hip as h; print('numpy', numpy.__version__, 'numba', numba.__version__, 'cuda.bindings', cuda.bindings.__version__)"
(cd /tmp/src && ROCMSTREAMS_BACKEND=cuda python3 -m rocmstreams info | grep "native calls")
bash "$repo/tests/hip_on_cuda/build.sh" /tmp/hiplib || echo "HIP-on-CUDA build FAILED"
cd /tmp/src
PYTEST_ARGS=("$@")
run_suite() {  # backend, extra env...: the suite but the model-based module (run on its own below)
  local be=$1; shift
  env "$@" ROCMSTREAMS_BACKEND=$be timeout ${SUITE_TIMEOUT:-400} python3 -m pytest -q \
    -p no:cacheprovider -o timeout=90 -rfEs --tb=short --durations=12 \
    --ignore=tests/test_model_based.py tests "${PYTEST_ARGS[@]}" > "$out/suite_$be.log" 2>&1
  echo "=== suite on $be: exit $? ==="; grep -v "^  warn(errors\|NumbaPerformanceWarning" \
    "$out/suite_$be.log" | tail -n ${TAIL:-45}
}
run_model() {  # backend, extra env...: tests/test_model_based.py, ROCMSTREAMS_MODEL_EXAMPLES=10
  local be=$1; shift
  env "$@" ROCMSTREAMS_BACKEND=$be ROCMSTREAMS_MODEL_EXAMPLES=${MODEL_EXAMPLES:-10} \
    ROCMSTREAMS_MODEL_SHRINK=${MODEL_SHRINK:-0} \
    timeout ${MODEL_TIMEOUT:-200} python3 -m pytest -q -p no:cacheprovider -rfE --tb=short -v \
    -o faulthandler_timeout=$(( ${MODEL_TIMEOUT:-200} - 40 )) --durations=5 \
    -W ignore::numba.core.errors.NumbaPerformanceWarning tests/test_model_based.py \
    > "$out/model_$be.log" 2>&1
  echo "=== model-based on $be: exit $? ==="; tail -n 30 "$out/model_$be.log"
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
if [ "${SUITES:-1}" = 0 ]; then  # SUITES=0: no suites (the model-based run and extras only)
  echo "=== suites left out (SUITES=0) ==="
  if [ -n "${EXTRA_TESTS:-}" ]; then  # EXTRA_TESTS="paths...": those alone, on cuda and hip
    for be in cuda hip; do
      echo "=== $EXTRA_TESTS on $be ==="
      env $([ $be = hip ] && echo "${hipenv[@]}") ROCMSTREAMS_BACKEND=$be timeout 200 python3 -m \
        pytest -q -p no:cacheprovider -o timeout=90 -rfE --tb=short $EXTRA_TESTS \
        > "$out/extra_$be.log" 2>&1
      echo "exit $?"; tail -n 15 "$out/extra_$be.log"
    done
  fi
elif [ "${PER_FILE:-0}" = 1 ]; then  # one process per test file: a crash names its file
  echo "=== suite on cuda, file by file ==="
  for f in tests/test_*.py; do
    ROCMSTREAMS_BACKEND=cuda timeout 120 python3 -X faulthandler -m pytest -q -p no:cacheprovider \
      -o timeout=90 "$f" > "$out/file_$(basename "$f" .py).log" 2>&1
    echo "$(basename "$f"): exit $? $(tail -n 1 "$out/file_$(basename "$f" .py).log")"
  done
  run_suite hip "${hipenv[@]}"
elif [ "${SERIAL:-0}" = 1 ]; then
  run_suite cuda; run_suite hip "${hipenv[@]}"
else  # the two suites side by side (one GPU, 16 cores): half the wall time
  run_suite cuda > /tmp/suite_cuda.tail & run_suite hip "${hipenv[@]}" > /tmp/suite_hip.tail
  wait; cat /tmp/suite_cuda.tail /tmp/suite_hip.tail
fi
if [ "${MODEL:-1}" = 1 ]; then
  run_model cuda > /tmp/model_cuda.tail & run_model hip "${hipenv[@]}" > /tmp/model_hip.tail
  wait; cat /tmp/model_cuda.tail /tmp/model_hip.tail
fi
if [ "${NATIVE_OFF:-0}" = 1 ]; then  # the cuda suite once more, the compiled hot calls off
  ROCMSTREAMS_NATIVE_CALLS=0 ROCMSTREAMS_BACKEND=cuda timeout ${SUITE_TIMEOUT:-400} python3 -m \
    pytest -q -p no:cacheprovider -o timeout=90 -rfEs --tb=short \
    --ignore=tests/test_model_based.py tests "${PYTEST_ARGS[@]}" > "$out/suite_cuda_native_off.log" 2>&1
  echo "=== suite on cuda, compiled calls off: exit $? ==="; tail -n ${TAIL:-45} "$out/suite_cuda_native_off.log"
fi
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
  for tool in ${SANITIZERS:-memcheck racecheck synccheck}; do
    echo "=== compute-sanitizer --tool $tool (cuda) ==="
    ROCMSTREAMS_BACKEND=cuda timeout ${SANITIZE_TIMEOUT:-280} compute-sanitizer --tool $tool --print-limit 20 \
      --report-api-errors no \
      python3 -m pytest -q -p no:cacheprovider tests/test_prepared_launch.py tests/test_ordering.py \
      tests/test_cross_stream.py tests/test_graph_capture.py ${SANITIZE_ARGS:-} > "$out/sanitize_$tool.log" 2>&1
    echo "exit $?"; grep -v "^=========     \|^    warn(\|NumbaPerformanceWarning" "$out/sanitize_$tool.log" | tail -n 25
  done
fi
# PROBE=1: where a kernel's first launch waits for the device (tests/gpu/first_launch_probe.py).
if [ "${PROBE:-0}" = 1 ]; then
  echo "=== first-launch probe (cuda, then hip) ==="
  ROCMSTREAMS_BACKEND=cuda timeout 120 python3 tests/gpu/first_launch_probe.py 2>&1 | grep -v "warn(\|NumbaPerf"
  env "${hipenv[@]}" ROCMSTREAMS_BACKEND=hip timeout 120 python3 tests/gpu/first_launch_probe.py 2>&1 | grep -v "warn(\|NumbaPerf"
fi
# NOTEBOOKS=1: the notebooks executed on cuda with their outputs and plots, in $OUT/notebooks.tar
# (tests/gpu/run_notebooks.py; the image has matplotlib but no Jupyter kernel).
if [ "${NOTEBOOKS:-0}" = 1 ]; then
  echo "=== notebooks on cuda ==="
  rm -rf /tmp/nb && mkdir -p /tmp/nb
  for nb in notebooks/*.ipynb; do
    ROCMSTREAMS_BACKEND=cuda timeout 120 python3 tests/gpu/run_notebooks.py /tmp/nb "$nb" 2>&1 | tail -n 3
  done
  python3 - <<'PY'
import json, glob
for p in sorted(glob.glob("/tmp/nb/*.ipynb")):
    for c in json.load(open(p))["cells"]:
        for o in c.get("outputs", []):
            if o.get("output_type") == "stream":
                print(p.split("/")[-1], "|", o["text"].strip()[:300])
PY
  tar -C /tmp/nb -cf "$out/notebooks.tar" .
fi
# COMPARE=DIR: benchmarks/overhead.py of the tree in DIR (an older commit, untracked copy) and
# of this one, alternating twice, then both side by side (benchmarks/compare_overhead.py).
if [ -n "${COMPARE:-}" ]; then
  lay_out "$repo/$COMPARE" /tmp/old
  for round in $(seq 1 ${ROUNDS:-2}); do
    for side in old new; do
      src=/tmp/src; [ $side = old ] && src=/tmp/old
      echo "=== overhead.py, $side tree, round $round ==="
      (cd $src && PYTHONPATH=$src:/tmp/site ROCMSTREAMS_BACKEND=cuda timeout 240 python3 \
        benchmarks/overhead.py --json "$out/overhead_${side}_$round.json" \
        > "$out/overhead_${side}_$round.txt" 2>/dev/null; echo "exit $?")
    done
  done
  python3 /tmp/src/benchmarks/compare_overhead.py "$out"/overhead_old_*.json -- \
    "$out"/overhead_new_*.json | tee "$out/compare.txt"
fi
# BENCH=1: the benchmarks too (benchmarks/README.md), tables on stdout, JSON in $OUT;
# BENCHES picks some of them (default "overhead staged pipeline"; also alloc_mixed and
# overhead_hip, overhead.py on the hip backend; ALLOC_OPS, ALLOC_ARGS: alloc_mixed.py options).
if [ "${BENCH:-0}" = 1 ] || [ "${BENCH_ONLY:-0}" = 1 ]; then
  export ROCMSTREAMS_BACKEND=cuda
  for b in ${BENCHES:-overhead staged pipeline}; do
    case $b in
      overhead)
        echo "=== benchmarks/overhead.py (cuda) ==="
        timeout 300 python3 benchmarks/overhead.py --json "$out/overhead.json" > "$out/overhead.txt" 2>/dev/null
        echo "exit $?"; sed -n '/^targets/,$p' "$out/overhead.txt" ;;
      overhead_hip)  # the same on the hip backend (HIP-on-CUDA): rocmstreams' rows beside
        echo "=== benchmarks/overhead.py (hip) ==="
        env "${hipenv[@]}" ROCMSTREAMS_BACKEND=hip timeout 300 python3 benchmarks/overhead.py \
          --json "$out/overhead_hip.json" > "$out/overhead_hip.txt" 2>/dev/null
        echo "exit $?"; sed -n '/^launch (one/,/^stream create/p' "$out/overhead_hip.txt" ;;
      staged)
        echo "=== benchmarks/staged_copies.py ==="
        timeout 200 python3 benchmarks/staged_copies.py --json "$out/staged_copies.json" > "$out/staged_copies.txt" 2>/dev/null
        echo "exit $?"; tail -n 30 "$out/staged_copies.txt" ;;
      alloc_mixed)
        echo "=== benchmarks/alloc_mixed.py ==="
        timeout ${ALLOC_TIMEOUT:-400} python3 benchmarks/alloc_mixed.py --ops ${ALLOC_OPS:-1000000} ${ALLOC_ARGS:-} --json "$out/alloc_mixed.json" > "$out/alloc_mixed.txt" 2>/dev/null
        echo "exit $?"; tail -n 30 "$out/alloc_mixed.txt" ;;
      pipeline)
        echo "=== benchmarks/pipeline.py ==="
        timeout 200 python3 benchmarks/pipeline.py --json "$out/pipeline.json" > "$out/pipeline.txt" 2>/dev/null
        echo "exit $?"; tail -n 40 "$out/pipeline.txt" ;;
    esac
  done
fi
# At most 8 files come back from $OUT: everything but the notebooks goes into one logs.tgz.
(cd "$out" && ls | grep -v '^notebooks.tar$' > /tmp/outfiles && [ -s /tmp/outfiles ] && \
  tar -czf /tmp/logs.tgz -T /tmp/outfiles && xargs rm -f < /tmp/outfiles && mv /tmp/logs.tgz .)
