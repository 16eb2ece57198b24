# denselab: make demo | make train | make test | make test-fast | make mutants | make ui | make bench
# Everything runs from .venv, created and filled on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first, on its own: a bare `torch` requirement can pull a multi-GB CUDA
# build. Override for your machine, e.g. make install TORCH_SPEC='torch --index-url ...'.
TORCH_SPEC ?= torch==2.13.0
ARGS ?=
PYTEST_ARGS ?=
# Tests run in this many pytest-xdist workers: much of the slow tier waits on servers,
# SLURM and subprocesses, and two workers keep both of CI's two cores busy meanwhile (CI
# runs the mutants beside them at the lowest priority, on what is left). Each test file
# runs whole in one worker (a module's server or cluster starts once), in the order
# tests/conftest.py gives (the longest first).
TEST_WORKERS ?= 2
XDIST = -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
UI_PORT ?= 5000

.PHONY: install demo train test test-fast mutants lint ui bench pictures clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

# The whole pipeline on data that needs no network (scikit-learn's 8x8 digits): every figure
# and the model, in well under a minute on 2 cores; it ends with the run's address.
demo: install
	$(BIN)/denselab-train data=digits tracking.experiment_name=demo $(ARGS)

train: install
	$(BIN)/denselab-train $(ARGS)

# Everything, as CI runs it: the fast tier and the slow one (subprocesses, servers, packaging).
test: install lint
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

# The edit loop: no subprocess, server or end-to-end run (under a minute on 2 cores).
test-fast: install lint
	$(BIN)/python -m pytest -m "not slow" $(XDIST) $(PYTEST_ARGS)

# Deliberate one-line breaks of the core rules, each run against the tests that guard it: fails
# if one passes them (tests/mutants.py). CI runs it after `make test`, whose passing guards
# let it skip their unmutated run (MUTANT_ARGS=--guards-passed).
MUTANT_ARGS ?=
mutants: install
	$(BIN)/python tests/mutants.py $(MUTANT_ARGS)

lint: install
	$(BIN)/ruff check src tests bench docs

ui: install
	mkdir -p mlruns
	$(BIN)/mlflow ui --backend-store-uri "sqlite:///$(CURDIR)/mlruns/mlflow.db" \
		--host 127.0.0.1 --port $(UI_PORT)

bench: install
	$(BIN)/python bench/epoch.py
	$(BIN)/python bench/course.py
	$(BIN)/python bench/flowers_prepare.py
	$(BIN)/python bench/predict.py

# The README's pictures: a real Fashion-MNIST run, its figures and its MLflow UI in Chromium.
pictures: install
	$(BIN)/python docs/pictures.py --out docs/images

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
