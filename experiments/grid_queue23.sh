#!/usr/bin/env bash
# Issue 23's grid, breadth-first by priority, so that a queue cut short by the CPU budget loses whole
# CELLS (the last ones), never seeds:
#   1. sft_plateau, sft_more and the anchored second stages (SPIN, IRFT T=3, RFT; DPO on chat), every
#      planned seed: arith (5 seeds), then arith_noisy (5), then chat (3);
#   2. the same second stages without the anchor (nll_weight 0), in the same task order;
#   3. the optional from-base IRFT with the anchor (issue 9's from-base arms stay the reference).
# Within a call run_grid23.py goes cell by cell, every seed of a cell before the next cell, cheapest
# second stage first (SPIN, IRFT, then RFT). Every call skips the cells whose JSON exists, so this
# script is safe to start again after a stop. Start it as
#   setsid nohup nice -n 10 bash experiments/grid_queue23.sh >> experiments/results23/grid.log 2>&1 < /dev/null &
# and stop it with `kill -- -$(cat /tmp/juice-grid23/queue.pid)` (its process group: this script and the
# current call, which stops its `juice up` cleanly on SIGTERM).
#
# Juice runs from one snapshot of its packages for the whole queue (/tmp/juice-grid23/src, made by the
# first call; GRID23_RESNAPSHOT=1 replaces it with the work tree's current code at the start).
# --prune-checkpoints deletes each judged checkpoint that no later job starts from (run_grid23.py's
# docstring): without it the grid's ~600 MB checkpoints would need ~190 GB; with it, ~10 GB.
#
# Cost estimate on two shared CPU cores, from issue 9's measured wall times (SFT 21 steps ~4 min with
# its evaluations; SPIN/IRFT from SFT ~6-7 min; RFT from SFT ~22 min; chat jobs 2-3x arith's, chat RFT
# ~70 min) and evaluations (40 arith prompts ~40 s, so 200 ~4 min; 40 chat prompts ~7-10 min, so 80
# ~15-20 min), per cell including its evaluation:
#   arith, arith_noisy: sft_plateau (126 steps, 18 dev evaluations) ~30 min; sft_more ~8 min;
#                       spin/irft ~12 min each; rft ~26 min           -> ~1.5 h per seed in priority 1
#   chat:               sft_plateau ~60 min; sft_more ~25 min; spin/irft ~30 min each; rft ~90 min;
#                       dpo ~25 min                                   -> ~4.3 h per seed in priority 1
# Priority 1: ~7.5 h arith + ~7.5 h arith_noisy + ~13 h chat = ~28 h.
# Priority 2: ~50 min per arith seed (x10) + ~2.9 h per chat seed (x3) = ~17 h.
# Priority 3: ~20 min per arith seed (x10) + ~45 min per chat seed (x3) = ~5.5 h.
# Whole queue: ~50 h (two days); the first complete verdict (arith, priority 1) after ~7.5 h.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error TQDM_DISABLE=1
HOME23=/tmp/juice-grid23
snapshot=(--snapshot)
if [[ "${GRID23_RESNAPSHOT:-0}" == 1 ]]; then
  snapshot=(--snapshot --resnapshot)
fi
# A call that fails (e.g. a worker that stopped taking jobs: run_grid23.py cancels the stalled job and
# exits) is tried again, up to three times, each with a fresh `juice up` on the same home.
grid() {
  local attempt rc=0
  for attempt in 1 2 3; do
    .venv/bin/python experiments/run_grid23.py --home "$HOME23" "${snapshot[@]}" \
      --results experiments/results23 --threads 2 --prune-checkpoints "$@"
    rc=$?
    snapshot=(--snapshot)  # a resnapshot happens once, at the start
    [[ $rc == 0 ]] && return 0
    (( rc >= 128 )) && return $rc  # killed by a signal: a stop, not a failure to retry
    echo "grid_queue23: attempt $attempt of '$*' exited $rc"
  done
  return $rc
}
report() { .venv/bin/python experiments/report23.py || echo "grid_queue23: report exited $?"; }

mkdir -p "$HOME23" && echo $$ > "$HOME23/queue.pid"
echo "grid_queue23: started $(date -u +%FT%TZ) at $(git rev-parse --short HEAD)"
# A pilot first: seed 0 of every priority-1 arith cell, so each method meets the real model within the
# first ~1.5 h (a defect then costs one seed, not a night), then the breadth-first order below, which
# skips what the pilot ran.
grid --cells arith:sft_plateau,sft_more,spin_anchor,irft_anchor,rft_anchor --seeds 0 || echo "grid_queue23: pilot gave up"
# Seed-major within a task: a seed's sft_plateau model lives in this machine's /tmp only, and a session's
# machine is gone after ~3 h, so every second stage of a seed runs right after its plateau (re-run once
# per session at most), never a plateau for every seed first and their second stages a session later.
py23() { .venv/bin/python -c "import sys; sys.path.insert(0, 'experiments'); import cells23 as c; $1"; }
cells_of() { py23 "print(','.join(n for n in c.cells_for('$1', {$2}) if n != c.PLATEAU))"; }
seeds_of() { py23 "print(*range(c.PLANNED_SEEDS['$1']))"; }
for priority in 1 2; do
  for task in arith arith_noisy chat; do
    cells=$(cells_of "$task" "$priority")
    for seed in $(seeds_of "$task"); do
      grid --cells "$task:sft_plateau,$cells" --seeds "$seed" || echo "grid_queue23: $task seed $seed priority $priority gave up"
    done
    report  # the page follows the grid: each task's verdicts appear as soon as they exist
  done
done
grid --tasks arith arith_noisy chat --priority 3 || echo "grid_queue23: priority 3 gave up"
report
echo "grid_queue23: finished $(date -u +%FT%TZ)"
