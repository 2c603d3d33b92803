# The README's two commands: `make demo` (set up, run the main job on the shipped sample) and
# `make test` (set up, lint, run the tests). Both need nothing but python3 (>= 3.10) to start.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is installed first, when the venv has none: TORCH from TORCH_INDEX (empty: the default index).
# On PyPI, torch for Linux is the CUDA build (several GB); on a machine without an NVIDIA GPU give the CPU
# wheel index:  make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu   (also for test, venv-test).
# The CI machine's index serves torch==2.13.0 as a CPU wheel. Any torch>=2.4 satisfies [train].
TORCH  ?= torch==2.13.0
TORCH_INDEX ?=
INSTALL_TORCH = $(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
DEMO   ?= demo_out
# pytest-xdist processes for the tests (tests sharing one test SLURM are kept on one of them: loadgroup)
PYTEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup

.PHONY: demo test test-fast lint bench docs clean venv venv-test venv-docs setup

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install -q -e ".[dask,remote]"

# The Quick tour's one set-up command: .venv with the training stage ([train]) and the readers.
setup: $(BIN)/python
	$(INSTALL_TORCH)
	$(BIN)/pip install -q -e ".[dask,remote,train,readers]"

venv-test: $(BIN)/python
	$(INSTALL_TORCH)
	$(BIN)/pip install -q -e ".[dask,remote,grid,train,test]"

venv-docs: $(BIN)/python
	$(BIN)/pip install -q -e ".[docs]"

demo: venv
	rm -rf $(DEMO)
	$(BIN)/muon-pipeline convert data_samples/sample.root --output $(DEMO)/dataset
	$(BIN)/muon-pipeline validate $(DEMO)/dataset
	$(BIN)/muon-pipeline inspect $(DEMO)/dataset

lint: venv-test
	$(BIN)/ruff check pipeline tests bench

test: venv-test lint
	$(PYTEST)

# The same minus the end-to-end tests marked `slow` (CI runs `make test`, i.e. everything).
test-fast: venv-test lint
	$(PYTEST) -m "not slow"

bench: venv-test
	$(BIN)/python bench/bench_convert.py

# The documentation site (mkdocs.yml, docs/) into site/, warnings as errors (tests/test_docs.py does the same).
docs: venv-docs
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(DEMO) site .pytest_cache .ruff_cache
