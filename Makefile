# Two commands on a fresh machine with only python3:  make demo  |  make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# PyTorch (CPU build) is the independent implementation the tests compare against.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint bench bench-full check clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[demo]"
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev]" "$(TORCH_SPEC)"
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(BIN)/mlpx demo --out demo_output

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check mlpx tests benchmarks

test: lint
	$(BIN)/pytest -q tests
	$(BIN)/pytest -q benchmarks --benchmark-disable -p no:cacheprovider

bench: $(VENV)/.dev-installed
	$(BIN)/mlpx bench

bench-full: $(VENV)/.dev-installed
	$(BIN)/pytest benchmarks --benchmark-only

check: $(VENV)/.dev-installed
	$(BIN)/mlpx check

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache demo_output
