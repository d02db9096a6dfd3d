#!/usr/bin/env bash
# The dashboard tests drive Debian's Chromium through Playwright (no browser download): install it if missing.
set -euo pipefail
need_sudo() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium with apt"
  need_sudo apt-get update -qq
  need_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
chromium --version
