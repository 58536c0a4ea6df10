# The README's two commands:  make smoke  (install + local 2-rank smoke training)
#                             make test   (install + the whole test suite)
# Set-up is idempotent: scripts/setup.sh checks what is installed and rebuilds nothing.

VENV   ?= .venv
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

.PHONY: setup smoke test data templates clean

setup:
	@bash scripts/setup.sh

data: setup
	@$(PY) -m mnist_hpc data verify || $(PY) -m mnist_hpc data fetch

smoke: data
	$(PY) launchers/local.py --np $(NP) smoke --out runs/smoke

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

templates: setup
	for t in train_simple train_cnn bench; do $(PY) -m mnist_hpc slurm render $$t > slurm/$$t.sbatch; done

clean:
	rm -rf runs .pytest_cache
