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
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION := false
export TF_CPP_MIN_LOG_LEVEL := 3
export PYTHONHASHSEED := 0
HOST ?= 127.0.0.1

.PHONY: run test lint ui server serve bench clean stack stack-down stack-status

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,team]'
	touch $@

$(VENV)/.installed-team: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[team]'
	touch $@

run: $(VENV)/.installed  ## create .venv, install, run the whole pipeline on the bundled corpus
	$(BIN)/rnnpipe run

test: $(VENV)/.installed-dev  ## run the test suite
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check rnnpipe flows tests benchmarks

UI_PORT ?= 5000
SERVE_PORT ?= 5001

ui: $(VENV)/.installed  ## MLflow UI on $(HOST):$(UI_PORT), opened on the runs table (prints the link)
	$(BIN)/rnnpipe ui --host $(HOST) --port $(UI_PORT)

# Raw text in, label + probabilities out: curl the /invocations example in the README.
# MODEL_URI defaults to the champion of this project's lineage (`rnnpipe models uri`).
serve: $(VENV)/.installed  ## serve the champion model over HTTP on $(HOST):$(SERVE_PORT)
	MODEL_URI="$(MODEL_URI)"; [ -n "$$MODEL_URI" ] || MODEL_URI=$$($(BIN)/rnnpipe models uri); \
	STORE=$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlruns/mlflow.db}; \
	echo "serving $$MODEL_URI from $$STORE on http://$(HOST):$(SERVE_PORT)"; \
	MLFLOW_TRACKING_URI=$$STORE MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false \
		$(BIN)/mlflow models serve -m $$MODEL_URI --env-manager local \
		--host $(HOST) --port $(SERVE_PORT)

server: $(VENV)/.installed  ## Prefect server and UI on 127.0.0.1:4200; then export PREFECT_API_URL=http://127.0.0.1:4200/api
	$(BIN)/prefect server start --host $(HOST) --port 4200

STACK_DIR ?= $(CURDIR)/.stack
STACK_ONLY ?=

stack: $(VENV)/.installed-team  ## team stack on $(HOST): PostgreSQL, MLflow (basic auth), Prefect server+pool+worker, Dask, S3 (moto); then `source .stack/env.sh`
	HOST=$(HOST) $(BIN)/python tools/stack.py up --dir $(STACK_DIR) $(if $(STACK_ONLY),--only $(STACK_ONLY))

stack-down:  ## stop the team stack (its data stays in $(STACK_DIR); `tools/stack.py down --purge` deletes it)
	$(BIN)/python tools/stack.py down --dir $(STACK_DIR)

stack-status:  ## what of the team stack runs (exit 1 if something is down)
	$(BIN)/python tools/stack.py status --dir $(STACK_DIR)

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/pipeline.py

clean:  ## remove pipeline outputs (not the MLflow store or the DVC cache)
	rm -rf data/train.tsv data/val.tsv data/test.tsv data/ids data/tokens data/vocab.json models reports .rnnpipe
