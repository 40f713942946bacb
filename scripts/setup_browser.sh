#!/usr/bin/env bash
# What the browser tests of the UI need (tests/e2e/test_ui.py), for `make test`; safe to re-run:
# - the distribution's chromium and chromium-driver (Selenium's own driver manager and
#   Playwright's browser download need the network), installed when missing
#   (scripts/apt_need.sh);
# - axe-core, the accessibility checker run in each page, from the npm registry
#   (scripts/fetch_axe.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/apt_need.sh browser "command -v chromium && command -v chromedriver" chromium chromium-driver
.venv/bin/python scripts/fetch_axe.py | sed 's/^/\x1b[1m[setup browser]\x1b[0m /'
