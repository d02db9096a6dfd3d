"""What a training run returns to its caller."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunResult:
    status: str  # "completed" | "stopped" (cancelled) | "held" (checkpointed at global_step to hand over)
    global_step: int  # optimiser steps done, including those before a resume
    trained_tokens: int  # cumulative label tokens the loss was computed on (the billing count)
    final_checkpoint: Path | None  # newest complete checkpoint written or resumed from
    last_metrics: dict[str, float] = field(default_factory=dict)
    # select_checkpoint "best_eval_loss": the step of the checkpoint handed back as the fine-tuned model
    # (the lowest eval/loss, step 0 being the starting model); None = the final checkpoint ("last").
    selected_step: int | None = None
    # reward-learning methods: the ranked scores of the training demonstrations (trainer/demonstration_scores.py)
    demonstration_scores: Path | None = None
