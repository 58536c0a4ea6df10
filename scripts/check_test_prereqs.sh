#!/usr/bin/env bash
# check_test_prereqs.sh - what `make test` needs beyond the virtualenv, checked before pytest starts.
#
# Silent with status 0 when everything is there; otherwise ONE line naming everything missing and
# what to do, status 1. It never lets the suite run with less (the suite fails rather than skips):
#   - root: tests/integration mounts small tmpfs file systems (full disks for real), and
#     tests/slurm/cluster.sh runs munge, slurmctld and two slurmd as root;
#   - Open MPI's mpirun (Debian: openmpi-bin; `make setup` installs it as root);
#   - SLURM and munge (Debian: slurmctld slurmd slurm-client munge); cluster.sh apt-gets them when
#     it starts, so as root with apt-get they may still be missing here;
#   - the MNIST files, where tests/conftest.py looks: $MNIST_HPC_DATA, else ../shared/data/mnist.
# `make test-fast` (tests/unit) needs none of these.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1

# command -> the Debian package that has it
declare -A PACKAGE_OF=([mpirun]=openmpi-bin [slurmctld]=slurmctld [slurmd]=slurmd [sbatch]=slurm-client
                       [munged]=munge)
SLURM_COMMANDS=(slurmctld slurmd sbatch munged)
IDX_FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

missing=()
is_root=$([ "$(id -u)" = 0 ] && echo 1)
[ -n "$is_root" ] || missing+=("root (tmpfs mounts and the local SLURM cluster: run it as root, e.g. in a container; 'make test-fast' runs the unit lane as any user)")

command -v mpirun >/dev/null 2>&1 || missing+=("mpirun (apt-get install ${PACKAGE_OF[mpirun]}, or module load an Open MPI)")

absent=()
for tool in "${SLURM_COMMANDS[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || absent+=("$tool")
done
if [ ${#absent[@]} -gt 0 ] && ! { [ -n "$is_root" ] && command -v apt-get >/dev/null 2>&1; }; then
  packages=()
  for tool in "${absent[@]}"; do
    [[ " ${packages[*]} " == *" ${PACKAGE_OF[$tool]} "* ]] || packages+=("${PACKAGE_OF[$tool]}")
  done
  missing+=("${absent[*]} (apt-get install ${packages[*]}; tests/slurm/cluster.sh does that itself when run as root)")
fi

has_mnist() {
  local file
  [ -n "$1" ] || return 1
  for file in "${IDX_FILES[@]}"; do
    [ -f "$1/$file.gz" ] || [ -f "$1/$file" ] || return 1
  done
}
if [ -n "${MNIST_HPC_DATA:-}" ]; then
  has_mnist "$MNIST_HPC_DATA" || missing+=("the MNIST data (MNIST_HPC_DATA=$MNIST_HPC_DATA lacks some of ${IDX_FILES[*]}: fetch them with 'mnist-hpc data fetch --dir \$MNIST_HPC_DATA')")
elif ! has_mnist ../shared/data/mnist; then
  missing+=("the MNIST data (MNIST_HPC_DATA is unset and ../shared/data/mnist has no IDX files: run 'mnist-hpc data fetch --dir DIR' and set MNIST_HPC_DATA=DIR)")
fi

if [ ${#missing[@]} -gt 0 ]; then
  joined=$(printf '; %s' "${missing[@]}")
  echo "error: make test needs ${joined:2}" >&2
  exit 1
fi
