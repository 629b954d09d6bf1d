# bone-age: `make run` (quickstart) and `make test` each set up .venv on first use.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint setup clean bench bench-accuracy

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | sed '/is ignored: it is neither/d'
	$(BIN)/python -m pip install -q -e '.[dev,scale]' 2>&1 | sed '/is ignored: it is neither/d'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m bone_age.run experiment=quickstart

test: $(STAMP)
	$(BIN)/python -m pytest

# Benchmarks print figures and write experiments/bench/results.{json,md}; never part of `make test`.
bench: $(STAMP)
	$(BIN)/python -m bone_age.bench

bench-accuracy: $(STAMP)
	$(BIN)/python -m bone_age.bench --accuracy

lint: $(STAMP)
	$(BIN)/ruff check bone_age tests

clean:
	rm -rf outputs multirun .pytest_cache
