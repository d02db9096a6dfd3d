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
# Two test processes (pytest-xdist; JUICE_TEST_PROCESSES=1 runs one): most integration tests wait on
# worker processes, heartbeats and polls, so two keep both cores busy. A module is one unit of work
# (its module-scoped deployments are built once), the longest modules handed out first (tests/conftest.py).
processes="${JUICE_TEST_PROCESSES:-2}"
parallel=()
if [ "$processes" -gt 1 ]; then
  # --no-loadscope-reorder: xdist would otherwise hand out the modules with the most tests first, which
  # leaves the longest single tests (harness smokes, schemathesis) to the end, run alone.
  parallel=(-n "$processes" --dist loadscope --no-loadscope-reorder)
  # One compute thread per test process: torch's default (a thread per core) in each of two processes
  # oversubscribes the cores, and idle OpenMP threads spin. Measured on the fast tier, two processes:
  # 229 s with the default, 145 s with one thread each (docs/benchmarks.md).
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
fi
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "${parallel[@]}" "$@"
rc=$?
set -e
echo "test suite wall time: $(( $(date +%s) - start )) s"
# pytest exit 5 means no test ran: that is a failure, never a pass.
[ "$rc" -eq 5 ] && { echo "no tests were collected" >&2; exit 1; }
exit "$rc"
