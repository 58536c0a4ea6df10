#!/usr/bin/env bash
# build.sh - a Horovod wheel for one Python environment, built once and then reused.
#
#   scripts/horovod/build.sh PYTHON VERSION PATCH [--cached]    prints the path of the wheel
#
#   PYTHON   the interpreter of the environment Horovod is for; its TensorFlow must be installed
#   VERSION  the Horovod release (its sdist comes from the package index)
#   PATCH    a patch file applied to the sdist (patch -p1), or `none`
#   --cached only the cached wheel: its path, or exit 1 (nothing downloaded or built)
#
# Horovod ships no wheels and builds against the TensorFlow and the MPI it finds, so the wheel is
# cached under a key of everything that shapes it: Horovod version, sdist hash, patch hash,
# Python tag, TensorFlow version, the MPI on PATH and the HOROVOD_* build settings (not the
# run-time ones such as HOROVOD_CYCLE_TIME). A second
# set-up on the same machine installs the cached wheel instead of rebuilding (about 4 minutes).
# Cache folder: $MNIST_HPC_WHEEL_CACHE, default ~/.cache/mnist-hpc/wheels.
#
# Build settings: TensorFlow + MPI + Gloo, no PyTorch/MXNet, --no-build-isolation (Horovod must
# compile against the TensorFlow already installed). GPU builds add HOROVOD_GPU_OPERATIONS=NCCL and
# the HOROVOD_NCCL_*/HOROVOD_CUDA_HOME variables from the environment; they are part of the key.
set -euo pipefail

[ $# -eq 3 ] || { [ $# -eq 4 ] && [ "$4" = --cached ]; } || { echo "usage: $0 PYTHON VERSION PATCH|none [--cached]" >&2; exit 2; }
PY=$1 VERSION=$2 PATCH=$3 CACHED_ONLY=${4:-}
say() { echo "[horovod] $*" >&2; }
die() { echo "[horovod] error: $*" >&2; exit 1; }

# The released sdists this script knows; a new release needs its hash here (and a patch review).
declare -A SDIST_SHA256=(
  [0.28.1]=92a43f5a94c43907a56805bad15f19700c62ffc83b7ca483f9e104e229f67ef0
)
want_sha=${SDIST_SHA256[$VERSION]:-}
[ -n "$want_sha" ] || die "no known sdist hash for horovod $VERSION (known: ${!SDIST_SHA256[*]}): add it to $0"
[ "$PATCH" = none ] || [ -f "$PATCH" ] || die "patch file $PATCH not found"
command -v mpicc >/dev/null || die "mpicc not found: install an MPI with headers (apt-get install libopenmpi-dev openmpi-bin, or 'module load openmpi')"
command -v cmake >/dev/null || die "cmake not found: install it (apt-get install cmake, pip install 'cmake<4', or 'module load cmake')"
command -v g++ >/dev/null || die "g++ not found: install a C++17 compiler (apt-get install g++, or 'module load gcc')"

# Horovod's settings for this build: fixed ones, then whatever HOROVOD_* the caller exported.
export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 \
       HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
# CMake 4 refuses the bundled gloo's cmake_minimum_required(2.8.12); 3.5 is the oldest it accepts.
export CMAKE_POLICY_VERSION_MINIMUM=${CMAKE_POLICY_VERSION_MINIMUM:-3.5}

tf_version=$("$PY" -c 'from importlib.metadata import version
for name in ("tensorflow", "tensorflow-cpu"):
    try:
        print(version(name)); break
    except Exception:
        pass' 2>/dev/null) || true
[ -n "$tf_version" ] || die "TensorFlow is not installed in $PY: Horovod must be built after it"
py_tag=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
patch_sha=none
[ "$PATCH" = none ] || patch_sha=$(sha256sum "$PATCH" | cut -d' ' -f1)
mpi_id="$(command -v mpicc) $(mpicc --showme:version 2>/dev/null || mpicc --version 2>/dev/null | head -1)"
key_text="horovod=$VERSION sdist=$want_sha patch=$patch_sha python=$py_tag tensorflow=$tf_version mpi=$mpi_id
$(env | grep -E '^(HOROVOD_(WITH|GPU|NCCL|CUDA|ROCM|BUILD|CPU_OPERATIONS|CMAKE|DEBUG)|CMAKE_POLICY|CUDAToolkit)' | sort)"
key=$(printf '%s' "$key_text" | sha256sum | cut -c1-16)
cache=${MNIST_HPC_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mnist-hpc/wheels}/horovod-$VERSION-$key

if wheel=$(ls "$cache"/horovod-*.whl 2>/dev/null | head -1) && [ -n "$wheel" ]; then
  say "reusing $wheel (key $key)"
  echo "$wheel"
  exit 0
fi
[ -z "$CACHED_ONLY" ] || die "no cached wheel for key $key in $(dirname "$cache")"

work=$(mktemp -d "${TMPDIR:-/tmp}/horovod-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
say "downloading the horovod $VERSION sdist"
"$PY" -m pip download -q --no-deps --no-binary :all: "horovod==$VERSION" -d "$work" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
sdist="$work/horovod-$VERSION.tar.gz"
[ "$(sha256sum "$sdist" | cut -d' ' -f1)" = "$want_sha" ] || die "$sdist does not match its known SHA-256 $want_sha"
tar xzf "$sdist" -C "$work"
src="$work/horovod-$VERSION"
if [ "$PATCH" != none ]; then
  say "applying $PATCH"
  patch -d "$src" -p1 --forward --batch --quiet < "$PATCH" || die "$PATCH does not apply to horovod $VERSION"
fi
say "building (TensorFlow $tf_version, $py_tag, $(mpicc --showme:version 2>/dev/null || echo MPI)); about 4 minutes"
log="$work/build.log"
if ! MAKEFLAGS="-j$(nproc)" "$PY" -m pip wheel -v --no-build-isolation --no-deps -w "$work/wheel" "$src" >"$log" 2>&1; then
  grep -E "error|Error|ERROR" "$log" | grep -v "is ignored" | head -20 >&2
  trap - EXIT  # keep the log
  die "horovod build failed; full log: $log"
fi
if [ -n "${HOROVOD_GPU_OPERATIONS:-}" ]; then
  # the compiler CMake used must be the pinned one, never an nvcc found on PATH or in /usr/local/cuda
  used=$(sed -n 's/.*Check for working CUDA compiler: \([^ ]*\).*/\1/p' "$log" | head -1)
  [ -n "$used" ] || { trap - EXIT; die "the GPU build did not compile CUDA (no CUDA compiler in $log)"; }
  [ "$(realpath "$used")" = "$(realpath "${CUDACXX:-$HOROVOD_CUDA_HOME/bin/nvcc}")" ] \
    || { trap - EXIT; die "CMake used the CUDA compiler $used, not ${CUDACXX:-$HOROVOD_CUDA_HOME/bin/nvcc}; log: $log"; }
  say "CUDA compiler: $used ($(grep -o 'CUDA compiler identification is .*' "$log" | head -1))"
fi
mkdir -p "$(dirname "$cache")"
tmp_cache=$(mktemp -d "$(dirname "$cache")/.building.XXXXXX")
mv "$work"/wheel/horovod-*.whl "$tmp_cache/"
printf '%s\n' "$key_text" > "$tmp_cache/KEY"
cp "$log" "$tmp_cache/build.log"
mv -T "$tmp_cache" "$cache" 2>/dev/null || rm -rf "$tmp_cache"  # another set-up may have won the race
wheel=$(ls "$cache"/horovod-*.whl | head -1)
say "built $wheel"
echo "$wheel"
