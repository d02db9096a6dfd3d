"""irft_loss / implicit_rewards against methods.md §13 cases A-D (1e-6), and TRL's DPO sigmoid loss."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from trainer.logprobs import per_token_logps, sequence_logps
from trainer.losses import implicit_rewards, irft_loss

TOL = 1e-6


def _t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_case_a_single_pair():
    pr, pg = _t(-12.0).requires_grad_(), _t(-15.0).requires_grad_()
    rr, rg = _t(-13.0), _t(-14.0)
    loss, z = irft_loss(pr, pg, rr, rg, beta=0.1)
    assert z.item() == pytest.approx(2.0, abs=TOL)
    assert loss.item() == pytest.approx(0.598139, abs=TOL)
    loss.backward()
    assert pr.grad.item() == pytest.approx(-0.0450166, abs=TOL)
    assert pg.grad.item() == pytest.approx(0.0450166, abs=TOL)
    assert irft_loss(pr, pg, rr, rg, 0.1, "hinge")[0].item() == pytest.approx(0.8, abs=TOL)
    real, gen = implicit_rewards(pr, rr, 0.1), implicit_rewards(pg, rg, 0.1)
    assert real.item() == pytest.approx(0.1, abs=TOL) and gen.item() == pytest.approx(-0.1, abs=TOL)
    assert (real - gen).item() == pytest.approx(0.2, abs=TOL)
    assert (real > gen).float().mean().item() == 1.0
    # beta = 5: loss and gradients (-beta * sigma(-beta z) = -5 * sigma(-10)).
    pr5, pg5 = _t(-12.0).requires_grad_(), _t(-15.0).requires_grad_()
    loss5, _ = irft_loss(pr5, pg5, rr, rg, beta=5.0)
    assert loss5.item() == pytest.approx(0.000045, abs=TOL)
    loss5.backward()
    expected = 5.0 / (1.0 + math.exp(10.0))
    assert pr5.grad.item() == pytest.approx(-expected, abs=1e-9)
    assert pg5.grad.item() == pytest.approx(expected, abs=1e-9)


def test_case_b_batch_mean():
    pr, pg = _t(-12, -20, -30.5), _t(-15, -18, -30.5)
    rr, rg = _t(-13, -21, -30.0), _t(-14, -19, -31.0)
    loss, z = irft_loss(pr, pg, rr, rg, beta=0.1)
    assert z.tolist() == pytest.approx([2.0, 0.0, -1.0], abs=TOL)
    assert loss.item() == pytest.approx(0.678561, abs=TOL)
    accuracy = (implicit_rewards(pr, rr, 0.1) > implicit_rewards(pg, rg, 0.1)).float().mean()
    assert accuracy.item() == pytest.approx(1 / 3, abs=TOL)


@pytest.mark.parametrize("beta", [0.1, 1.0, 5.0])
def test_case_c_initialisation_is_log_2(beta):
    logps = _t(-3.0, -40.0, -7.5)
    other = _t(-9.0, -1.0, -7.5)
    loss, _ = irft_loss(logps, other, logps, other, beta)
    assert loss.item() == pytest.approx(math.log(2), abs=TOL)


def test_case_d_masking_and_shift_through_logprobs():
    # Rows: [real; gen], one prompt [0, 1]. Position 3 logits are unused (nothing follows).
    labels = torch.tensor([[-100, -100, 2, 3], [-100, -100, 1, 3]])
    policy = torch.tensor(
        [
            [[0, 0, 0, 0], [1, 0, 2, 0], [0, 3, 0, 1], [5, 5, 5, 5]],
            [[0, 0, 0, 0], [1, 0, 2, 0], [2, 0, 0, 0], [5, 5, 5, 5]],
        ],
        dtype=torch.float32,
    )
    ref = torch.tensor(
        [
            [[0, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 1], [9, 0, 0, 0]],
            [[0, 0, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [9, 0, 0, 0]],
        ],
        dtype=torch.float32,
    )
    policy_real, policy_gen = sequence_logps(*per_token_logps(policy, labels)).chunk(2)
    ref_real, ref_gen = sequence_logps(*per_token_logps(ref, labels)).chunk(2)
    assert policy_real.item() == pytest.approx(-2.704809, abs=TOL)
    assert ref_real.item() == pytest.approx(-1.750077, abs=TOL)
    assert policy_gen.item() == pytest.approx(-4.834565, abs=TOL)
    assert ref_gen.item() == pytest.approx(-3.487337, abs=TOL)
    loss, z = irft_loss(policy_real, policy_gen, ref_real, ref_gen, beta=0.1)
    assert z.item() == pytest.approx(0.392496, abs=TOL)
    assert loss.item() == pytest.approx(0.673715, abs=TOL)
    assert irft_loss(policy_real, policy_gen, ref_real, ref_gen, 1.0)[0].item() == pytest.approx(
        0.516034, abs=TOL
    )
    hinge = irft_loss(policy_real, policy_gen, ref_real, ref_gen, 0.1, "hinge")[0]
    assert hinge.item() == pytest.approx(0.960750, abs=TOL)


def test_unknown_loss_type():
    with pytest.raises(ValueError):
        irft_loss(_t(0.0), _t(0.0), _t(0.0), _t(0.0), 0.1, "ipo")


def _trl_dpo_sigmoid_loss(chosen, rejected, ref_chosen, ref_rejected, beta):
    """Run TRL's DPOTrainer._compute_loss on given per-sequence log-probs, with a stand-in trainer whose
    'model' returns one per-token log-prob per row equal to the sequence log-prob (TRL sums them)."""
    from collections import defaultdict

    from trl.trainer.dpo_trainer import DPOTrainer

    logps = torch.cat([chosen, rejected])  # (2B,) TRL lays batches out [chosen; rejected]
    n = logps.shape[0]
    outputs = SimpleNamespace(
        log_probs=logps[:, None],  # (2B, 1): one completion token per row
        entropy=torch.zeros(n, 1),
        mean_logits=torch.zeros(n, 1),
        is_top1=torch.zeros(n, 1, dtype=torch.bool),
    )
    fake_model = SimpleNamespace(training=True)
    identity = lambda x: x  # noqa: E731
    trainer = SimpleNamespace(
        model=fake_model,
        accelerator=SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=identity, gather=identity),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=["sigmoid"],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=0.0,
        use_weighting=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros(n, 2, dtype=torch.long),
        "attention_mask": torch.ones(n, 2, dtype=torch.long),
        "completion_mask": torch.tensor([[0, 1]] * n),
        "ref_chosen_logps": ref_chosen,
        "ref_rejected_logps": ref_rejected,
    }
    return DPOTrainer._compute_loss(trainer, lambda **kwargs: outputs, inputs, False)


def test_matches_trl_dpo_sigmoid_loss():
    try:
        import trl  # noqa: F401
    except ImportError:
        pytest.skip("trl is not installed (it is in the `test` extra)")
    torch.manual_seed(0)
    chosen, rejected = -20 * torch.rand(6), -20 * torch.rand(6)
    ref_chosen, ref_rejected = -20 * torch.rand(6), -20 * torch.rand(6)
    for beta in (0.1, 1.0, 5.0):
        ours, _ = irft_loss(chosen, rejected, ref_chosen, ref_rejected, beta)
        theirs = _trl_dpo_sigmoid_loss(chosen, rejected, ref_chosen, ref_rejected, beta)
        assert ours.item() == pytest.approx(float(theirs), abs=1e-6)
