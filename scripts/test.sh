#!/usr/bin/env bash
# Set up and run the whole test suite on real Postgres, Redis and worker processes (what CI runs).
# scripts/test_fast.sh is the quick tier: no services, no browser, nothing slow.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
bash scripts/browser.sh
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
start=$(date +%s)
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
rc=$?
set -e
echo "test suite wall time: $(( $(date +%s) - start )) s"
# pytest exit 5 means no test ran: that is a failure, never a pass.
[ "$rc" -eq 5 ] && { echo "no tests were collected" >&2; exit 1; }
exit "$rc"
