"""IQL (TD-regularised MLE, docs/methods.md §9) on the tiny model, CPU: td_weight 0 is SFT, the packed loss
is each row's own, learning and metrics, resume parity. The loss itself: tests/trainer/test_losses.py."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from tests.trainer.recording import Crash, RecordingSink
from trainer import TrainConfig, run
from trainer.checkpointing import find_latest_complete
from trainer.data import IGNORE_INDEX, TokenizedExample
from trainer.losses import td_regularised_nll
from trainer.methods import iql, sft
from trainer.modeling import load_model_and_tokenizer
from trainer.packing import label_logits, pack_one

IQL_METRICS = {"train/nll", "train/td", "train/reward_mean", "train/reward_std"}


@pytest.fixture
def make_config(tmp_path, tiny_model_dir, rows, write_jsonl):
    train_file = write_jsonl(tmp_path / "train.jsonl", rows)

    def make(output="out", method="iql", validation_file=None, resume_from=None, **hyperparameters):
        return TrainConfig.from_dict(
            {
                "model": str(tiny_model_dir),
                "training_file": str(train_file),
                "output_dir": str(tmp_path / output),
                "method": method,
                "validation_file": validation_file,
                "resume_from": resume_from,
                "device": "cpu",
                "seed": 0,
                "hyperparameters": {"learning_rate": 1e-2, **hyperparameters},
            }
        )

    return make


def _weights(path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def _row(prompt: list[int], *turns: tuple[list[int], bool]) -> TokenizedExample:
    """A row: the prompt, then stretches of tokens, trained (True) or not (a user turn, template glue)."""
    ids, labels = list(prompt), [IGNORE_INDEX] * len(prompt)
    for tokens, trained in turns:
        ids += tokens
        labels += tokens if trained else [IGNORE_INDEX] * len(tokens)
    return TokenizedExample(ids, labels)


# Rows of different lengths; the first is a two-turn chat (two trained stretches, each its own episode).
ROWS = [
    _row([1, 5, 6], ([7, 8, 3], True), ([4, 9, 10], False), ([11, 12, 13, 3], True)),
    _row([1, 11], ([12, 13, 14, 15, 16, 17, 3], True)),
    _row([1, 4, 4, 4, 5, 6, 7, 8], ([9, 3], True)),
    _row([1], ([20, 21, 3], True)),
]


def test_td_weight_0_is_sfts_loss_and_gradient_on_the_tiny_model(tiny_model_dir):
    model, _ = load_model_and_tokenizer(tiny_model_dir)
    model.train()
    batch = pack_one(ROWS)
    num_items = torch.tensor(batch.n_targets + 5)  # a share of a larger window

    def step(objective):
        model.zero_grad(set_to_none=True)
        loss, _ = objective.loss(label_logits(model, batch), batch, num_items)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    hp = {"td_weight": 0.0}
    config = TrainConfig(model="m", training_file="t", output_dir="o", method="iql", hyperparameters=hp)
    (ours, ours_grad), (theirs, theirs_grad) = step(iql.objective(config)), step(sft.OBJECTIVE)
    assert ours == pytest.approx(theirs, abs=1e-6)
    assert ours_grad.keys() == theirs_grad.keys() and ours_grad
    for name in ours_grad:
        torch.testing.assert_close(ours_grad[name], theirs_grad[name], atol=1e-6, rtol=0, msg=name)


def test_td_weight_0_trains_exactly_as_sft(make_config):
    hp = {"n_epochs": 2, "batch_size": 4, "gradient_accumulation_steps": 2}
    ours, theirs = RecordingSink(), RecordingSink()
    a = run(make_config(output="iql", td_weight=0.0, **hp), ours)
    b = run(make_config(output="sft", method="sft", **hp), theirs)
    assert a.global_step == b.global_step == 2 and a.trained_tokens == b.trained_tokens
    assert ours.losses == pytest.approx(theirs.losses, abs=1e-6)
    assert ours.series("train/nll") == pytest.approx(theirs.losses, abs=1e-6)
    x, y = _weights(a.final_checkpoint / "model"), _weights(b.final_checkpoint / "model")
    for key in x:
        torch.testing.assert_close(x[key], y[key], atol=1e-6, rtol=0)


@pytest.mark.parametrize("stop_gradient_next_v", [False, True])
def test_a_packed_batch_gives_each_rows_own_loss(tiny_model_dir, stop_gradient_next_v):
    """Several rows of different lengths in one padding-free pack = each row alone through a plain
    (unpacked) forward of the whole row: the same log-probs, implied rewards and loss shares, so no row's
    V(s_{t+1}) comes from another row or from past its trained stretch."""
    model, _ = load_model_and_tokenizer(tiny_model_dir)
    model.eval()
    batch = pack_one(ROWS)
    kw = {"td_weight": 0.5, "gamma": 0.9, "stop_gradient_next_v": stop_gradient_next_v}
    n = batch.n_targets
    with torch.no_grad():
        logits = label_logits(model, batch)
        packed, logps, rewards = td_regularised_nll(
            logits,
            batch.targets,
            batch.row_of_target,
            batch.in_row_position,
            num_items=n,
            **kw,
        )
        alone = []
        for row in ROWS:
            full = model(input_ids=torch.tensor([row.input_ids])).logits[0]  # (T, V)
            scored = [t for t in range(len(row.labels) - 1) if row.labels[t + 1] != IGNORE_INDEX]
            targets = torch.tensor([row.labels[t + 1] for t in scored])
            where = torch.tensor(scored)
            alone.append(
                td_regularised_nll(full[where], targets, torch.zeros_like(where), where, num_items=n, **kw)
            )
    torch.testing.assert_close(logps, torch.cat([lp for _, lp, _ in alone]), atol=1e-5, rtol=0)
    torch.testing.assert_close(rewards, torch.cat([r for _, _, r in alone]), atol=1e-5, rtol=0)
    assert packed.item() == pytest.approx(sum(loss.item() for loss, _, _ in alone), abs=1e-5)
    # the two-turn row: each turn's last token (its end-of-turn, id 3) is terminal: r = Q(s, a)
    first_turn_end = 2  # row 0's targets: 7, 8, 3 | 11, 12, 13, 3
    q = logits[first_turn_end, 3]
    assert rewards[first_turn_end].item() == pytest.approx(q.item(), abs=1e-5)


def test_learns_and_logs_its_metrics(make_config, tmp_path):
    sink = RecordingSink()
    config = make_config(
        validation_file=str(tmp_path / "train.jsonl"), n_epochs=5, batch_size=3, td_weight=0.1
    )
    result = run(config, sink)
    assert result.status == "completed" and result.global_step == 10
    assert sink.losses[-1] < 0.75 * sink.losses[0]
    assert sink.evals[-1][1]["eval/loss"] < sink.evals[0][1]["eval/loss"]
    assert [s for s, _ in sink.train] == list(range(1, 11))
    for _, values in sink.train:  # logging_interval 1: every row is one step's values
        assert IQL_METRICS | {"train/token_accuracy", "train/grad_norm", "train/lr"} <= set(values)
        assert values["train/loss"] == pytest.approx(values["train/nll"] + 0.1 * values["train/td"], rel=1e-5)
        mean, std = values["train/reward_mean"], values["train/reward_std"]
        assert std > 0 and values["train/td"] == pytest.approx(mean * mean + std * std, rel=1e-5)
        assert 0.0 <= values["train/token_accuracy"] <= 1.0 and math.isfinite(values["train/nll"])
    assert sink.series("train/nll")[-1] < sink.series("train/nll")[0]
    assert {"eval/loss", "eval/token_accuracy"} <= set(sink.evals[-1][1])
    assert [s for s, _, _ in sink.checkpoints] == [2, 4, 6, 8, 10]


def test_the_regulariser_changes_the_step(make_config):
    """td_weight > 0 is not SFT: from the same weights, the first step's loss is larger by td_weight x
    train/td, and stopping the gradient through V(s_{t+1}) changes its gradient."""
    hp = {"n_epochs": 1, "batch_size": 6}
    plain, full, semi = RecordingSink(), RecordingSink(), RecordingSink()
    run(make_config(output="plain", td_weight=0.0, **hp), plain)
    run(make_config(output="full", td_weight=0.5, **hp), full)
    run(make_config(output="semi", td_weight=0.5, stop_gradient_next_v=True, **hp), semi)
    (_, p), (_, f), (_, s) = plain.train[0], full.train[0], semi.train[0]
    assert f["train/nll"] == pytest.approx(p["train/loss"], abs=1e-6)
    assert f["train/loss"] == pytest.approx(p["train/loss"] + 0.5 * f["train/td"], rel=1e-6)
    assert s["train/loss"] == pytest.approx(f["train/loss"], rel=1e-6)  # same value, other gradient
    assert abs(s["train/grad_norm"] - f["train/grad_norm"]) > 1e-4 * f["train/grad_norm"]
    assert abs(f["train/grad_norm"] - p["train/grad_norm"]) > 1e-4 * p["train/grad_norm"]


def test_resume_reproduces_the_uninterrupted_run(make_config):
    hp = {"n_epochs": 1, "batch_size": 1, "checkpoint_interval": 3, "warmup_steps": 2, "weight_decay": 0.1}
    straight = RecordingSink()
    full = run(make_config(output="straight", **hp), straight)
    assert full.global_step == 6

    crashed = RecordingSink(crash_after_checkpoint=3)
    with pytest.raises(Crash):
        run(make_config(output="resumed", **hp), crashed)
    checkpoint = find_latest_complete(crashed.checkpoints[0][1].parents[1])
    assert checkpoint.name == "step_00000003"

    resumed = RecordingSink()
    result = run(make_config(output="resumed", resume_from=str(checkpoint), **hp), resumed)
    assert [s for s, _ in resumed.train] == [4, 5, 6]
    assert crashed.losses == pytest.approx(straight.losses[:3], abs=1e-5)
    assert resumed.losses == pytest.approx(straight.losses[3:], abs=1e-5)
    for key in ("train/lr", "train/epoch", "train/tokens", "train/grad_norm", *sorted(IQL_METRICS)):
        assert [v[key] for _, v in resumed.train] == pytest.approx(
            [v[key] for _, v in straight.train[3:]], abs=1e-5
        )
    assert result.trained_tokens == full.trained_tokens
    a, b = _weights(full.final_checkpoint / "model"), _weights(result.final_checkpoint / "model")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-5)


def test_hyperparameters_are_checked():
    base = {"model": "m", "training_file": "t", "output_dir": "o", "method": "iql"}
    hp = TrainConfig.from_dict(base).hyperparameters
    assert (hp.td_weight, hp.gamma, hp.stop_gradient_next_v) == (0.1, 1.0, False)
    assert hp.select_checkpoint == "last"  # as SFT's
    for bad, message in (
        ({"td_weight": -0.1}, r"^hyperparameters\.td_weight: expected a number in \[0\.0, 100\.0\]"),
        ({"gamma": 0}, r"^hyperparameters\.gamma: expected a number in \(0\.0, 1\.0\]"),
        ({"gamma": 1.5}, r"^hyperparameters\.gamma: expected a number in \(0\.0, 1\.0\]"),
        ({"online": True}, r"^hyperparameters\.online: unknown key"),
    ):
        with pytest.raises(ValueError, match=message):
            TrainConfig.from_dict({**base, "hyperparameters": bad})
