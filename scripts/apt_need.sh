#!/usr/bin/env bash
# Install the distribution's packages a test needs, when missing: `apt_need.sh LABEL CHECK PKG...`
# runs the shell command CHECK and, where it fails, installs PKG... with apt-get as root or with
# passwordless sudo (the package lists refreshed once when missing or stale). Without apt-get or
# the right to use it, it says what to run and returns 0: the tests that need the packages then
# fail saying so (they are never skipped). Safe to re-run.
set -euo pipefail
label=$1 check=$2
shift 2
step() { printf '\033[1m[setup %s]\033[0m %s\n' "$label" "$1"; }

if bash -c "$check" >/dev/null 2>&1; then
  step "$* present"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  step "$* missing and there is no apt-get: install them with your package manager (the tests that need them fail without them)"
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if ! sudo -n true 2>/dev/null; then
    step "$* missing: run 'sudo apt-get install $*' (the tests that need them fail without them)"
    exit 0
  fi
  sudo="sudo -n"
fi
step "installing $* from the distribution (apt-get; a minute or two the first time)"
export DEBIAN_FRONTEND=noninteractive
install() {
  local log status=0
  log=$(mktemp)
  $sudo apt-get install -y -q "$@" >"$log" 2>&1 || status=$?
  if [ "$status" = 0 ]; then grep -E "newly installed" "$log" || true; else tail -n 5 "$log" >&2; fi
  rm -f "$log"
  return "$status"
}
if ! apt-cache show "$@" >/dev/null 2>&1 || ! install "$@"; then
  $sudo apt-get update -q | tail -n 1
  install "$@"
fi
bash -c "$check" >/dev/null 2>&1 || { echo "$* did not install" >&2; exit 1; }
