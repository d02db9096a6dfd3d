"""The reinforcement method (trainer/methods/reinforcement.py) on the tiny model, CPU: GRPO's advantages
by hand and against a reference formula, a full graded run, its evaluation, stop/hold/resume parity,
and a grader that cannot score failing the run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import FUZZY_GRADER as FUZZY
from tests.trainer.recording import Crash, RecordingSink
from trainer import TrainConfig, run
from trainer.errors import DataError, GraderFailedError, InputError
from trainer.losses import grpo_advantages, rloo_advantages

PROMPTS = [
    ("What is the capital of France?", "Paris"),
    ("What is two plus two?", "four"),
    ("Name a colour.", "Blue"),
    ("Name a number.", "Seven"),
    ("Translate to French: cat.", "Chat"),
    ("Hello there! How are you today?", "fine"),
]
LINES = [
    {"messages": [{"role": "user", "content": q}], "answer": a, "id": i} for i, (q, a) in enumerate(PROMPTS)
]
METRICS = {
    "train/loss",
    "train/lr",
    "train/grad_norm",
    "train/tokens_per_s",
    "train/epoch",
    "train/tokens",
    "train/kl",
    "train/reward",
    "train/reward_std",
    "train/pass_rate",
    "train/grader_error_rate",
    "train/grader_seconds",
    "train/generation_length",
    "train/unfinished",
    "advantages/std",
}


def test_grpo_advantages_by_hand():
    rewards = torch.tensor([[0.0, 1.0], [1.0, 1.0], [1.0, 2.0]])
    expected = torch.tensor([[-1.0, 1.0], [0.0, 0.0], [-1.0, 1.0]])  # a flat group learns nothing
    torch.testing.assert_close(grpo_advantages(rewards), expected)
    # three samples 1, 2, 3: mean 2, population std sqrt(2/3)
    torch.testing.assert_close(
        grpo_advantages(torch.tensor([[1.0, 2.0, 3.0]])),
        torch.tensor([[-1.0, 0.0, 1.0]]) / (2.0 / 3.0) ** 0.5,
    )
    with pytest.raises(ValueError, match="at least 2"):
        grpo_advantages(torch.tensor([[1.0]]))


def test_grpo_advantages_match_a_reference_formula():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(5, 6))
    mean = rewards.mean(axis=1, keepdims=True)
    reference = (rewards - mean) / rewards.std(axis=1, keepdims=True)  # numpy's std: population (ddof 0)
    got = grpo_advantages(torch.tensor(rewards))
    np.testing.assert_allclose(got.numpy(), reference, rtol=1e-10)
    # both baselines centre every group; GRPO's is RLOO's rescaled per group
    rloo = rloo_advantages(torch.tensor(rewards)).numpy()
    np.testing.assert_allclose(rloo.sum(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(got.numpy() * rewards.std(axis=1, keepdims=True) * 6 / 5, rloo, rtol=1e-10)


@pytest.fixture
def make_config(tmp_path, tiny_model_dir, write_jsonl):
    train_file = write_jsonl(tmp_path / "train.jsonl", LINES)

    def make(output="out", validation_file=None, resume_from=None, grader=FUZZY, **hyperparameters):
        hp = {
            "learning_rate": 1e-2,
            "n_epochs": 2,
            "batch_size": 2,
            "samples_per_prompt": 3,
            "generation": {"max_new_tokens": 6},
            **hyperparameters,
        }
        return TrainConfig.from_dict(
            {
                "model": str(tiny_model_dir),
                "training_file": str(train_file),
                "output_dir": str(tmp_path / output),
                "validation_file": validation_file,
                "resume_from": resume_from,
                "method": "reinforcement",
                "device": "cpu",
                "seed": 0,
                "grader": grader,
                "hyperparameters": hp,
            }
        )

    return make


def test_a_graded_run_trains_logs_evaluates_and_checkpoints(make_config, tmp_path, write_jsonl):
    validation = write_jsonl(tmp_path / "valid.jsonl", LINES[:3])
    sink = RecordingSink()
    result = run(make_config(validation_file=str(validation)), sink)
    assert result.status == "completed" and result.global_step == 6  # 3 steps of 2 prompts, 2 epochs
    train = [values for _, values in sink.train]
    assert set(train[0]) >= METRICS
    assert all(v["train/grad_norm"] > 0 for v in train)
    assert all(0.0 <= v["train/reward"] <= 1.0 and v["train/grader_error_rate"] == 0.0 for v in train)
    assert sum(v["train/tokens"] for v in train[-1:]) == result.trained_tokens > 0
    evals = [(step, v) for step, v in sink.metrics if "eval/reward" in v]
    assert [step for step, _ in evals] == [0, 3, 6]  # the starting model once, then each epoch's end
    for _, v in evals:
        assert 0.0 <= v["eval/pass_rate"] <= 1.0 and v["eval/grader_error_rate"] == 0.0
        assert "eval/loss" not in v  # prompts have no reference answer to score
    assert [step for step, _, _ in sink.checkpoints] == [3, 6]
    assert (result.final_checkpoint / "model" / "model.safetensors").exists()
    events = [data for _, message, data in sink.events if message.startswith("Epoch")]
    assert len(events) == 2 and {"prompt", "generated", "reward", "line"} <= set(events[0]["samples"][0])


def test_the_policy_moves_towards_what_the_grader_rewards(make_config, tmp_path, write_jsonl):
    # Every prompt rewards answers close to "Paris": eight steps raise the sampled answers' reward.
    lines = [{**line, "answer": "Paris"} for line in LINES]
    train_file = write_jsonl(tmp_path / "paris.jsonl", lines)
    config = make_config(n_epochs=12, samples_per_prompt=6, learning_rate=5e-2, beta=0.0, batch_size=3)
    config = TrainConfig.from_dict({**config.to_dict(), "training_file": str(train_file)})
    sink = RecordingSink()
    run(config, sink)
    rewards = sink.series("train/reward")
    assert len(rewards) == 24
    assert np.mean(rewards[-4:]) > np.mean(rewards[:4]) + 0.1, rewards


def test_multi_grader_sub_rewards_and_rloo(make_config):
    multi = {
        "type": "multi",
        "name": "both",
        "graders": {
            "close": FUZZY,
            "exact": {
                "type": "string_check",
                "name": "exact",
                "input": "{{sample.output_text}}",
                "reference": "{{item.answer}}",
                "operation": "eq",
            },
        },
        "calculate_output": "0.5 * close + 0.5 * exact",
    }
    sink = RecordingSink()
    run(make_config(grader=multi, advantage="rloo", n_epochs=1), sink)
    first = sink.train[0][1]
    assert {"train/sub_reward/close", "train/sub_reward/exact"} <= set(first)
    assert first["train/reward"] == pytest.approx(
        0.5 * first["train/sub_reward/close"] + 0.5 * first["train/sub_reward/exact"]
    )


def test_a_grader_that_cannot_score_fails_the_run_with_its_error(make_config):
    broken = {**FUZZY, "reference": "{{item.reference_answer}}"}  # the lines have no such key
    with pytest.raises(
        GraderFailedError, match=r"could not score 100% of step 1's 6 samples.*reference_answer"
    ):
        run(make_config(grader=broken), RecordingSink())


def test_no_grader_and_non_reinforcement_lines_are_refused(make_config, tmp_path, write_jsonl, rows):
    with pytest.raises(InputError, match="needs a grader"):
        run(make_config(grader=None), RecordingSink())
    chat = write_jsonl(tmp_path / "chat.jsonl", [LINES[0], rows[0]])
    config = TrainConfig.from_dict({**make_config().to_dict(), "training_file": str(chat)})
    with pytest.raises(DataError, match="line 2"):
        run(config, RecordingSink())


def test_stop_is_honoured(make_config):
    sink = RecordingSink(stop_after_steps=2)
    result = run(make_config(), sink)
    assert result.status == "stopped" and result.global_step == 2


@pytest.mark.parametrize("lora", [False, True])
def test_resume_reproduces_the_uninterrupted_run(make_config, lora):
    hp = {"checkpoint_interval": 1, "warmup_steps": 1}
    if lora:
        hp["lora"] = {"enabled": True, "r": 4, "dropout": 0.3}  # dropout: the restored torch RNG matters
    straight = RecordingSink()
    full = run(make_config(output="straight", **hp), straight)
    crashed = RecordingSink(crash_after_checkpoint=2)
    with pytest.raises(Crash):
        run(make_config(output="resumed", **hp), crashed)
    resumed = RecordingSink()
    result = run(make_config(output="resumed", resume_from=str(crashed.checkpoints[-1][1]), **hp), resumed)
    assert [s for s, _ in resumed.train] == [3, 4, 5, 6]
    for name in ("train/loss", "train/kl", "train/reward", "train/grad_norm", "train/lr", "train/tokens"):
        assert crashed.series(name) + resumed.series(name) == pytest.approx(straight.series(name), abs=1e-5)
    assert result.trained_tokens == full.trained_tokens
    a = load_file(full.final_checkpoint / "model" / "model.safetensors")
    b = load_file(result.final_checkpoint / "model" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-5)


def test_a_python_grader_runs_sandboxed_on_its_interpreter(make_config):
    """A python grader's batch runs in the sandbox (graders/sandbox.py) on the configured interpreter."""
    from tests.graders.examples import PYTHON

    shorter = {
        "type": "python",
        "name": "short",
        "source": "def grade(sample, item):\n    return 1.0 / (1 + len(sample['output_text']))\n",
    }
    config = TrainConfig.from_dict(
        {**make_config(grader=shorter, n_epochs=1).to_dict(), "grader_python": PYTHON}
    )
    sink = RecordingSink()
    assert run(config, sink).status == "completed"
    train = [v for _, v in sink.train]
    assert all(v["train/grader_error_rate"] == 0.0 and v["train/grader_seconds"] > 0 for v in train)
    assert all(0.0 < v["train/reward"] <= 1.0 for v in train)
