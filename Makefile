# The two commands in the README: `sudo make run` and `sudo make test`.
# Both install what is missing first (scripts/setup.sh says what it does).
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup run test lint bench clean

setup:
	@scripts/setup.sh

run: setup
	$(BIN)/tracehound run

test: setup lint
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check agent tests bench
	$(BIN)/ruff format --check agent tests bench
	$(BIN)/mypy --strict agent

bench: setup
	$(BIN)/python bench/capture_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
