# The commands of the README. `make repro` and `make test` create the pinned
# environment in .venv first if it is missing or older than requirements.lock.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export PYTHONPATH := $(CURDIR)

.PHONY: env repro test lint verify miniature lock bench-layout bench-mix clean-env

env: $(VENV)/.installed

$(VENV)/.installed: requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	touch $@

## Build the whole layout and the mixtures (on the embedded miniature by default).
repro: env
	$(BIN)/dvc repro

## Run the test suite (lint first: it takes a second).
test: env lint
	$(BIN)/pytest

lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## Check every extracted tree against its manifest (sizes; CRCs with ARGS=--crc).
verify: env
	$(BIN)/python -m stages.verify --registry sources.yaml --manifests manifests --data-root data $(ARGS)

## Regenerate the embedded miniature and its checksums in sources.yaml.
miniature: env
	$(BIN)/python -m miniature.generate --out miniature/upstream --update-registry sources.yaml

## Re-pin requirements.lock from requirements.in.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -r requirements.in
	.lock-venv/bin/pip freeze > requirements.lock && rm -rf .lock-venv

## Benchmarks (figures in the README).
bench-layout: env
	$(BIN)/python -m bench.layout

clean-env:
	rm -rf $(VENV)
