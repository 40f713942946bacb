# arena-serve: `make serve` and `make test` work on a fresh machine; both set up first if needed.
PY := .venv/bin/python
CONFIG ?= deploy/config.yaml
PYTEST_ARGS ?=

.PHONY: setup serve test test-unit lint bench clean

setup:
	@bash scripts/setup.sh

serve: setup
	@$(PY) -m serve.cli serve $(CONFIG)

test: setup
	@$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup
	@$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

bench: setup
	@$(PY) -m router.bench --write

lint: setup
	@.venv/bin/ruff check .

clean:
	rm -rf .venv models data .pytest_cache .ruff_cache
