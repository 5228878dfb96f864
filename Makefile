# Two commands: `make run` and `make test`. Everything else is a detail of those.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export FRAUD_HOME ?= $(CURDIR)/var
export FEAST_USAGE := False
DEMO_DIR := $(FRAUD_HOME)/demo-dataset
DEMO_CUSTOMERS ?= 12000
DEMO_DAYS ?= 270

.PHONY: run test lint bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/fraud-service demo --customers $(DEMO_CUSTOMERS) --days $(DEMO_DAYS) --out $(DEMO_DIR)
	$(BIN)/fraud-service serve

test: $(STAMP)
	scripts/ensure-chromium
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/generate_ingest.py
	$(BIN)/python bench/features_bench.py
	$(BIN)/python bench/training_bench.py
	$(BIN)/python bench/online_retail_injected.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
