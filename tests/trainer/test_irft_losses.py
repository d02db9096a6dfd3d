"""irft_loss / anchored_pair_loss / implicit_rewards against cases A-D (docs/methods.md §6.1-§6.4, 1e-6),
hand-computed anchor values and SFT's own gradient (docs/methods.md §6.8), and TRL's DPO sigmoid loss."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from trainer.data import IGNORE_INDEX, TokenizedExample
from trainer.logprobs import per_token_logps, sequence_logps, token_logps
from trainer.losses import anchored_pair_loss, implicit_rewards, irft_loss, sft_nll
from trainer.modeling import load_model_and_tokenizer
from trainer.packing import label_logits, pack_one
from trainer.pairs import pair_logps

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


def _old_pair_loss(pr, pg, rr, rg, beta):
    """The pair loss as it was before the anchor existed (main at 76ae7bb): mean softplus(-beta z)."""
    return torch.nn.functional.softplus(-beta * ((pr - pg) - (rr - rg))).mean()


def test_nll_weight_0_is_the_old_pair_loss():
    torch.manual_seed(0)
    pr, pg, rr, rg = (-30 * torch.rand(7, dtype=torch.float64) for _ in range(4))
    for beta in (0.1, 1.0, 5.0):
        loss, _ = anchored_pair_loss(pr, pg, rr, rg, beta, nll_weight=0.0, num_first_tokens=50)
        assert loss.item() == pytest.approx(_old_pair_loss(pr, pg, rr, rg, beta).item(), abs=TOL)
    # case B's hand value: 0.678561
    loss, _ = anchored_pair_loss(
        _t(-12, -20, -30.5), _t(-15, -18, -30.5), _t(-13, -21, -30.0), _t(-14, -19, -31.0), 0.1
    )
    assert loss.item() == pytest.approx(0.678561, abs=TOL)


def test_anchor_adds_the_first_responses_token_mean_nll():
    # case A's pair (loss 0.598139, d/dpr -0.0450166) with a 4-token demonstration: NLL = 12 / 4 = 3
    pr, pg = _t(-12.0).requires_grad_(), _t(-15.0).requires_grad_()
    loss, z = anchored_pair_loss(pr, pg, _t(-13.0), _t(-14.0), 0.1, nll_weight=0.5, num_first_tokens=4)
    assert z.item() == pytest.approx(2.0, abs=TOL)
    assert loss.item() == pytest.approx(0.598139 + 0.5 * 3.0, abs=TOL)  # 2.098139
    loss.backward()
    assert pr.grad.item() == pytest.approx(-0.0450166 - 0.5 / 4, abs=TOL)  # the anchor pulls the demo up
    assert pg.grad.item() == pytest.approx(0.0450166, abs=TOL)  # and leaves the negative alone
    with pytest.raises(ValueError, match="num_first_tokens"):
        anchored_pair_loss(pr, pg, _t(-13.0), _t(-14.0), 0.1, nll_weight=0.5)


def test_dropped_pairs_leave_the_pair_term_but_still_anchor():
    pr, pg = _t(-12, -20, -30.5), _t(-15, -18, -30.5)
    rr, rg = _t(-13, -21, -30.0), _t(-14, -19, -31.0)
    valid = torch.tensor([True, True, False])
    # z = [2, 0, -1]; pairs 0 and 1: (softplus(-0.2) + log 2) / 2 = (0.598139 + 0.693147) / 2 = 0.645643
    loss, _ = anchored_pair_loss(pr, pg, rr, rg, 0.1, valid=valid)
    assert loss.item() == pytest.approx(0.645643, abs=TOL)
    # the window's divisor (4 valid pairs in all) instead of this batch's 2: 1.291286 / 4 = 0.322822
    assert anchored_pair_loss(pr, pg, rr, rg, 0.1, valid=valid, num_pairs=4)[0].item() == pytest.approx(
        0.322822, abs=TOL
    )
    # nothing valid: only the anchor, (12 + 20 + 30.5) / 25 tokens = 2.5
    none = torch.zeros(3, dtype=torch.bool)
    only, _ = anchored_pair_loss(pr, pg, rr, rg, 0.1, valid=none, nll_weight=1.0, num_first_tokens=25)
    assert only.item() == pytest.approx(2.5, abs=TOL)
    # two negatives per demonstration: each demonstration's log-prob appears twice and counts once
    twice, _ = anchored_pair_loss(
        pr.repeat_interleave(2),
        pg.repeat_interleave(2),
        rr.repeat_interleave(2),
        rg.repeat_interleave(2),
        0.1,
        valid=none.repeat_interleave(2),
        nll_weight=1.0,
        num_first_tokens=25,
        pairs_per_first=2,
    )
    assert twice.item() == pytest.approx(2.5, abs=TOL)


def test_anchor_gradient_equals_sfts_when_the_pair_term_is_zero(tiny_model_dir):
    """nll_weight = 1 with every pair left out is exactly SFT's loss on the demonstrations: the same
    gradient, parameter by parameter, as trainer/methods/sft.py's token-mean NLL through its own packing."""
    model, _ = load_model_and_tokenizer(tiny_model_dir)
    model.train()
    triples = [
        ([1, 5, 6], [7, 8, 2], [9, 2]),
        ([1, 11], [12, 13, 14, 15, 2], [16, 17, 2]),
        ([1, 4, 4, 4], [3, 2], [3, 3]),
    ]
    n_tokens = sum(len(a) for _, a, _ in triples)

    def gradient(loss_of):
        model.zero_grad(set_to_none=True)
        loss_of().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    def anchored():
        first, second = pair_logps(model, triples)
        ref = torch.zeros_like(first)
        loss, _ = anchored_pair_loss(
            first,
            second,
            ref,
            ref,
            0.1,
            valid=torch.zeros(3, dtype=torch.bool),
            nll_weight=1.0,
            num_first_tokens=n_tokens,
        )
        return loss

    def sft():
        batch = pack_one([TokenizedExample(p + a, [IGNORE_INDEX] * len(p) + a) for p, a, _ in triples])
        return sft_nll(token_logps(label_logits(model, batch), batch.targets))

    ours, theirs = gradient(anchored), gradient(sft)
    assert ours.keys() == theirs.keys() and ours
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-6, rtol=1e-5, msg=name)
