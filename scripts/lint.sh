#!/usr/bin/env bash
# The lint gate: ruff's rules, ruff's formatting, and mypy on the packages pyproject.toml lists (api/,
# worker/, trainer/, inference/, graders/, juice/). Needs the venv of scripts/setup.sh. Runs all three and fails
# if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
rc=0
echo "== ruff check"
.venv/bin/ruff check . || rc=1
echo "== ruff format --check"
.venv/bin/ruff format --check . || rc=1
echo "== mypy"
.venv/bin/mypy || rc=1
exit "$rc"
