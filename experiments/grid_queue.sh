#!/usr/bin/env bash
# Run the rest of issue 9's grid in breadth-first order (every task's seed 0 before any task's later
# seeds), so an interrupted session still leaves every task with results. Each run_grid call skips the
# cells whose JSON exists, so this script is safe to start again after a stop.
#   setsid nohup nice -n 10 bash experiments/grid_queue.sh >> experiments/results/grid.log 2>&1 < /dev/null &
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error TQDM_DISABLE=1
grid() {
  .venv/bin/python experiments/run_grid.py --home /tmp/juice-grid --snapshot \
    --methods sft spin irft rft dpo --results experiments/results --threads 2 "$@"
}
for seed in 0 1 2; do
  for task in chat arith_noisy arith; do
    grid --tasks "$task" --seeds "$seed" || echo "grid_queue: $task seed $seed exited $?"
  done
done
.venv/bin/python experiments/report.py
