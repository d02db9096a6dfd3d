"""Issue 23's grid, declared: its cells, the numbers every job runs with, and each cell's `method` block.

No heavy imports (no torch, no HTTP client), so run_grid23.py, report23.py and the tests share one
definition of what was run.

The regime (issue 23 §4): SFT is trained to its dev plateau first (`sft_plateau`: 6 epochs at LoRA's
3e-4, evaluated on the dev split every 7 steps, `select_checkpoint: best_eval_loss`), and every second
stage starts from that model (`model: "ft:..."` of the same seed's sft_plateau job) for the same 21
optimiser steps at the SFT stage's own rate, 3e-4. The control is `sft_more`: 21 more SFT steps at the
same rate. A second stage keeps its last step (`select_checkpoint: last`), so the method's own effect is
measured, not the selection's.

Why 3e-4 and not a tenth of it: a pilot at 3e-5 (arith seed 0, experiments/results23-pilot-lr3e-5/) moved nothing:
SPIN's and IRFT's pair loss stayed at log 2 (margins within +-0.04 nats) for all 21 steps, and sft_more and
SPIN + NLL answered the same held-out problems (exact 0.415 both, plateau 0.405). At 3e-4, issue 9's
SPIN without an anchor dragged both sides of its pairs down and lost SFT's answers: the regime where the
anchor and the on-form negatives have something to prove.

Every option a cell tests is passed explicitly, defaults included, so that a later change of a
trainer default does not change a cell; each result records its full request besides.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from tasks import sizes23  # the sibling module (no heavy imports either)

EXPERIMENT = "issue23"
TASKS = ("arith", "arith_noisy", "chat")  # run order: the checkable tasks first
DEMO_MODEL = "SmolLM2-135M-Instruct"
TINY_MODEL = "tiny-llama"
# At least 5 seeds on the arithmetic tasks and 3 on chat (issue 23): where CPU time forces cuts, the
# queue cuts cells, never seeds.
PLANNED_SEEDS = {"arith": 5, "arith_noisy": 5, "chat": 3}
PLATEAU = "sft_plateau"
CONTROL = "sft_more"


@dataclass(frozen=True)
class Cell:
    """One arm of the grid. `kind` is the method (spin = irft with T=1); `start` the model it trains
    from; `nll_weight` the anchor (None: SFT, whose loss is the NLL itself); `priority` the queue's
    order (1 first: cut from the back)."""

    name: str
    kind: str
    start: str  # "base" or PLATEAU
    nll_weight: float | None
    priority: int
    label: str
    tasks: tuple[str, ...] = TASKS

    @property
    def from_sft(self) -> bool:
        return self.start == PLATEAU

    @property
    def second_stage(self) -> bool:
        """A method arm started from the SFT plateau model and compared with sft_more."""
        return self.from_sft and self.name != CONTROL


ANCHOR = 1.0  # nll_weight of the anchored arms: the demonstration NLL at SFT's own scale
CELLS: dict[str, Cell] = {
    c.name: c
    for c in (
        Cell(PLATEAU, "sft", "base", None, 1, "SFT to its dev plateau"),
        Cell(CONTROL, "sft", PLATEAU, None, 1, "→ more SFT (control)"),
        Cell("spin_anchor", "spin", PLATEAU, ANCHOR, 1, "→ SPIN + NLL"),
        Cell("irft_anchor", "irft", PLATEAU, ANCHOR, 1, "→ IRFT T=3 + NLL"),
        Cell("rft_anchor", "rft", PLATEAU, ANCHOR, 1, "→ RFT + NLL"),
        Cell("dpo_anchor", "dpo", PLATEAU, ANCHOR, 1, "→ DPO + NLL (pref. data)", ("chat",)),
        Cell("spin_noanchor", "spin", PLATEAU, 0.0, 2, "→ SPIN"),
        Cell("irft_noanchor", "irft", PLATEAU, 0.0, 2, "→ IRFT T=3"),
        Cell("rft_noanchor", "rft", PLATEAU, 0.0, 2, "→ RFT"),
        Cell("dpo_noanchor", "dpo", PLATEAU, 0.0, 2, "→ DPO (pref. data)", ("chat",)),
        # the low-priority from-base reference: issue 9's from-base IRFT with the two remedies on
        Cell("irft_anchor_from_base", "irft", "base", ANCHOR, 3, "IRFT T=3 + NLL, from base"),
    )
}


def cells_for(task: str, priorities: set[int] | None = None) -> list[str]:
    """The cells that apply to a task, in the queue's order (priority, then declaration)."""
    found = [
        c for c in CELLS.values() if task in c.tasks and (priorities is None or c.priority in priorities)
    ]
    return [c.name for c in sorted(found, key=lambda c: c.priority)]


# ---------------------------------------------------------------------------------------------------
# The numbers


def grid_config(smoke: bool) -> dict[str, Any]:
    """Every number the grid runs with (written into each result)."""
    sizes = {task: sizes23(task, smoke) for task in TASKS}
    n_train = sizes["arith"].n_train
    assert all(s.n_train == n_train for s in sizes.values())  # one step budget for every task
    batch = 4 if smoke else 8
    steps_per_epoch = math.ceil(n_train / batch)  # 21 on the full grid, 3 in the smoke run
    plateau_epochs = 2 if smoke else 6
    return {
        "experiment": EXPERIMENT,
        "smoke": smoke,
        "model": TINY_MODEL if smoke else DEMO_MODEL,
        "sizes": {
            t: {"n_train": s.n_train, "n_heldout": s.n_heldout, "n_dev": s.n_dev} for t, s in sizes.items()
        },
        # shared by every job; the schedule, warmup and clipping are the trainer's current defaults,
        # spelled out so a default change does not reach a cell
        "common": {
            "batch_size": batch,
            "gradient_accumulation_steps": 1,
            # the smoke run's tiny tokenizer spells chat out in ~350 tokens: 512 keeps every row whole
            "max_seq_len": 512 if smoke else 256,
            "lora": {"enabled": True, "r": 16, "alpha": 32},
            "lr_scheduler_type": "linear",
            "warmup_ratio": 0.0,
            "warmup_steps": 0,
            "weight_decay": 0.0,
            "max_grad_norm": 1.0,
            "checkpoint_interval": 1_000_000,  # the last step saves; best_eval_loss saves its own
            "logging_interval": 1,
        },
        # SFT from the base model to its dev plateau: 6 epochs = 126 steps (issue 9: 42 steps were
        # still improving, 0.18 -> 0.30 exact), the best dev step handed back
        "plateau": {
            "n_epochs": plateau_epochs,
            "learning_rate": 3e-4,
            "eval_interval": 1 if smoke else 7,
            "select_checkpoint": "best_eval_loss",
        },
        # every second stage and the control: one epoch (21 steps; IRFT T=3's slices 7 each)
        "second_stage": {
            "n_epochs": 1,
            "learning_rate": 3e-4,
            "eval_interval": 1 if smoke else 3,
            "select_checkpoint": "last",
        },
        # the optional from-base arm: issue 9's from-base rate and budget
        "from_base": {
            "n_epochs": 1,
            "learning_rate": 3e-4,
            "eval_interval": 1 if smoke else 3,
            "select_checkpoint": "last",
        },
        "anchor_nll_weight": ANCHOR,
        # IRFT/SPIN: negatives sampled from the policy itself (temperature 1, no nucleus cut: the
        # distribution the method's gradient analysis assumes), one per prompt (so a step sees the
        # same number of pairs as SFT sees examples), truncated ones dropped (a negative that differs
        # from its demonstration by a missing EOS is the form contrast issue 23 §2 removes), length
        # "auto" (twice the longest demonstration: room to stop for any answer the data holds)
        "irft": {
            "T": 3,
            "schedule": "stagewise",
            "beta": 0.1,
            "loss_type": "sigmoid",
            "samples_per_prompt": 1,
            # the smoke run's untrained tiny model never stops: dropping would leave no pair to train on
            "truncated_negatives": "keep" if smoke else "drop",
            "generation": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": "auto"},
        },
        # RFT: every remedy of issue 23 on; kl_target 1 nat, not 6: issue 9's from-base RFT collapsed
        # at KL 5-8.5 and its from-SFT RFT kept SFT's answers below 2.1, so a 6-nat target would allow
        # exactly the drift that hurt and never bind from SFT. Sample length "auto" as IRFT's: a fixed
        # cap below a long chat demonstration would earn the missing-EOS penalty for imitating it.
        "rft": {
            "outer_iterations": 1,
            "samples_per_prompt": 4,
            "beta": 0.05,  # the KL coefficient's starting value; the controller moves it
            "kl_target": 1.0,
            "kl_horizon": 10,
            "missing_eos_penalty": 1.0,
            "whiten_advantages": True,
            "reward_normalization": True,
            "reward_learning_rate": 1e-5,
            "reward_epochs": 1,
            "reward_trainable_layers": 4,
            "generation": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": "auto"},
        },
        # the harness's greedy generation length: issue 9's, so the from-base reference compares (the
        # demonstrations are 24-31 tokens on arith, chat replies up to 200 characters)
        "eval_max_new_tokens": {"arith": 8, "arith_noisy": 8, "chat": 8}
        if smoke
        else {"arith": 40, "arith_noisy": 40, "chat": 48},
        "dpo": {"beta": 0.1, "loss_type": "sigmoid"},
        "budget": "same optimiser steps for every second stage",
        "budget_steps": steps_per_epoch,
        "plateau_steps": steps_per_epoch * plateau_epochs,
    }


def method_body(cell_name: str, task: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The job's `method` block of a cell on a task (the same on every task today: RFT's and IRFT's
    sample length is "auto", derived by the trainer from each task's demonstrations)."""
    cell = CELLS[cell_name]
    stage = "plateau" if cell.name == PLATEAU else "second_stage" if cell.from_sft else "from_base"
    hp: dict[str, Any] = {**copy.deepcopy(cfg["common"]), **cfg[stage]}
    if cell.nll_weight is not None:
        hp["nll_weight"] = cell.nll_weight
    if cell.kind == "sft":
        return {"type": "sft", "sft": {"hyperparameters": hp}}
    if cell.kind in ("spin", "irft"):
        irft = copy.deepcopy(cfg["irft"])
        outer_iterations = irft.pop("T")
        hp.update(outer_iterations=1 if cell.kind == "spin" else outer_iterations, **irft)
        return {"type": "irft", "irft": {"hyperparameters": hp}}
    if cell.kind == "rft":
        hp.update(copy.deepcopy(cfg["rft"]))
        return {"type": "rft", "rft": {"hyperparameters": hp}}
    if cell.kind == "dpo":
        hp.update(copy.deepcopy(cfg["dpo"]))
        return {"type": "dpo", "dpo": {"hyperparameters": hp}}
    raise ValueError(f"unknown kind {cell.kind!r} of cell {cell_name!r}")


def expected_steps(cell_name: str, cfg: dict[str, Any]) -> int:
    """The optimiser steps a cell's job must take: the plateau's, or the one budget of the rest."""
    return cfg["plateau_steps"] if cell_name == PLATEAU else cfg["budget_steps"]


def config_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
