# Entry points a new user types. Each creates the virtual environment when missing.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
CORES   ?= 2
# The workflow's rules call `far`, `mlflow` and `dvc` by name: put the venv first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)
export DS_BUILD_OPS := 0
export DS_ACCELERATOR ?= cpu
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1

.PHONY: setup reproduce restore unlock test test-slow test-gpu wheelhouse clean-venv

$(BIN)/far: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	# constraints.txt pins the CPU torch wheel: nothing may swap it for a CUDA build.
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	# A .pth hook so that a plain `import timm` works on CPU torch (far/torchvision_compat.py).
	$(BIN)/python -m far.torchvision_compat --install
	touch $(BIN)/far

setup: $(BIN)/far

## The main job: the whole pipeline (every table of the paper, embedded default).
## After a kill (-9, power loss) Snakemake's lock stays: `make unlock`, then again.
reproduce: setup
	@$(BIN)/snakemake --cores $(CORES) || { status=$$?; \
	  if [ -n "$$(ls -A .snakemake/locks 2>/dev/null)" ]; then \
	    echo "make reproduce: if an earlier run was killed, its lock remains: run 'make unlock', then 'make reproduce' (finished jobs are kept, training resumes from its checkpoints)" >&2; fi; \
	  exit $$status; }

## Remove the lock a killed Snakemake left (only when no other snakemake runs here).
unlock: setup
	$(BIN)/snakemake --unlock

## The data back from the DVC remote, and nothing rerun because of their new file times
## (docs/pipeline.md, "DVC"). Paper mode: make restore SNAKEMAKE_ARGS="--configfile params/paper.yaml"
restore: setup
	$(BIN)/dvc pull
	$(BIN)/snakemake --touch --cores 1 $(SNAKEMAKE_ARGS)

## The test suite, as CI runs it.
test: setup
	$(BIN)/python -m pytest -m "not slow and not gpu" -q

test-slow: setup
	$(BIN)/python -m pytest -m "slow and not gpu" -q

test-gpu: setup
	$(BIN)/python -m pytest -m gpu -q

## Wheels for a GPU node with CUDA torch and no network, into .whl (docs/training.md);
## for another Python there: make wheelhouse PYTHON_VERSION=3.11
wheelhouse: setup
	VENV_PY=$(BIN)/python bash tools/make-wheelhouse.sh .whl

clean-venv:
	rm -rf $(VENV)
