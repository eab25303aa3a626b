# Two commands on a fresh machine with only python3:  make demo  |  make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# PyTorch (CPU build) is the independent implementation the tests compare against.
TORCH_SPEC ?= torch==2.13.0

# A second environment with the core dependencies and pytest only (no torch, scipy, matplotlib,
# CuPy, ...): the whole suite must still collect, and the smoke subset pass.
CORE_VENV ?= .venv-core
# the core dependencies are read from pyproject.toml, so the two cannot drift apart
CORE_DEPS = $(shell $(PYTHON) -c "import tomllib; print(' '.join(repr(d) for d in tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))")
CORE_SMOKE := tests/test_smoke.py tests/test_import.py tests/test_xor.py tests/test_batches.py \
              tests/test_checkpoint_file.py

# The documentation site's own environment: the docs extra alone (mkdocs reads the sources
# without importing them), so `make docs` never touches the packages of .venv
DOCS_VENV ?= .venv-docs
DOCS_DEPS = $(shell $(PYTHON) -c "import tomllib; print(' '.join(repr(d) for d in tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['docs']))")

.PHONY: demo test test-core lint docs bench bench-full check clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[demo]"
	touch $@

# the mpi extra: the data-parallel tests launch 2-4 processes with the MPICH wheel's mpiexec
$(VENV)/.dev-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev,mpi]" "$(TORCH_SPEC)"
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(BIN)/mlpx demo --out demo_output

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check mlpx tests benchmarks

$(CORE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(CORE_VENV)
	$(CORE_VENV)/bin/python -m pip install --quiet $(CORE_DEPS) "pytest>=7.4"
	touch $@

test-core: $(CORE_VENV)/.installed
	PYTHONPATH=$(CURDIR) $(CORE_VENV)/bin/python -m pytest -q -p no:cacheprovider --collect-only tests > $(CORE_VENV)/collect.log || (tail -n 30 $(CORE_VENV)/collect.log; exit 1)
	PYTHONPATH=$(CURDIR) $(CORE_VENV)/bin/python -m pytest -q -p no:cacheprovider $(CORE_SMOKE)

$(DOCS_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/python -m pip install --quiet $(DOCS_DEPS)
	touch $@

# the documentation site, warnings as errors (site/); ~5 s once the docs extra is installed
docs: $(DOCS_VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs build --strict --quiet

test: lint test-core docs
	$(BIN)/pytest -q tests
	$(BIN)/pytest -q benchmarks --benchmark-disable -p no:cacheprovider

bench: $(VENV)/.dev-installed
	$(BIN)/mlpx bench

bench-full: $(VENV)/.dev-installed
	$(BIN)/pytest benchmarks --benchmark-only

check: $(VENV)/.dev-installed
	$(BIN)/mlpx check

clean:
	rm -rf $(VENV) $(CORE_VENV) $(DOCS_VENV) build dist *.egg-info .pytest_cache .ruff_cache demo_output site
