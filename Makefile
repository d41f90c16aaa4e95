# minimistral: `make reproduce` runs the reproduction, `make test` the whole test suite.
# Both create .venv on first use (CPU torch; GPU users: see README).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
NBS    := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

.PHONY: setup reproduce test lint bench clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# The whole reproduction: the driver trains and scores everything at the default scale (it continues
# from whatever is done: run it again after an interruption), then every notebook is re-executed on
# its outputs (no training twice, scores cached by checkpoint content), embeds its figures and rewrites figures/.
# No timeout anywhere: a slow machine takes longer, it does not fail.
reproduce: $(STAMP)
	$(BIN)/minimistral reproduce --scale default
	cd notebooks && for nb in $(notdir $(NBS)); do \
	  echo "== $$nb"; \
	  ../$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.kernel_name=python3 --ExecutePreprocessor.timeout=-1 $$nb || exit 1; \
	done

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Unit and parity tests, then the notebooks under nbval (fast mode; checked cells compared).
test: lint
	MPLBACKEND=Agg MINIMISTRAL_FAST=1 $(BIN)/python -m pytest -q tests notebooks \
	  --nbval-lax --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_speed.py

clean-venv:
	rm -rf $(VENV)
