#!/usr/bin/env bash
# The PostgreSQL server the store tests start for themselves (tests/pg.py), for `make test`: the
# distribution's `postgresql`, installed when missing (scripts/apt_need.sh). The tests run their
# own server in a temporary folder, as an unprivileged user where they run as root; the cluster
# the package may create and start is not used. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/apt_need.sh postgres "ls /usr/lib/postgresql/*/bin/initdb" postgresql
