# arena-serve: `make serve` and `make test` work on a fresh machine; both set up first if needed.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PY := .venv/bin/python
# The build setup installs and serves: gpu where nvidia-smi lists a GPU, else cpu
# (scripts/pick_build.sh; ARENA_SERVE_BUILD=cpu|gpu overrides it).
BUILD := $(shell bash scripts/pick_build.sh)
CONFIG ?= $(if $(filter gpu,$(BUILD)),deploy/config.gpu.yaml,deploy/config.yaml)
PYTEST_ARGS ?=

.PHONY: setup serve test test-unit lint load soak bench bench-kernels bench-serving bench-arena-timing bench-stop bench-quick bench-train reward-loop flywheel bench-probe bench-adapters bench-lora-ops bench-adaptive bench-bandit bench-confirm bench-store clean

setup:
	@bash scripts/setup.sh

serve: setup
	@$(PY) -m serve.cli serve $(CONFIG)

# Triton kernels, and the reward model that runs them, are tested under the interpreter where
# there is no GPU, in a process of their own: TRITON_INTERPRET must never reach a process that
# starts vLLM engines.
KERNEL_ENV := $(if $(filter gpu,$(BUILD)),,TRITON_INTERPRET=1)

test: setup
	@bash scripts/setup_browser.sh
	@bash scripts/setup_postgres.sh
	@$(PY) -m pytest --ignore=tests/kernels --ignore=tests/reward $(PYTEST_ARGS)
	@$(KERNEL_ENV) $(PY) -m pytest tests/kernels tests/reward $(PYTEST_ARGS)

test-unit: setup
	@$(PY) -m pytest -m "not e2e" --ignore=tests/kernels --ignore=tests/reward $(PYTEST_ARGS)
	@$(KERNEL_ENV) $(PY) -m pytest tests/kernels tests/reward $(PYTEST_ARGS)

# A benchmark's figures replace its section of docs/benchmarks.md only once it has finished:
# one that fails part way leaves the last good figures there.
BENCH_OUT := data/bench/last-run.md
comma := ,
define bench_into_docs
	@mkdir -p $(dir $(BENCH_OUT))
	@$(PY) -m $(1) | tee $(BENCH_OUT)
	@$(PY) scripts/bench_section.py $(1) $(2) < $(BENCH_OUT) > /dev/null
endef

bench: setup
	$(call bench_into_docs,router.bench,"Assignment cost (router)")
	@$(MAKE) --no-print-directory bench-kernels

load: setup
	@$(PY) -m loadtests.run_load

bench-serving: setup
	$(call bench_into_docs,loadtests.serving_bench,"Serving: vLLM direct$(comma) Ray Serve LLM$(comma) arena-serve")

soak: setup
	$(call bench_into_docs,loadtests.soak,"Soak: twice the saturation rate")

bench-arena-timing: setup
	$(call bench_into_docs,loadtests.arena_timing,"Arena: what a stream's timing tells a voter")

bench-stop: setup
	$(call bench_into_docs,loadtests.stop_time,"Stopping make serve")

# The hot path's guard (5 to 7 minutes on 2 cores): arena-serve / vLLM at concurrency 1 and 32
# against loadtests/bench_quick_baseline.json, non-zero on a drop beyond the noise; it records
# nothing in docs/benchmarks.md. `make bench-quick BENCH_QUICK_ARGS=--save-baseline` records a
# new baseline.
BENCH_QUICK_ARGS ?=
bench-quick: setup
	@$(PY) -m loadtests.bench_quick $(BENCH_QUICK_ARGS)

# What training a judge costs: train-reward on 1,000 and 10,000 synthetic pairs (about 45
# minutes on 2 cores), each in a process of its own; the table goes to docs/benchmarks.md.
bench-train: setup
	$(call bench_into_docs,reward.bench_train,"Training a reward model: time and memory")

# Learning from votes against a known truth (about 30 minutes on 2 cores): the default config
# served, simulated raters voting 2,200 battles by a planted rule, export-preferences,
# train-reward, the judge swapped in live, best-of-4 with it, the report; the figures go to
# docs/benchmarks.md, the model to models/reward-loop-judge. REWARD_LOOP_ARGS: see
# `python -m loadtests.reward_loop --help`.
REWARD_LOOP_ARGS ?=
reward-loop: setup
	@mkdir -p $(dir $(BENCH_OUT))
	@$(PY) -m loadtests.reward_loop $(REWARD_LOOP_ARGS) | tee $(BENCH_OUT)
	@$(PY) scripts/bench_section.py loadtests.reward_loop "The reward loop against a known truth" \
		< $(BENCH_OUT) > /dev/null

# The flywheel, on from the reward loop (runs it first when its pairs are missing): DPO on the
# loop's votes (train-variant), the adapter served as a variant in an arena against its base,
# voted by the same simulated voters, the probe on both arms, the report; figures to
# docs/benchmarks.md, the adapter to models/smollm2-dpo-flywheel. FLYWHEEL_ARGS: see
# `python -m loadtests.flywheel --help`.
FLYWHEEL_ARGS ?=
data/reward-loop/prefs.jsonl:
	$(MAKE) reward-loop

flywheel: setup data/reward-loop/prefs.jsonl
	@mkdir -p $(dir $(BENCH_OUT))
	@$(PY) -m loadtests.flywheel $(FLYWHEEL_ARGS) | tee $(BENCH_OUT)
	@$(PY) scripts/bench_section.py loadtests.flywheel "A variant trained from votes, against its base" \
		< $(BENCH_OUT) > /dev/null

# The sycophancy probe against every default variant, timed (figures to docs/benchmarks.md).
bench-probe: setup
	$(call bench_into_docs,loadtests.probe_bench,"The sycophancy probe on the default variants")

bench-adapters: setup
	$(call bench_into_docs,loadtests.adapter_bench,"Adapter variants against engines of their own")

# The LoRA work of one decode step on CPU, vLLM's ops against arena-serve's (a minute).
bench-lora-ops: setup
	$(call bench_into_docs,loadtests.lora_ops_bench,"LoRA on CPU: where a decode step's time goes")

# Adaptive arena sampling against uniform, simulated (votes saved, coverage; a few minutes).
bench-adaptive: setup
	$(call bench_into_docs,router.analysis.adaptive_sim,"Adaptive arena sampling: votes saved and coverage")

bench-bandit: setup
	$(call bench_into_docs,router.analysis.bandit_sim,"Bandits: regret and the bias of each estimate")

bench-store: setup
	@bash scripts/setup_postgres.sh
	$(call bench_into_docs,loadtests.store_bench,"Outcome store: sustained events/s")

bench-confirm: setup
	$(call bench_into_docs,router.analysis.confirm_sim,"Confirmation runs: the leaderboard illusion")

bench-kernels: setup
	$(call bench_into_docs,reward.bench,"Reward-model kernels and scorer")

lint: setup
	@.venv/bin/ruff check .

# Keeps data/: the outcome log holds every experiment's records (remove it by hand).
clean:
	rm -rf .venv models .pytest_cache .ruff_cache
