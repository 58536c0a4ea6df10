#!/usr/bin/env bash
# cuda_env.sh - the CUDA and NCCL settings for a GPU (NCCL) build of Horovod, printed as
# `export NAME=value` lines for scripts/setup.sh to source.
#
#   scripts/horovod/cuda_env.sh PYTHON STACK_FILE
#
# Two sources, chosen by what the caller sets:
#
# 1. The site's toolkit (the usual cluster path, one consistent CUDA): set CUDA_HOME (or
#    HOROVOD_CUDA_HOME) to a CUDA 12.x toolkit, e.g. after `module load cuda/12.4`, and NCCL_HOME
#    (or HOROVOD_NCCL_HOME) to a NCCL install after `module load nccl`. Without NCCL_HOME the
#    NCCL wheel TensorFlow installed is used.
# 2. Pip alone (the default): everything comes from wheels in the venv, assembled into
#    $VENV/cuda-toolkit:
#      - TensorFlow's and-cuda extra brings the CUDA 12.9 runtime (headers, libcudart) and NCCL;
#      - nvcc: the CUDA 12 wheels ship ptxas only, so nvcc 13 comes from nvidia-cuda-nvcc,
#        nvidia-cuda-crt and nvidia-nvvm (installed into $VENV/cuda-build, outside site-packages),
#        with its own crt/ headers; cuda_fp16.h's <nv/target> comes from nvidia-cuda-cccl-cu12;
#      - NCCL ships libnccl.so.2 only: the toolkit gets a libnccl.so link, and Horovod links it
#        shared (HOROVOD_NCCL_LINK=SHARED).
#    Horovod's few kernels are then CUDA 13 code next to TensorFlow's CUDA 12.9: GPUs need an
#    R580 or newer driver, and CUDA 13 has no Volta (V100): V100 sites take path 1.
#
# Versions of the build wheels are pinned in the stack file (the `# gpu-build:` line names them).
# The compiler is always pinned: /usr/local/cuda or an nvcc on PATH is never picked up silently.
# Compute capabilities: HOROVOD_BUILD_CUDA_CC_LIST if set, else the data-centre GPUs the compiler
# supports (see default_cc_list).
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 PYTHON STACK_FILE" >&2; exit 2; }
PY=$(command -v "$1") || { echo "[cuda] error: $1 is not a Python interpreter" >&2; exit 1; }
STACK_FILE=$2
say() { echo "[cuda] $*" >&2; }
die() { echo "[cuda] error: $*" >&2; exit 1; }

VENV=$(cd "$(dirname "$PY")/.." && pwd)
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
NVIDIA=$SITE/nvidia

# default_cc_list NVCC_VERSION: compute capabilities of current data-centre GPUs that nvcc builds
#   70 V100 · 75 T4 · 80 A100/A30 · 86 A10/A40 · 89 L4/L40S · 90 H100/H200 · 100 B200/GB200 ·
#   120 RTX PRO 6000 Blackwell. CUDA 13 dropped 70; CUDA 12.8 added 100 and 120.
default_cc_list() {
  local major=${1%%.*} minor
  minor=${1#*.}; minor=${minor%%.*}
  if [ "$major" -ge 13 ]; then echo "75,80,86,89,90,100,120"
  elif [ "$major" -eq 12 ] && [ "$minor" -ge 8 ]; then echo "70,75,80,86,89,90,100,120"
  else echo "70,75,80,86,89,90"
  fi
}

# ---------------------------------------------------------------- what the caller set, checked first
cuda_home=${HOROVOD_CUDA_HOME:-${CUDA_HOME:-}}
nvcc_version() { "$1" --version | sed -n 's/.*release \([0-9][0-9.]*\).*/\1/p' | head -1; }
if [ -n "$cuda_home" ]; then
  [ -x "$cuda_home/bin/nvcc" ] || die "CUDA_HOME=$cuda_home has no bin/nvcc: point it at a CUDA toolkit (module load cuda/12.x), or unset it to build from pip wheels"
  site_version=$(nvcc_version "$cuda_home/bin/nvcc")
  # Horovod links the toolkit's libcudart; TensorFlow's wheels are CUDA 12: one CUDA major per process
  [ "${site_version%%.*}" = 12 ] || die "CUDA_HOME=$cuda_home is CUDA $site_version; TensorFlow's wheels use CUDA 12: load a CUDA 12.x toolkit (module load cuda/12.x), or unset CUDA_HOME to build from pip wheels"
fi

# ---------------------------------------------------------------- NCCL (both paths)
nccl_home=${HOROVOD_NCCL_HOME:-${NCCL_HOME:-}}
if [ -n "$nccl_home" ]; then
  nccl_include=$nccl_home/include nccl_lib=$nccl_home/lib
  [ -d "$nccl_lib" ] || nccl_lib=$nccl_home/lib64
  [ -f "$nccl_include/nccl.h" ] || die "NCCL_HOME=$nccl_home has no include/nccl.h: point it at a NCCL install (module load nccl)"
else
  [ -f "$NVIDIA/nccl/include/nccl.h" ] || die "no NCCL in $NVIDIA/nccl: install TensorFlow's and-cuda extra first (TF_PACKAGE='tensorflow[and-cuda]') or set NCCL_HOME"
  nccl_include=$NVIDIA/nccl/include nccl_lib=$VENV/cuda-toolkit/nccl-lib
  mkdir -p "$nccl_lib"
  ln -sfn "$NVIDIA/nccl/lib/libnccl.so.2" "$nccl_lib/libnccl.so.2"
  ln -sfn libnccl.so.2 "$nccl_lib/libnccl.so"   # the link the wheel leaves out; the SONAME stays .so.2
fi

# ---------------------------------------------------------------- CUDA toolkit
if [ -n "$cuda_home" ]; then
  say "site toolkit $cuda_home"
else
  # the build-only compiler wheels, pinned by the stack file, outside the venv's site-packages
  read -r -a build_wheels <<<"$(sed -n 's/^# gpu-build: *//p' "$STACK_FILE")"
  [ ${#build_wheels[@]} -gt 0 ] || die "$STACK_FILE has no '# gpu-build:' line naming the compiler wheels"
  build_dir=$VENV/cuda-build
  stamp=$(sha256sum "$STACK_FILE" | cut -c1-16)
  if [ "$(cat "$build_dir/.stamp" 2>/dev/null)" != "$stamp" ]; then
    say "installing ${build_wheels[*]} into $build_dir"
    rm -rf "$build_dir"
    "$PY" -m pip install -q --no-deps --target "$build_dir" -c "$STACK_FILE" "${build_wheels[@]}" \
      2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    echo "$stamp" > "$build_dir/.stamp"
  fi
  cu13=$(ls -d "$build_dir"/nvidia/cu1[3-9] 2>/dev/null | tail -1)
  [ -n "$cu13" ] && [ -x "$cu13/bin/nvcc" ] || die "no nvcc in $build_dir/nvidia/cu*/bin after installing ${build_wheels[*]}"
  runtime=$NVIDIA/cuda_runtime cccl=$build_dir/nvidia/cuda_cccl
  [ -f "$runtime/include/cuda_runtime.h" ] || die "no CUDA runtime headers in $runtime: install TensorFlow's and-cuda extra first"
  [ -f "$cccl/include/nv/target" ] || die "no <nv/target> in $cccl: nvidia-cuda-cccl-cu12 is missing"
  # The assembled toolkit: nvcc 13 with its nvvm and its own crt/ headers, CUDA 12.9 runtime headers
  # and libraries, cccl 12.9. All links: nvcc takes its root from the path it was called by.
  cuda_home=$VENV/cuda-toolkit
  rm -rf "$cuda_home/bin" "$cuda_home/include" "$cuda_home/lib64" "$cuda_home/nvvm"
  mkdir -p "$cuda_home/bin" "$cuda_home/include" "$cuda_home/lib64"
  for tool in "$cu13"/bin/*; do ln -sfn "$tool" "$cuda_home/bin/"; done
  for header in "$runtime"/include/* "$cccl"/include/*; do ln -sfn "$header" "$cuda_home/include/"; done
  ln -sfn "$cu13/nvvm" "$cuda_home/nvvm"   # nvcc looks for cicc in $(TOP)/nvvm, TOP being bin/..
  ln -sfn "$cu13/include/crt" "$cuda_home/include/crt"
  ln -sfn "$cu13/include/fatbinary_section.h" "$cuda_home/include/fatbinary_section.h"
  for lib in "$runtime"/lib/*; do ln -sfn "$lib" "$cuda_home/lib64/"; done
  ln -sfn libcudart.so.12 "$cuda_home/lib64/libcudart.so"
  ln -sfn lib64 "$cuda_home/lib"
  say "assembled $cuda_home: nvcc $(nvcc_version "$cuda_home/bin/nvcc") + CUDA runtime $("$PY" -c 'from importlib.metadata import version; print(version("nvidia-cuda-runtime-cu12"))') + NCCL $("$PY" -c 'from importlib.metadata import version; print(version("nvidia-nccl-cu12"))')"
fi
nvcc=$cuda_home/bin/nvcc
cc_list=${HOROVOD_BUILD_CUDA_CC_LIST:-$(default_cc_list "$(nvcc_version "$nvcc")")}

cat <<EOF
export HOROVOD_GPU_OPERATIONS=NCCL
export HOROVOD_NCCL_LINK=SHARED
export HOROVOD_NCCL_INCLUDE='$nccl_include'
export HOROVOD_NCCL_LIB='$nccl_lib'
export HOROVOD_CUDA_HOME='$cuda_home'
export CUDAToolkit_ROOT='$cuda_home'
export CUDACXX='$nvcc'
export HOROVOD_BUILD_CUDA_CC_LIST='$cc_list'
export PATH='$cuda_home/bin':"\$PATH"
EOF
