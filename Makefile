# The README's two commands:  make smoke  (install + local 2-rank smoke training)
#                             make test   (install + the whole test suite)
# Set-up is idempotent: scripts/setup.sh checks what is installed and rebuilds nothing.
#
# STACK=default (Python 3.12, TensorFlow 2.21 + tf-keras, patched Horovod; in .venv) or
# STACK=tf2.15 (Python 3.11, TensorFlow 2.15.1, Horovod as released; in .venv-tf2.15).
# GPU=1: TensorFlow's and-cuda extra and Horovod with NCCL all-reduce, in .venv-gpu (README, GPU nodes).
# Exact versions: stacks/$(STACK).txt.

STACK  ?= default
GPU    ?= 0
VENV   ?= .venv$(if $(filter default,$(STACK)),,-$(STACK))$(if $(filter 1,$(GPU)),-gpu,)
export STACK GPU VENV
PY     := $(VENV)/bin/python
NP     ?= 2
# Data: $MNIST_HPC_DATA if set, else the shared copy next to this checkout, else ~/.cache/mnist_hpc
SHARED_MNIST := $(abspath ../shared/data/mnist)
ifeq ($(MNIST_HPC_DATA),)
ifneq ($(wildcard $(SHARED_MNIST)/train-images-idx3-ubyte.gz),)
export MNIST_HPC_DATA := $(SHARED_MNIST)
endif
endif
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup smoke test test-fast fallback-check gpu-build-check gpu-acceptance data templates clean

setup:
	@bash scripts/setup.sh

data: setup
	@$(PY) -m mnist_hpc data verify || $(PY) -m mnist_hpc data fetch

smoke: data
	$(PY) launchers/local.py --np $(NP) smoke --out runs/smoke

# First what the suite needs beyond the venv (root, MPI, SLURM, the data): one line if anything is missing.
test: setup
	@bash scripts/check_test_prereqs.sh
	$(PY) -m pytest $(PYTEST_ARGS)

# The fast lane while you change code: tests/unit only (no ranks, no MPI, no cluster; under a minute).
# tests/integration starts real ranks and tests/slurm the real cluster: `make test` runs all three.
test-fast: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# The short check that keeps the fallback stack from rotting (CI runs it after `make test`):
# 2-rank training of both models, evaluate, one SLURM template job, on STACK=tf2.15.
fallback-check:
	$(MAKE) STACK=tf2.15 VENV=.venv-tf2.15 setup
	.venv-tf2.15/bin/python -m pytest -m fallback

# The GPU build, checked on any machine (downloads ~3.5 GB, builds Horovod with NCCL; not part of
# `make test`): [X] NCCL, hvd.nccl_built(), and 2 CPU ranks of this environment train the CNN.
# Run it before changing a stack. Writes its measurements to runs/gpu-build-check.json.
gpu-build-check:
	@start=$$(date +%s); $(MAKE) GPU=1 STACK=$(STACK) VENV=.venv-gpu setup && \
	  echo "$$(( $$(date +%s) - start ))" > .venv-gpu/setup-seconds
	.venv-gpu/bin/python -m pytest -p no:cacheprovider tests/gpu_build_check.py

# On a GPU node or allocation (also runs on CPU, reporting GPU steps as skipped):
gpu-acceptance: data
	bash scripts/gpu_acceptance.sh

templates: setup
	for t in train_simple train_cnn bench; do $(PY) -m mnist_hpc slurm render $$t > slurm/$$t.sbatch; done

clean:
	rm -rf runs .pytest_cache
