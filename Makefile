# bone-age: `make run` (quickstart) and `make test` each set up .venv on first use.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint setup clean bench bench-accuracy wheels gpu-check rehearsal

setup: $(STAMP)

# PYTHONWARNINGS=ignore: setuptools' note on editable installs with a mapped package (conf/
# travels as bone_age/conf) says nothing a user can act on.
$(STAMP): pyproject.toml
	@echo "make: setting up $(VENV) (first time only: pip installs torch, Lightning and the rest, about 3 minutes)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 2>&1 | sed '/is ignored: it is neither/d'
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install -q -e '.[all,dev,scale]' 2>&1 | sed '/is ignored: it is neither/d'
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

# The GPU check (bone_age/bench/gpu). `make wheels` here puts in .whl/ the wheels a bare GPU
# machine lacks; there, `make gpu-check GPU_OUT=DIR` installs those wheels only (no network,
# into GPU_SITE) and runs every stage with the machine's own python3, torch and CUDA.
WHEELS := .whl
GPU_OUT ?= experiments/gpu
GPU_SITE ?= /tmp/bone_age_site

wheels: $(STAMP)
	$(BIN)/python -m bone_age.bench.gpu.wheels --out $(WHEELS) 2>&1 | sed '/is ignored: it is neither/d'

gpu-check:
	if [ -d $(WHEELS) ]; then $(PYTHON) -m pip install -q --no-index --no-deps --no-compile \
		--no-cache-dir --upgrade --target $(GPU_SITE) $(WHEELS)/*.whl; fi
	PYTHONPATH=$(GPU_SITE):$$PYTHONPATH PYTHONUNBUFFERED=1 $(PYTHON) -m bone_age.bench.gpu \
		--out $(GPU_OUT)

# Dress rehearsal of a GPU visit on this CPU under the GPU image's versions (never part of `make
# test`; the first one installs torch 2.11.0, several GB, into .venv-gpu-image/):
# experiments/table1/rehearsal.sh, experiments/table1/README.md.
REHEARSAL_OUT ?= /tmp/bone_age_rehearsal

rehearsal:
	test -n "$$(ls $(WHEELS)/*.whl 2>/dev/null)" || $(MAKE) wheels
	experiments/table1/rehearsal.sh $(REHEARSAL_OUT)

lint: $(STAMP)
	$(BIN)/ruff check bone_age tests

clean:
	rm -rf outputs multirun .pytest_cache
