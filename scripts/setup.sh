#!/usr/bin/env bash
# setup.sh - idempotent set-up of mnist-hpc into a virtualenv, for one stack.
#
# Installs what is missing and nothing else:
#   1. build tools and MPI (Debian's Open MPI through apt-get when root on Debian/Ubuntu;
#      otherwise the `mpicc`, `cmake` and `g++` already on PATH, e.g. after `module load`),
#      and shellcheck for the tests (apt-get when root; otherwise a note),
#   2. the virtualenv, with the stack's Python,
#   3. the stack's pinned packages (stacks/$STACK.txt is a pip constraints file: the one place
#      exact versions live), mpi4py built against the MPI on PATH,
#   4. Horovod built from its sdist with TensorFlow + MPI + Gloo, patched as the stack says
#      (scripts/horovod/build.sh; the wheel is cached, so a second set-up does not rebuild),
#   5. this package (editable).
# Re-running it checks installed versions and `horovodrun --check-build` and rebuilds nothing.
# `setup.sh --check` makes the same checks and installs nothing: it lists what a set-up would do
# and exits 1, or says nothing is missing and exits 0.
#
# Knobs:
#   STACK       default (Python 3.12, TensorFlow 2.21 + tf-keras, patched Horovod) or
#               tf2.15 (Python 3.11, TensorFlow 2.15.1, Horovod as released)
#   PYTHON      the interpreter to use; else python3.12, else the newest other Python the stack
#               accepts, looked up on PATH and in pyenv ($PYENV_ROOT/versions)
#   VENV        default .venv for the default stack, .venv-$STACK for another
#   GPU=1       a GPU environment (default venv .venv-gpu): TensorFlow's and-cuda extra, and
#               Horovod built with NCCL all-reduce from the CUDA compiler, runtime and NCCL of
#               pip wheels, or the site's CUDA_HOME / NCCL_HOME (scripts/horovod/cuda_env.sh)
#   TF_PACKAGE  default tensorflow-cpu, or 'tensorflow[and-cuda]' with GPU=1
#   MNIST_HPC_SETUP_APT=0   never call apt-get
#   MNIST_HPC_WHEEL_CACHE   where built Horovod wheels are kept (default ~/.cache/mnist-hpc/wheels)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

STACK=${STACK:-default}
STACK_FILE=stacks/$STACK.txt
say() { echo "[setup] $*"; }
die() { echo "[setup] error: $*" >&2; exit 1; }
case "${1:-}" in
  "") CHECK=0 ;;
  --check) CHECK=1 ;;
  *) die "$1: unknown argument (allowed: --check, to check what is installed without installing anything)" ;;
esac
# would WHAT: with --check, what a set-up would do here, noted instead of done
planned=()
would() { planned+=("$*"); say "would $*"; }
# check_done: with --check, the verdict: nothing to install (0), or what a set-up would do (1)
check_done() {
  if [ ${#planned[@]} -eq 0 ]; then say "nothing to install: $VENV is complete for stack '$STACK'"; exit 0; fi
  say "a set-up would $(printf '%s; ' "${planned[@]}" | sed 's/; $//')"
  exit 1
}
[ -f "$STACK_FILE" ] || die "STACK=$STACK: no such stack (allowed: $(cd stacks && ls *.txt | sed 's/\.txt$//' | xargs))"
GPU=${GPU:-0}
case "$GPU" in 0|1) ;; *) die "GPU=$GPU: use GPU=1 for a GPU (NCCL) environment or GPU=0 for CPU only" ;; esac
suffix=$([ "$STACK" = default ] || echo "-$STACK")$([ "$GPU" = 0 ] || echo "-gpu")
VENV=${VENV:-.venv$suffix}
if [ "$GPU" = 1 ]; then TF_PACKAGE=${TF_PACKAGE:-tensorflow[and-cuda]}; else TF_PACKAGE=${TF_PACKAGE:-tensorflow-cpu}; fi

# stack_field KEY: the value of a `# KEY: value` line of the stack file
stack_field() { sed -n "s/^# $1: *//p" "$STACK_FILE" | head -1; }
# pin NAME: the version the stack file pins NAME to
pin() { sed -n "s/^$1==//p" "$STACK_FILE" | head -1; }
PYTHONS=$(stack_field python)          # accepted Python versions, preferred first
HOROVOD_PATCH=$(stack_field horovod-patch)
KERAS=$(stack_field keras)             # tf-keras: install it and use it as tf.keras; bundled: TF's own
HOROVOD_VERSION=$(pin horovod)
TF_VERSION=$(pin tensorflow)
[ -n "$PYTHONS" ] && [ -n "$HOROVOD_PATCH" ] && [ -n "$HOROVOD_VERSION" ] && [ -n "$TF_VERSION" ] \
  || die "$STACK_FILE lacks a '# python:' or '# horovod-patch:' line, or a horovod/tensorflow pin"

# ------------------------------------------------------------------ 1. MPI and build tools
apt_packages=()
command -v mpicc >/dev/null 2>&1 || apt_packages+=(libopenmpi-dev openmpi-bin)
command -v cmake >/dev/null 2>&1 || apt_packages+=(cmake)
command -v g++ >/dev/null 2>&1 || apt_packages+=(g++)
command -v patch >/dev/null 2>&1 || apt_packages+=(patch)
if [ ${#apt_packages[@]} -gt 0 ] && [ "$CHECK" = 1 ]; then
  would "install ${apt_packages[*]} (apt-get as root, else module load)"
elif [ ${#apt_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ "${MNIST_HPC_SETUP_APT:-1}" = 1 ]; then
    say "apt-get install ${apt_packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
  else
    die "missing ${apt_packages[*]}: on a cluster run e.g. 'module load openmpi cmake gcc' so that mpicc, cmake and g++ are on PATH (or install them as root: apt-get install libopenmpi-dev openmpi-bin cmake g++ patch)"
  fi
fi
# the tests lint every rendered sbatch script with shellcheck (tests/unit/test_site.py); jobs do not need it
if ! command -v shellcheck >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ "${MNIST_HPC_SETUP_APT:-1}" = 1 ]; then
    say "apt-get install shellcheck"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
  else
    say "note: shellcheck is missing; the tests need it (apt-get install shellcheck, or 'module load shellcheck'), jobs do not"
  fi
fi

# ------------------------------------------------------------------ 2. Python and the virtualenv
# py_version EXE: "3.12" if EXE runs, else nothing
py_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true; }
# find_python X.Y: an interpreter of that version on PATH or in pyenv (newest patch release)
find_python() {
  local candidate
  for candidate in "python$1" $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/python"$1" 2>/dev/null | sort -rV); do
    if [ "$(py_version "$candidate")" = "$1" ]; then command -v "$candidate"; return 0; fi
  done
  return 1
}
if [ -n "${PYTHON:-}" ]; then
  have=$(py_version "$PYTHON")
  [ -n "$have" ] || die "PYTHON=$PYTHON does not run: point it at a Python ${PYTHONS// /, } interpreter"
  [[ " $PYTHONS " == *" $have "* ]] || die "PYTHON=$PYTHON is Python $have; stack '$STACK' needs ${PYTHONS// / or } (set PYTHON to one of those, or leave it unset to look them up)"
else
  preferred=${PYTHONS%% *}
  others=$(tr ' ' '\n' <<<"${PYTHONS#"$preferred"}" | sort -rV | xargs)
  for want in $preferred $others; do
    PYTHON=$(find_python "$want") && break || PYTHON=
  done
  [ -n "$PYTHON" ] || die "no Python ${PYTHONS// /, } found on PATH or in pyenv: install one (e.g. apt-get install python3.12-venv, 'pyenv install 3.12', or 'module load python/3.12') or set PYTHON=/path/to/python3.12"
fi
want_version=$(py_version "$PYTHON")
if [ "$CHECK" = 1 ] && { [ ! -x "$VENV/bin/python" ] || [ "$(py_version "$VENV/bin/python")" != "$want_version" ]; }; then
  would "create $VENV with Python $want_version and install the whole stack into it"
  check_done
fi
if [ -x "$VENV/bin/python" ] && [ "$(py_version "$VENV/bin/python")" != "$want_version" ]; then
  say "$VENV has Python $(py_version "$VENV/bin/python"), stack '$STACK' wants $want_version: recreating it"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $PYTHON (Python $want_version)"
  "$PYTHON" -m venv "$VENV" || die "$PYTHON -m venv failed: install the venv module (e.g. apt-get install python$want_version-venv)"
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored: it is neither" || true
fi
PY="$VENV/bin/python"
# pip install with the stack's constraints, quiet; drops the warnings a pip config naming a
# missing local index prints per package
pip_install() {
  "$PY" -m pip install -q -c "$STACK_FILE" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

# has NAME ...: every named distribution is installed at the version the stack pins
has() {
  "$PY" - "$STACK_FILE" "$@" <<'PYEOF'
import re, sys
from importlib.metadata import version, PackageNotFoundError
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
pins = {norm(a): b for a, b in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", open(sys.argv[1]).read(), re.M)}
for name in sys.argv[2:]:
    try:
        have = version(name)
    except PackageNotFoundError:
        sys.exit(1)
    if norm(name) in pins and have != pins[norm(name)]:
        sys.exit(1)
PYEOF
}

# ------------------------------------------------------------------ 3. pinned stack
TF_DIST=${TF_PACKAGE%%[*}
keras_pkgs=()
[ "$KERAS" = tf-keras ] && keras_pkgs=(tf-keras)
gpu_pkgs=()
[ "$GPU" = 1 ] && gpu_pkgs=(nvidia-nccl-cu12 nvidia-cuda-runtime-cu12)
stack_pkgs=("$TF_DIST" "${keras_pkgs[@]}" "${gpu_pkgs[@]}" tensorboard numpy mpi4py submitit tomli-w pytest pytest-timeout
            hypothesis matplotlib)
if [ "$CHECK" = 1 ] && ! has "${stack_pkgs[@]}"; then
  would "install the pinned $TF_PACKAGE==$TF_VERSION ${keras_pkgs[*]}, mpi4py, submitit and the test tools"
elif [ "$CHECK" = 0 ] && ! has "${stack_pkgs[@]}"; then
  say "installing $TF_PACKAGE==$TF_VERSION ${keras_pkgs[*]}, mpi4py (against $(command -v mpicc)), submitit, pytest, matplotlib"
  pip_install "$TF_PACKAGE" "${keras_pkgs[@]}" tensorboard numpy
  pip_install --no-binary mpi4py mpi4py
  pip_install -e ".[test]"
fi

# ------------------------------------------------------------------ 4. horovod from source
horovod_ok() {
  has horovod || return 1
  local report
  report=$("$VENV/bin/horovodrun" --check-build 2>/dev/null) || return 1
  grep -q '\[X\] TensorFlow' <<<"$report" && grep -q '\[X\] MPI' <<<"$report" && grep -q '\[X\] Gloo' <<<"$report" \
    && { [ "$GPU" = 0 ] || grep -q '\[X\] NCCL' <<<"$report"; }
}
if [ "$CHECK" = 1 ] && ! horovod_ok; then
  if [ "$GPU" = 0 ] && wheel=$(bash scripts/horovod/build.sh "$PY" "$HOROVOD_VERSION" "$HOROVOD_PATCH" --cached 2>/dev/null); then
    would "install the cached Horovod wheel $wheel (no build)"
  else
    would "build Horovod $HOROVOD_VERSION from its sdist (about 4 minutes) and cache its wheel"
  fi
elif [ "$CHECK" = 0 ] && ! horovod_ok; then
  pip_install wheel packaging
  if [ "$GPU" = 1 ]; then  # HOROVOD_GPU_OPERATIONS=NCCL, HOROVOD_CUDA_HOME, HOROVOD_NCCL_*, the CC list
    cuda_settings=$(bash scripts/horovod/cuda_env.sh "$PY" "$STACK_FILE") || die "no CUDA/NCCL for the GPU build (see above)"
    eval "$cuda_settings"
    say "GPU build: nvcc $HOROVOD_CUDA_HOME/bin/nvcc, NCCL $HOROVOD_NCCL_LIB, compute capabilities $HOROVOD_BUILD_CUDA_CC_LIST"
  fi
  wheel=$(bash scripts/horovod/build.sh "$PY" "$HOROVOD_VERSION" "$HOROVOD_PATCH")
  pip_install --force-reinstall --no-deps "$wheel"
  pip_install "$wheel"   # Horovod's own dependencies (cloudpickle, psutil, pyyaml, ...)
  horovod_ok || { "$VENV/bin/horovodrun" --check-build || true; die "horovod built without TensorFlow, MPI, Gloo$([ "$GPU" = 0 ] || echo " or NCCL") (see above)"; }
fi

# ------------------------------------------------------------------ 5. this package
if ! "$PY" -c 'import mnist_hpc, sys; sys.exit(0 if mnist_hpc.__file__.startswith(sys.argv[1]) else 1)' "$PWD" 2>/dev/null; then
  if [ "$CHECK" = 1 ]; then would "install this checkout's mnist_hpc (editable)"; else pip_install --no-deps -e .; fi
fi
[ "$CHECK" = 0 ] || check_done
"$PY" -m mnist_hpc doctor || die "the installed stack is not usable (see above)"
say "horovodrun --check-build:"
# (its TensorFlow import prints absl's start-up lines on stderr: mnist_hpc/quiet.py drops those, as on the ranks)
"$VENV/bin/horovodrun" --check-build 2> >("$PY" -I -S mnist_hpc/quiet.py >&2) | sed '/^$/d'
