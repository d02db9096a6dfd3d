#!/usr/bin/env bash
# The fast tier, for a developer between edits: every test that needs no service, no worker process and
# no browser, and is not marked slow. Starts nothing and installs nothing (needs the venv of
# scripts/setup.sh). scripts/test.sh stays the whole suite, the one CI runs.
#
# What is left out is decided by tests/conftest.py, not listed here: it marks `integration` every test
# under tests/integration (or tests/faults) or using a Postgres/Redis/deployment fixture, and `browser`
# every test under tests/dashboard or using the browser fixture; a test that reaches a service without
# that mark fails in either tier.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Point the service addresses at nothing, so a test in this tier that reached one anyway fails at once.
export JUICE_TEST_PG_ADMIN=postgresql://nobody@127.0.0.1:1/none JUICE_TEST_REDIS=redis://127.0.0.1:1
start=$(date +%s)
set +e
processes="${JUICE_TEST_PROCESSES:-2}"  # as scripts/test.sh
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
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "${parallel[@]}" \
  -m "not integration and not browser and not slow" "$@"
rc=$?
set -e
echo "fast tier wall time: $(( $(date +%s) - start )) s"
# pytest exit 5 means no test ran: that is a failure, never a pass.
[ "$rc" -eq 5 ] && { echo "no tests were collected" >&2; exit 1; }
exit "$rc"
