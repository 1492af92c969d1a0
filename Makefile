# Two commands on a fresh machine: `make run` and `make test`. Both are idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export TF_CPP_MIN_LOG_LEVEL := 3
export PYTHONHASHSEED := 0
HOST ?= 127.0.0.1

.PHONY: run test lint ui server serve bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.installed  ## create .venv, install, run the whole pipeline on the bundled corpus
	$(BIN)/rnnpipe run

test: $(VENV)/.installed-dev  ## run the test suite
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check rnnpipe flows tests benchmarks

ui: $(VENV)/.installed  ## MLflow UI on 127.0.0.1:5000 (no job-execution workers)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db \
		--default-artifact-root $(CURDIR)/mlruns/artifacts --host $(HOST) --port 5000 --workers 1

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/pipeline.py

clean:  ## remove pipeline outputs (not the MLflow store or the DVC cache)
	rm -rf data/train.tsv data/val.tsv data/test.tsv data/tokens data/vocab.json models reports .rnnpipe
