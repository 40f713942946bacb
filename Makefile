# arena-serve: `make serve` and `make test` work on a fresh machine; both set up first if needed.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PY := .venv/bin/python
CONFIG ?= deploy/config.yaml
PYTEST_ARGS ?=

.PHONY: setup serve test test-unit lint load soak bench bench-kernels bench-serving clean

setup:
	@bash scripts/setup.sh

serve: setup
	@$(PY) -m serve.cli serve $(CONFIG)

# Triton kernels run under the interpreter where there is no GPU, in a process of their own:
# TRITON_INTERPRET must never reach a process that starts vLLM engines.
KERNEL_ENV := $(if $(shell command -v nvidia-smi 2>/dev/null),,TRITON_INTERPRET=1)

test: setup
	@$(PY) -m pytest --ignore=tests/kernels $(PYTEST_ARGS)
	@$(KERNEL_ENV) $(PY) -m pytest tests/kernels $(PYTEST_ARGS)

test-unit: setup
	@$(PY) -m pytest -m "not e2e" --ignore=tests/kernels $(PYTEST_ARGS)
	@$(KERNEL_ENV) $(PY) -m pytest tests/kernels $(PYTEST_ARGS)

bench: setup
	@$(PY) -m router.bench | $(PY) scripts/bench_section.py router.bench "Assignment cost (router)"
	@$(MAKE) --no-print-directory bench-kernels

load: setup
	@$(PY) -m loadtests.run_load

bench-serving: setup
	@$(PY) -m loadtests.serving_bench | $(PY) scripts/bench_section.py loadtests.serving_bench "Serving: vLLM direct, Ray Serve LLM, arena-serve"

soak: setup
	@$(PY) -m loadtests.soak | $(PY) scripts/bench_section.py loadtests.soak "Soak: twice the saturation rate"

bench-kernels: setup
	@$(PY) -m kernels.bench | $(PY) scripts/bench_section.py kernels.bench "Reward-model kernels and scorer"

lint: setup
	@.venv/bin/ruff check .

clean:
	rm -rf .venv models data .pytest_cache .ruff_cache
