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
    --results experiments/results --threads 2 "$@"
}
# The checkable tasks first, RFT (an hour a cell, issue 12) after the other methods, chat (2-3x arith
# per cell) last: an interrupted session still leaves the exact-correctness comparison complete.
for task in arith arith_noisy; do
  for seed in 0 1 2; do
    grid --tasks "$task" --seeds "$seed" --methods sft spin irft dpo || echo "grid_queue: $task seed $seed exited $?"
  done
done
for task in arith arith_noisy; do
  grid --tasks "$task" --seeds 0 1 2 --methods rft || echo "grid_queue: $task rft exited $?"
done
# chat without RFT before chat's RFT (75 min a cell), with task 1's full fine-tuning arms between the
# seeds, so a short session still adds a seed to every chat method and a first full-FT comparison;
# RFT with T=3 (the reward model retrained every 7 steps) tests the cause of RFT's T=1 reward hacking.
chat() { grid --tasks chat --seeds "$1" --methods sft spin irft dpo || echo "grid_queue: chat seed $1 exited $?"; }
full() { grid --cells arith:sft_full,spin_full,irft_full --seeds "$1" || echo "grid_queue: full FT seed $1 exited $?"; }
# the paper's setup: SPIN, IRFT and RFT from the SFT model (42 steps in all), beside SFT alone for 42
# (and SPIN/IRFT from SFT at lr 3e-5, a tenth of LoRA's 3e-4: at 3e-4 both sides of SPIN's pairs fell)
after_sft() {
  grid --cells arith:sft_2x,spin_after_sft,irft_after_sft,rft_after_sft,spin_after_sft_low_lr,irft_after_sft_low_lr \
    --seeds "$1" || echo "grid_queue: after-SFT arms seed $1 exited $?"
}
chat 0
chat 1
grid --cells arith:rft_t3 --seeds 0 || echo "grid_queue: arith rft_t3 seed 0 exited $?"
full 0
after_sft 0
full 1
full 2
chat 2
# chat RFT's second seed before the from-SFT seeds: the verdict table's weakest row (one seed)
grid --tasks chat --seeds 1 --methods rft || echo "grid_queue: chat rft seed 1 exited $?"
after_sft 1
after_sft 2
grid --cells arith_noisy:rft_t3 chat:rft_t3 --seeds 0 || echo "grid_queue: rft_t3 seed 0 exited $?"
grid --cells arith:rft_t3 arith_noisy:rft_t3 --seeds 1 2 || echo "grid_queue: rft_t3 seeds 1-2 exited $?"
grid --tasks chat --seeds 0 1 2 --methods rft || echo "grid_queue: chat rft exited $?"
.venv/bin/python experiments/report23.py  # docs/results.md, with this grid as its earlier section
