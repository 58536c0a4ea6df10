#!/usr/bin/env bash
# setup.sh - idempotent set-up of mnist-hpc into ./.venv.
#
# Installs what is missing and nothing else:
#   1. an MPI implementation (Debian's Open MPI through apt-get when root on Debian/Ubuntu;
#      otherwise the `mpicc` already on PATH, e.g. after `module load openmpi`),
#   2. .venv with Python 3.11,
#   3. the pinned stack (tensorflow-cpu, mpi4py built against the system MPI, submitit, pytest...),
#   4. horovod built from source with TensorFlow + MPI + Gloo,
#   5. this package (editable).
# Re-running it checks installed versions and `horovodrun --check-build` and rebuilds nothing.
#
# Knobs: PYTHON (default python3.11), VENV (default .venv), TF_PACKAGE (default tensorflow-cpu;
# use 'tensorflow[and-cuda]' on GPU nodes, with HOROVOD_GPU_OPERATIONS=NCCL for the Horovod build),
# MNIST_HPC_SETUP_APT=0 to never call apt-get.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
TF_VERSION=2.15.1
HOROVOD_VERSION=0.28.1
TF_PACKAGE=${TF_PACKAGE:-tensorflow-cpu}
say() { echo "[setup] $*"; }
die() { echo "[setup] error: $*" >&2; exit 1; }

# ------------------------------------------------------------------ 1. MPI and build tools
apt_packages=()
command -v mpicc >/dev/null 2>&1 || apt_packages+=(libopenmpi-dev openmpi-bin)
command -v cmake >/dev/null 2>&1 || apt_packages+=(cmake)
command -v g++ >/dev/null 2>&1 || apt_packages+=(g++)
if [ ${#apt_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ "${MNIST_HPC_SETUP_APT:-1}" = 1 ]; then
    say "apt-get install ${apt_packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
  else
    die "missing ${apt_packages[*]}: on a cluster run e.g. 'module load openmpi cmake gcc' so that mpicc, cmake and g++ are on PATH (or install them as root: apt-get install libopenmpi-dev openmpi-bin cmake g++)"
  fi
fi

# ------------------------------------------------------------------ 2. virtualenv
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found: Python 3.11 is required (set PYTHON=/path/to/python3.11)"
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored: it is neither" || true
fi
PY="$VENV/bin/python"
# pip install, quiet; drops the warnings a pip config naming a missing local index prints per package
pip_install() {
  "$PY" -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

# has NAME==VERSION ... : every named distribution is installed at exactly that version
has() {
  "$PY" - "$@" <<'PYEOF'
import sys
from importlib.metadata import version, PackageNotFoundError
for spec in sys.argv[1:]:
    name, _, want = spec.partition("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        sys.exit(1)
    if want and have != want:
        sys.exit(1)
PYEOF
}

# ------------------------------------------------------------------ 3. pinned stack
TF_DIST=${TF_PACKAGE%%[*}
if ! has "$TF_DIST==$TF_VERSION" mpi4py submitit pytest matplotlib; then
  say "installing $TF_PACKAGE==$TF_VERSION, mpi4py (against $(command -v mpicc)), submitit, pytest, matplotlib"
  pip_install "$TF_PACKAGE==$TF_VERSION" "numpy==1.26.4"
  pip_install --no-binary mpi4py "mpi4py==4.1.2"
  pip_install -e ".[test]"
fi

# ------------------------------------------------------------------ 4. horovod from source
horovod_ok() {
  has "horovod==$HOROVOD_VERSION" || return 1
  local report
  report=$("$VENV/bin/horovodrun" --check-build 2>/dev/null) || return 1
  grep -q '\[X\] TensorFlow' <<<"$report" && grep -q '\[X\] MPI' <<<"$report" && grep -q '\[X\] Gloo' <<<"$report"
}
if ! horovod_ok; then
  say "building horovod $HOROVOD_VERSION from source with TensorFlow + MPI + Gloo (about 2 minutes)"
  pip_install wheel packaging
  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 \
  HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
    pip_install --no-build-isolation "horovod==$HOROVOD_VERSION"
  horovod_ok || { "$VENV/bin/horovodrun" --check-build || true; die "horovod built without TensorFlow, MPI or Gloo (see above)"; }
fi

# ------------------------------------------------------------------ 5. this package
if ! "$PY" -c 'import mnist_hpc, sys; sys.exit(0 if mnist_hpc.__file__.startswith(sys.argv[1]) else 1)' "$PWD" 2>/dev/null; then
  pip_install --no-deps -e .
fi
say "ready: $("$PY" -c 'import tensorflow as tf, horovod, mpi4py; print("tensorflow", tf.__version__, "horovod", horovod.__version__, "mpi4py", mpi4py.__version__)' 2>/dev/null)"
