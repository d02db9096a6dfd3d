"""Demonstration quality scores (trainer/demonstration_scores.py) on the tiny model, CPU: the scorers
against independent padded forwards, IQL's telescoping identity, and each reward-learning method's file
after a real run, recomputed from the checkpoints it wrote."""

from __future__ import annotations

import json

import pytest
import torch

from tests.trainer.recording import RecordingSink
from trainer import NullSink, TrainConfig, run
from trainer import demonstration_scores as scores
from trainer.checkpointing import find_latest_complete
from trainer.demonstrations import load_demonstrations
from trainer.evaluation import load_preference_pairs
from trainer.generation import eos_token_ids
from trainer.modeling import load_model_and_tokenizer, load_tokenizer
from trainer.reward_model import REWARD_DIR, RewardTokens, collate_sequences, load_reward_model, score


@torch.no_grad()
def padded_logps(model, pairs) -> list[float]:
    """log pi(response | prompt), one unpacked forward per pair: the reference for the packed scorer."""
    out = []
    for prompt, response in pairs:
        ids = torch.tensor([prompt + response])
        logps = model(input_ids=ids).logits[0].double().log_softmax(-1)
        out.append(sum(logps[len(prompt) - 1 + i, t].item() for i, t in enumerate(response)))
    return out


def demos_of(tiny_model_dir, path):
    tokenizer = load_tokenizer(tiny_model_dir)
    return load_demonstrations(str(path), tokenizer, 512, 256, NullSink())


def read_rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def train_file(tmp_path, rows):
    """The tiny corpus with a blank line after the second row: line numbers are the file's, not indices."""
    lines = [json.dumps(r) for r in rows]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join([*lines[:2], "", *lines[2:]]) + "\n")
    return path


def config(tmp_path, tiny_model_dir, train_file, method, **hp) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "model": str(tiny_model_dir),
            "training_file": str(train_file),
            "output_dir": str(tmp_path / f"out-{method}"),
            "device": "cpu",
            "seed": 0,
            "method": method,
            "hyperparameters": {"learning_rate": 1e-2, "batch_size": 2, "n_epochs": 1, **hp},
        }
    )


def test_ranked_is_lowest_first_with_ties_by_line():
    rows = scores.ranked([4, 9, 2], [1.0, -2.0, 1.0], [2, 4, 5], "implied_reward", [-1.0, -6.0, -2.5])
    assert [(r["line"], r["rank"]) for r in rows] == [(9, 1), (2, 2), (4, 3)]
    assert rows[0] == {
        "line": 9,
        "rank": 1,
        "score": -2.0,
        "score_per_token": -0.5,
        "tokens": 4,
        "kind": "implied_reward",
        "log_likelihood": -6.0,
        "log_likelihood_per_token": -1.5,
    }


def test_response_logps_equal_unpacked_forwards(tiny_model_dir, train_file):
    model, _ = load_model_and_tokenizer(tiny_model_dir)
    pairs = demos_of(tiny_model_dir, train_file)
    got = scores.response_logps(model, pairs)
    assert got.tolist() == pytest.approx(padded_logps(model.eval(), pairs), abs=1e-4)


def test_implied_rewards_telescope_to_log_likelihood_plus_initial_value(tiny_model_dir, train_file):
    """At gamma = 1 with V = 0 after the response, sum_t [Q(s_t, a_t) - V(s_{t+1})] = log pi(y|x) + V(s_0)
    (docs/methods.md §9.1); below 1 the discount shows."""
    model, _ = load_model_and_tokenizer(tiny_model_dir)
    model.eval()
    pairs = demos_of(tiny_model_dir, train_file)
    with torch.no_grad():
        v0 = [
            model(input_ids=torch.tensor([p])).logits[0, -1].double().logsumexp(-1).item() for p, _ in pairs
        ]
    expected = [lp + v for lp, v in zip(padded_logps(model, pairs), v0, strict=True)]
    rewards, logps = scores.implied_rewards(model, pairs, 1.0)
    assert rewards.tolist() == pytest.approx(expected, abs=1e-4)
    assert logps.tolist() == pytest.approx(padded_logps(model, pairs), abs=1e-4)
    assert scores.implied_rewards(model, pairs, 0.9)[0].tolist() != pytest.approx(expected, abs=1e-2)


def check_file(result, train_file, kind) -> list[dict]:
    """The file covers every non-blank line once, ranked lowest first; returns its rows in line order."""
    rows = read_rows(result.demonstration_scores)
    assert {r["kind"] for r in rows} == {kind}
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    assert [r["score"] for r in rows] == sorted(r["score"] for r in rows)
    text = train_file.read_text().splitlines()
    assert sorted(r["line"] for r in rows) == [i + 1 for i, line in enumerate(text) if line.strip()]
    return sorted(rows, key=lambda r: r["line"])


@pytest.mark.parametrize("lora", [False, True])
def test_irft_scores_are_the_implicit_reward_against_the_starting_model(
    tmp_path, tiny_model_dir, train_file, lora
):
    cfg = config(
        tmp_path,
        tiny_model_dir,
        train_file,
        "irft",
        outer_iterations=2,
        generation={"max_new_tokens": 6, "temperature": 1.0},
        truncated_negatives="keep",
        lora={"enabled": lora, "r": 4, "alpha": 8},
    )
    sink = RecordingSink()
    result = run(cfg, sink)
    rows = check_file(result, train_file, "implicit_reward")
    pairs = demos_of(tiny_model_dir, train_file)
    final, _ = load_model_and_tokenizer(result.final_checkpoint / "model")  # LoRA: merged into the base
    base, _ = load_model_and_tokenizer(tiny_model_dir)
    beta = cfg.hyperparameters.beta
    expected = [
        beta * (a - b) for a, b in zip(padded_logps(final, pairs), padded_logps(base, pairs), strict=True)
    ]
    assert [r["score"] for r in rows] == pytest.approx(expected, abs=1e-3)
    assert [r["log_likelihood"] for r in rows] == pytest.approx(padded_logps(final, pairs), abs=1e-3)
    assert max(abs(e) for e in expected) > 1e-2  # the policy moved: the scores are not all zero
    assert [r["tokens"] for r in rows] == [len(resp) for _, resp in pairs]
    (data,) = [data for _, message, data in sink.events if message.startswith("Scored ")]
    assert data["demonstrations"] == len(pairs) and data["kind"] == "implicit_reward"


def test_dpo_scores_are_the_implicit_reward_margin(tmp_path, tiny_model_dir, rows, write_jsonl):
    prefs = [
        {
            "prompt": r["messages"][-2]["content"] if "messages" in r else r["prompt"],
            "chosen": "Blue.",
            "rejected": "No.",
        }
        for r in rows
    ]
    path = write_jsonl(tmp_path / "pairs.jsonl", prefs)
    cfg = config(tmp_path, tiny_model_dir, path, "dpo")
    result = run(cfg, NullSink())
    got = check_file(result, path, "implicit_reward_margin")
    triples = load_preference_pairs(str(path), load_tokenizer(tiny_model_dir), 512, 256)
    final, _ = load_model_and_tokenizer(result.final_checkpoint / "model")
    base, _ = load_model_and_tokenizer(tiny_model_dir)

    def rewards(side):
        pairs = [(p, t[side]) for p, *t in [(p, c, r) for p, c, r in triples]]
        return [a - b for a, b in zip(padded_logps(final, pairs), padded_logps(base, pairs), strict=True)]

    beta = cfg.hyperparameters.beta
    expected = [beta * (c - r) for c, r in zip(rewards(0), rewards(1), strict=True)]
    assert [r["score"] for r in got] == pytest.approx(expected, abs=1e-3)
    chosen = [(p, c) for p, c, _ in triples]
    assert [r["log_likelihood"] for r in got] == pytest.approx(padded_logps(final, chosen), abs=1e-3)
    assert all(e > 0 for e in expected)  # trained to prefer the chosen side, on every line


def test_iql_scores_are_the_implied_rewards_of_the_final_logits(tmp_path, tiny_model_dir, train_file):
    result = run(config(tmp_path, tiny_model_dir, train_file, "iql", td_weight=0.1), NullSink())
    rows = check_file(result, train_file, "implied_reward")
    final, _ = load_model_and_tokenizer(result.final_checkpoint / "model")
    pairs = demos_of(tiny_model_dir, train_file)
    rewards, logps = scores.implied_rewards(final, pairs, 1.0)
    assert [r["score"] for r in rows] == pytest.approx(rewards.tolist(), abs=1e-4)
    assert [r["log_likelihood"] for r in rows] == pytest.approx(logps.tolist(), abs=1e-4)
    assert logps.tolist() == pytest.approx(padded_logps(final, pairs), abs=1e-3)


def test_rft_scores_are_the_final_reward_models(tmp_path, tiny_model_dir, train_file):
    cfg = config(
        tmp_path,
        tiny_model_dir,
        train_file,
        "rft",
        samples_per_prompt=2,
        outer_iterations=1,
        reward_learning_rate=1e-3,
        generation={"max_new_tokens": 6, "temperature": 1.0},
    )
    result = run(cfg, NullSink())
    rows = check_file(result, train_file, "reward_model")
    tokenizer = load_tokenizer(tiny_model_dir)
    reward = load_reward_model(
        find_latest_complete(cfg.output_dir) / REWARD_DIR, tokenizer.pad_token_id
    ).eval()
    policy, _ = load_model_and_tokenizer(tiny_model_dir)
    to_reward = RewardTokens(
        tokenizer, tokenizer, cfg.hyperparameters.max_seq_len, eos_token_ids(policy, tokenizer)
    )
    pairs = demos_of(tiny_model_dir, train_file)
    with torch.no_grad():
        expected = [
            score(reward, *collate_sequences([to_reward(p + r)], tokenizer.pad_token_id)).item()
            for p, r in pairs
        ]
    assert [r["score"] for r in rows] == pytest.approx(expected, abs=1e-4)
    final, _ = load_model_and_tokenizer(result.final_checkpoint / "model")
    assert [r["log_likelihood"] for r in rows] == pytest.approx(padded_logps(final, pairs), abs=1e-3)


def test_a_run_resumed_from_its_last_checkpoint_scores_again(tmp_path, tiny_model_dir, train_file):
    """A worker lost while scoring: the job resumes from the final checkpoint and writes the same file."""
    cfg = config(tmp_path, tiny_model_dir, train_file, "iql")
    first = run(cfg, NullSink())
    again = TrainConfig.from_dict(
        {**cfg.to_dict(), "output_dir": str(tmp_path / "again"), "resume_from": str(first.final_checkpoint)}
    )
    second = run(again, NullSink())
    assert second.global_step == first.global_step
    before, after = read_rows(first.demonstration_scores), read_rows(second.demonstration_scores)
    assert [r["line"] for r in after] == [r["line"] for r in before]
    assert [r["score"] for r in after] == pytest.approx([r["score"] for r in before], abs=1e-5)


def test_sft_jobs_are_not_scored(tmp_path, tiny_model_dir, train_file):
    result = run(config(tmp_path, tiny_model_dir, train_file, "sft"), NullSink())
    assert result.demonstration_scores is None
    assert not (tmp_path / "out-sft" / scores.FILE).exists()
