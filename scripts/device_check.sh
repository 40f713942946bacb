#!/usr/bin/env bash
# The GPU checks in one run, for a session that the `device` tool lends a GPU machine: the kernel
# and reward-model tests on CUDA (no interpreter), then `python -m reward.bench` (the Triton rows,
# the patched scorer against transformers eager). Paste its bench.md into docs/benchmarks.md.
#
# That machine has torch, triton, transformers and pytest but none of the serving stack, and takes
# 64 MiB of files: carry the test model and the demo reward model's config and tokenizer (the
# benchmark gives it random weights of its shape; a forward's speed does not depend on them):
#   carry:   models/tiny-reward models/smollm2-reward/config.json
#            models/smollm2-reward/tokenizer.json models/smollm2-reward/tokenizer_config.json
#            models/smollm2-reward/chat_template.jinja
#   command: bash scripts/device_check.sh      (timeout_s 540: about 6 minutes of work)
# Writes gpu.txt, tests.log, bench.md and bench.err under $OUT (./device-out where $OUT is unset).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-device-out}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
unset TRITON_INTERPRET

{
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
        --format=csv,noheader
    "$py" -c 'import sys, torch, triton, transformers
print("python", sys.version.split()[0], "torch", torch.__version__, "triton", triton.__version__,
      "transformers", transformers.__version__, "cuda", torch.cuda.is_available())'
} 2>&1 | tee "$out/gpu.txt"

timeout 240 "$py" -m pytest tests/kernels tests/reward -q -p no:cacheprovider 2>&1 |
    tee "$out/tests.log"
tests=$?
timeout 300 "$py" -m reward.bench 2>"$out/bench.err" | tee "$out/bench.md"
bench=$?
echo "tests rc=$tests bench rc=$bench" | tee -a "$out/gpu.txt"
exit $((tests != 0 || bench != 0))
