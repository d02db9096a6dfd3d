"""Step and warmup arithmetic (docs/methods.md §6.7, case M), optimiser groups and the HF schedule."""

from __future__ import annotations

import pytest
import torch

from trainer.config import SFTHyperparameters
from trainer.optim import build_optimizer, build_scheduler, num_warmup_steps
from trainer.spec.plan import steps_per_epoch


def test_case_m_irft_stage():
    # 10,000 demonstrations per stage, global batch 8, one epoch per stage.
    per_stage = steps_per_epoch(10_000, batch_size=8, gradient_accumulation_steps=1)
    assert per_stage == 1250
    assert num_warmup_steps(SFTHyperparameters(warmup_ratio=0.1), per_stage) == 125
    assert 5 * per_stage == 6250


@pytest.mark.parametrize("epochs, total, warmup", [(2, 1556, 156), (6, 4668, 467)])
def test_case_m_spin_iter0(epochs, total, warmup):
    # Global batch 64 written three ways: per-device 8 x accumulation 8, or 8 x 1 on 8 processes.
    per_epoch = steps_per_epoch(49_792, batch_size=8, gradient_accumulation_steps=8)
    assert per_epoch == 778
    assert steps_per_epoch(49_792, batch_size=8, gradient_accumulation_steps=1, num_processes=8) == 778
    assert per_epoch * epochs == total
    assert num_warmup_steps(SFTHyperparameters(warmup_ratio=0.1), total) == warmup


def test_warmup_steps_win_over_ratio():
    assert num_warmup_steps(SFTHyperparameters(warmup_ratio=0.5, warmup_steps=3), 100) == 3
    assert num_warmup_steps(SFTHyperparameters(), 100) == 0


def test_partial_last_batch_and_window_count():
    assert steps_per_epoch(9, batch_size=4, gradient_accumulation_steps=1) == 3  # 4 + 4 + 1
    assert steps_per_epoch(9, batch_size=2, gradient_accumulation_steps=2) == 3  # 5 micro-batches
    assert steps_per_epoch(1, batch_size=8, gradient_accumulation_steps=4) == 1


def _tiny_module():
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))


def test_no_weight_decay_on_biases_and_norms():
    model = _tiny_module()
    opt = build_optimizer(model, SFTHyperparameters(weight_decay=0.1, learning_rate=1e-3))
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert [p.shape for p in decayed["params"]] == [torch.Size([4, 3])]
    assert sorted(tuple(p.shape) for p in plain["params"]) == [(4,), (4,), (4,)]


def test_frozen_parameters_are_left_out():
    model = _tiny_module()
    model[0].weight.requires_grad_(False)
    opt = build_optimizer(model, SFTHyperparameters())
    assert all(p is not model[0].weight for g in opt.param_groups for p in g["params"])


def test_linear_schedule_with_warmup_values():
    model = _tiny_module()
    hp = SFTHyperparameters(learning_rate=1.0, warmup_steps=2, lr_scheduler_type="linear")
    opt = build_optimizer(model, hp)
    sched = build_scheduler(opt, hp, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    # HF: warmup from 0 over 2 steps, then linear decay to 0 at step 10.
    assert lrs == pytest.approx([0.0, 0.5, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])


def test_constant_schedule_ignores_warmup_and_warmup_variant_does_not():
    model = _tiny_module()
    for kind, first in [("constant", 1.0), ("constant_with_warmup", 0.0), ("cosine", 0.0)]:
        hp = SFTHyperparameters(learning_rate=1.0, warmup_steps=4, lr_scheduler_type=kind)
        sched = build_scheduler(build_optimizer(model, hp), hp, total_steps=10)
        assert sched.get_last_lr()[0] == first, kind
