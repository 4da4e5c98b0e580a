#!/usr/bin/env bash
# An offline numba-hip 0.2.1 environment on Debian 12 without an AMD GPU (what
# tests/test_numba_hip_offline.py runs in). Usage:
#
#   bash tests/numba_hip_offline/setup.sh TARGET      # any directory, e.g. .venv/numba-hip
#   . TARGET/env.sh                                   # the variables it prints
#
# Makes, under TARGET: rocm/ (a ROCM_PATH tree of symlinks to Debian's ROCm 5.2 libraries and
# libclang 22, plus the two librocm_sysdeps shims built from z.c and zstd.c beside this script),
# venv/ (numba-hip==0.2.1, numpy<2.5, pytest; made with $PYTHON, default python3) and env.sh.
# Installs the Debian packages first (apt-get; needs root or sudo). Idempotent: a step whose
# result is already there is skipped, so a second run takes about a second.
#
# Debian 12's comgr is 2.4 (ROCm 5.2): numba-hip imports, types and lowers with it, but compiling
# to linked AMDGPU IR or a code object needs comgr 3 (see the test module's docstring).
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 TARGET_DIRECTORY" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
target=$(cd "$1" && pwd)
started=$SECONDS
say() { echo "[numba-hip-offline] $*" >&2; }

# ---- 1. Debian packages ------------------------------------------------------------------------
command -v dpkg-query >/dev/null || { say "needs Debian 12 (dpkg and apt-get)"; exit 1; }
debs=(libamd-comgr2 libhiprtc-builtins5 libamdhip64-5 libclang1-22 libclang-common-22-dev
      zlib1g-dev libzstd-dev gcc libc6-dev python3-venv)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo -n); else
    say "not root and no sudo: run as root: apt-get install -y ${missing[*]}"; exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

deb_lib() {  # package, library name pattern: the path of the library that package installed
  local found
  found=$(dpkg-query -L "$1" | grep -E "/$2\$" | head -n 1)
  [ -n "$found" ] || { say "package $1 installed no file matching $2"; exit 1; }
  echo "$found"
}
comgr=$(deb_lib libamd-comgr2 'libamd_comgr\.so\.[0-9.]+')
hiprtc_builtins=$(deb_lib libhiprtc-builtins5 'libhiprtc-builtins\.so\.[0-9.]+')
amdhip=$(deb_lib libamdhip64-5 'libamdhip64\.so\.[0-9.]+')
libclang=$(deb_lib libclang1-22 'libclang-22\.so\.[0-9.]+')
clang_resource=/usr/lib/llvm-22/lib/clang/22
[ -d "$clang_resource/include" ] || { say "no clang resource headers in $clang_resource"; exit 1; }

# ---- 2. the ROCM_PATH tree and the two shims ---------------------------------------------------
rocm=$target/rocm
sysdeps=$rocm/lib/rocm_sysdeps/lib
mkdir -p "$sysdeps" "$rocm/llvm/lib/clang"
for shim in z zstd; do
  lib=$sysdeps/librocm_sysdeps_$shim.so.1
  if [ ! -e "$lib" ] || [ "$here/$shim.c" -nt "$lib" ] || [ "$here/v.map" -nt "$lib" ]; then
    say "building $(basename "$lib")"
    gcc -O2 -fPIC -shared -o "$lib" -Wl,-soname,"$(basename "$lib")" \
      -Wl,--version-script="$here/v.map" "$here/$shim.c" -ldl
  fi
done
ln -sfn "$comgr" "$rocm/lib/libamd_comgr.so"
ln -sfn "$hiprtc_builtins" "$rocm/lib/libhiprtc-builtins.so"
ln -sfn "$amdhip" "$rocm/lib/libamdhip64.so"
ln -sfn "$libclang" "$rocm/llvm/lib/libclang.so"
ln -sfn "$clang_resource" "$rocm/llvm/lib/clang/22"
ln -sfn /usr/include "$rocm/include"

# ---- 3. the virtual environment ----------------------------------------------------------------
reqs=("numba-hip==0.2.1" "numpy<2.5" "pytest>=8")
venv=$target/venv
stamp=$venv/.rocmstreams-requirements
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${reqs[*]}" ]; then
  say "creating $venv with ${reqs[*]} (log: $target/pip.log)"
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv"
  if ! "$venv/bin/pip" install --disable-pip-version-check "${reqs[@]}" >"$target/pip.log" 2>&1
  then
    tail -n 20 "$target/pip.log" >&2; say "pip could not install ${reqs[*]}"; exit 1
  fi
  echo "${reqs[*]}" > "$stamp"
fi

# ---- 4. the variables --------------------------------------------------------------------------
cat > "$target/env.sh" <<EOF
export ROCM_PATH=$rocm
export LD_LIBRARY_PATH=$sysdeps\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export NUMBA_HIP_LIBCLANG_FILE=$rocm/llvm/lib/libclang.so
export ROCMSTREAMS_NUMBA_HIP_OFFLINE=$target
export PATH=$venv/bin:\$PATH
EOF
# numba-hip imports in a fresh process: the check that everything above fits together
. "$target/env.sh"
if ! out=$("$venv/bin/python" -c "import numba.hip as h; print(h.__file__)" 2>&1); then
  say "numba-hip does not import in $target:"; echo "$out" >&2; exit 1
fi
say "ready in $((SECONDS - started)) s; use it with: . $target/env.sh"
cat "$target/env.sh"
