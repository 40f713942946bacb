#!/usr/bin/env bash
# What the browser tests of the UI need (tests/e2e/test_ui.py), for `make test`; safe to re-run:
# - the distribution's chromium and chromium-driver (Selenium's own driver manager and
#   Playwright's browser download need the network): installed with apt-get when missing, as
#   root or with passwordless sudo; elsewhere it says what to run, and those tests fail saying
#   so (they are never skipped);
# - axe-core, the accessibility checker run in each page, from the npm registry
#   (scripts/fetch_axe.py).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\033[1m[setup browser]\033[0m %s\n' "$1"; }

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  step "chromium and chromedriver: present"
elif ! command -v apt-get >/dev/null 2>&1; then
  step "chromium and chromedriver are missing and there is no apt-get: install them with your package manager (the UI tests fail without them)"
else
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    if sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      step "chromium and chromedriver are missing: run 'sudo apt-get install chromium chromium-driver' (the UI tests fail without them)"
      sudo=skip
    fi
  fi
  if [ "$sudo" != skip ]; then
    step "installing chromium and chromium-driver from the distribution (apt-get; a minute or two the first time)"
    export DEBIAN_FRONTEND=noninteractive
    install() {
      local log status=0
      log=$(mktemp)
      $sudo apt-get install -y -q chromium chromium-driver >"$log" 2>&1 || status=$?
      if [ "$status" = 0 ]; then grep -E "newly installed" "$log" || true; else tail -n 5 "$log" >&2; fi
      rm -f "$log"
      return "$status"
    }
    # Package lists that are missing or stale (a download that 404s) are refreshed once.
    if ! apt-cache show chromium-driver >/dev/null 2>&1 || ! install; then
      $sudo apt-get update -q | tail -n 1
      install
    fi
    command -v chromedriver >/dev/null || { echo "chromium-driver did not install" >&2; exit 1; }
  fi
fi
.venv/bin/python scripts/fetch_axe.py | sed 's/^/\x1b[1m[setup browser]\x1b[0m /'
