"""Which methods score their training demonstrations, by what, and the file they write
(trainer/demonstration_scores.py computes them; the API lists them). Torch-free, so the API imports it."""

from __future__ import annotations

FILE = "demonstration_scores.jsonl"

# method -> the kind of score each of its training lines gets (docs/methods.md §10). SFT learns no reward.
KINDS = {
    "rft": "reward_model",
    "irft": "implicit_reward",
    "dpo": "implicit_reward_margin",
    "iql": "implied_reward",
}
