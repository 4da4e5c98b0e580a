#!/usr/bin/env bash
# The copy benchmarks on a lent NVIDIA machine, in one call: the staged-copy and benchmark tests
# on the cuda backend, then benchmarks/staged_copies.py and benchmarks/pipeline.py.
# Same setup as tests/gpu/device_run.sh: wheels in .devsite/wheels (numpy 2.4, pytest) unpacked
# to /tmp/site when present, the package laid out as installed under /tmp/src.
# Usage: bash benchmarks/device_run.sh; tables on stdout, logs and JSON in $OUT (or /tmp/out).
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-/tmp/out}; mkdir -p "$out"
mkdir -p /tmp/site
for w in "$repo"/.devsite/wheels/*.whl; do [ -e "$w" ] && python3 -m zipfile -e "$w" /tmp/site; done
rm -rf /tmp/src && mkdir -p /tmp/src
cp -r "$repo/rocmstreams" "$repo/tests" "$repo/benchmarks" /tmp/src/
cp -r "$repo/kernels" /tmp/src/rocmstreams/kernels
export PYTHONPATH=/tmp/src:/tmp/site PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export ROCMSTREAMS_BACKEND=cuda
cd /tmp/src
nvidia-smi -L; nproc
python3 -c "import numpy, numba, numba.cuda, cuda.bindings; print('numpy', numpy.__version__, 'numba', numba.__version__, 'cuda.bindings', cuda.bindings.__version__)"
echo "=== tests on cuda: staged copies, memory, benchmark smoke ==="
timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_staged_copies.py \
  tests/test_memory.py tests/test_benchmarks_smoke.py > "$out/tests_cuda.log" 2>&1
echo "exit $?"; tail -n 15 "$out/tests_cuda.log"
echo "=== benchmarks/staged_copies.py ==="
timeout 200 python3 benchmarks/staged_copies.py --json "$out/staged_copies.json" 2>&1 \
  | tee "$out/staged_copies.txt"
echo "=== benchmarks/pipeline.py ==="
timeout 200 python3 benchmarks/pipeline.py --json "$out/pipeline.json" 2>&1 | tee "$out/pipeline.txt"
