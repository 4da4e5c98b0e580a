#!/usr/bin/env bash
# Build the HIP-on-CUDA shim (test infrastructure only): OUTDIR/libamdhip64.so over the CUDA runtime.
# Usage: tests/hip_on_cuda/build.sh OUTDIR      (CUDA_HOME defaults to /usr/local/cuda)
set -euo pipefail
out="${1:?usage: build.sh OUTDIR}"
cuda="${CUDA_HOME:-/usr/local/cuda}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$out"
gcc -O2 -Wall -Wextra -shared -fPIC -o "$out/libamdhip64.so" "$here/hip_on_cuda.c" \
    -I"$cuda/include" -L"$cuda/lib64" -Wl,-rpath,"$cuda/lib64" -lcudart -ldl
echo "$out/libamdhip64.so"
