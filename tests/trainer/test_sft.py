"""SFT on the tiny model, CPU: learning, logging, eval, stop, LoRA, resume parity."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.trainer.recording import Crash, RecordingSink
from trainer import RunResult, TrainConfig, run
from trainer.callbacks import METRIC_NAMES
from trainer.checkpointing import find_latest_complete
from trainer.evaluation import logp_gap, preference_triples
from trainer.modeling import load_model_and_tokenizer


@pytest.fixture
def make_config(tmp_path, tiny_model_dir, rows, write_jsonl):
    train_file = write_jsonl(tmp_path / "train.jsonl", rows)

    def make(output="out", validation_file=None, resume_from=None, **hyperparameters) -> TrainConfig:
        return TrainConfig.from_dict(
            {
                "model": str(tiny_model_dir),
                "training_file": str(train_file),
                "output_dir": str(tmp_path / output),
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


def test_learns_logs_evaluates_and_checkpoints(make_config, tiny_model_dir, tmp_path):
    sink = RecordingSink()
    config = make_config(validation_file=str(tmp_path / "train.jsonl"), n_epochs=5, batch_size=3)
    result = run(config, sink)

    assert isinstance(result, RunResult) and result.status == "completed" and result.global_step == 10
    # memorising six examples: the loss falls
    assert sink.losses[-1] < 0.75 * sink.losses[0]
    assert sink.evals[-1][1]["eval/loss"] < sink.evals[0][1]["eval/loss"]
    # every metric name, every step (logging_interval 1); eval at each epoch end (every 2 steps)
    assert set().union(*(v.keys() for _, v in sink.metrics)) == set(METRIC_NAMES)
    assert [s for s, _ in sink.train] == list(range(1, 11))
    assert [s for s, _ in sink.evals] == [2, 4, 6, 8, 10]
    last = sink.train[-1][1]
    assert last["train/epoch"] == pytest.approx(5.0) and sink.train[0][1]["train/epoch"] == pytest.approx(0.5)
    assert last["train/tokens"] == result.trained_tokens > 0
    assert 0.0 <= last["train/token_accuracy"] <= 1.0 and last["train/tokens_per_s"] > 0
    assert sink.train[0][1]["train/lr"] == pytest.approx(1e-2)  # linear, no warmup: full rate at step 1
    # a checkpoint at the end of each epoch, with the metrics of its step
    assert [s for s, _, _ in sink.checkpoints] == [2, 4, 6, 8, 10]
    assert result.final_checkpoint == sink.checkpoints[-1][1] == find_latest_complete(tmp_path / "out")
    assert sink.checkpoints[-1][2]["eval/loss"] == sink.evals[-1][1]["eval/loss"]
    # an epoch's checkpoint keeps the optimiser the next epoch continues; the last step's has none
    assert (sink.checkpoints[-2][1] / "state" / "optimizer.pt").is_file()
    assert not (result.final_checkpoint / "state" / "optimizer.pt").exists()
    again = run(
        make_config(
            output="again",
            validation_file=str(tmp_path / "train.jsonl"),
            n_epochs=5,
            batch_size=3,
            resume_from=str(result.final_checkpoint),
        ),
        RecordingSink(),
    )
    assert again.status == "completed" and again.global_step == 10  # nothing left: no optimiser read
    assert result.last_metrics["eval/loss"] == sink.evals[-1][1]["eval/loss"]
    # every parameter tensor moved away from the base model
    base, tuned = _weights(tiny_model_dir), _weights(result.final_checkpoint / "model")
    assert base.keys() == tuned.keys()
    unchanged = [k for k in base if torch.equal(base[k], tuned[k])]
    assert unchanged == []
    assert sink.polls == 11  # before the first step, then after each of the 10


def test_should_stop_is_honoured_within_one_step(make_config, tmp_path):
    sink = RecordingSink(stop_after_steps=2)
    result = run(make_config(n_epochs=3, batch_size=2, checkpoint_interval=1), sink)
    assert result.status == "stopped" and result.global_step == 2
    assert [s for s, _ in sink.train] == [1, 2]
    # no checkpoint after the stop; the last one written is the newest complete one
    assert [s for s, _, _ in sink.checkpoints] == [1, 2]
    assert result.final_checkpoint == find_latest_complete(tmp_path / "out") == sink.checkpoints[-1][1]
    assert sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir()) == [
        "step_00000001",
        "step_00000002",
    ]


def test_hold_checkpoints_the_step_it_stops_at_and_resuming_there_matches_a_straight_run(make_config):
    """A worker shutting down asks the trainer to hold: it checkpoints the step just taken (though no
    checkpoint is due for 1000 steps) and stops; the run resumed from it matches an uninterrupted one."""
    hp = {"n_epochs": 3, "batch_size": 2, "checkpoint_interval": 1000}
    straight = RecordingSink()
    run(make_config(output="straight", **hp), straight)
    total = len(straight.losses)  # 3 steps per epoch
    held = RecordingSink(hold_after_steps=4)  # mid-epoch 2
    result = run(make_config(output="held", **hp), held)
    assert result.status == "held" and result.global_step == 4
    assert [s for s, _, _ in held.checkpoints] == [4] and result.final_checkpoint == held.checkpoints[0][1]
    assert any(m.startswith("Training held at step 4") for _, m, _ in held.events)
    resumed = RecordingSink()
    done = run(make_config(output="held", resume_from=str(result.final_checkpoint), **hp), resumed)
    assert done.status == "completed" and [s for s, _ in resumed.train] == list(range(5, total + 1))
    assert held.losses + resumed.losses == pytest.approx(straight.losses, abs=1e-6)


def test_cancel_outranks_hold(make_config):
    sink = RecordingSink(stop_after_steps=2, hold_after_steps=2)
    result = run(make_config(n_epochs=3, batch_size=2, checkpoint_interval=1000), sink)
    assert result.status == "stopped" and result.global_step == 2 and sink.checkpoints == []


def test_lora_trains_only_the_adapter_and_saves_a_merged_model(make_config, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    sink = RecordingSink()
    lora = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0}
    result = run(make_config(n_epochs=4, batch_size=3, learning_rate=2e-2, lora=lora), sink)
    assert result.status == "completed" and sink.losses[-1] < sink.losses[0]
    ckpt = result.final_checkpoint
    adapter = load_file(ckpt / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: all were trained
    base, merged = _weights(tiny_model_dir), _weights(ckpt / "model")
    assert base.keys() == merged.keys()
    # merged projections differ from the base; untouched embeddings and norms do not
    assert not torch.equal(
        base["model.layers.0.self_attn.q_proj.weight"], merged["model.layers.0.self_attn.q_proj.weight"]
    )
    assert torch.equal(base["model.embed_tokens.weight"], merged["model.embed_tokens.weight"])
    assert torch.equal(base["model.norm.weight"], merged["model.norm.weight"])
    AutoModelForCausalLM.from_pretrained(ckpt / "model")  # a plain model


def test_preference_validation_file_is_scored_on_the_preferred_response(make_config, tmp_path, write_jsonl):
    val = write_jsonl(
        tmp_path / "val.jsonl",
        [
            {"prompt": "What is two plus two?", "chosen": "Two plus two is four.", "rejected": "Seven."},
            {
                "input": {"messages": [{"role": "user", "content": "Name a colour."}]},
                "preferred_output": [{"role": "assistant", "content": "Blue."}],
                "non_preferred_output": [{"role": "assistant", "content": "Paris."}],
            },
        ],
    )
    sink = RecordingSink()
    result = run(make_config(validation_file=str(val), n_epochs=1, batch_size=6, eval_interval=1), sink)
    assert len(sink.evals) == 1 and sink.evals[0][1]["eval/loss"] > 0
    # The same file also gives IRFT/RFT's chosen-rejected log-prob gap, so SFT runs compare with theirs:
    # equal to evaluation.logp_gap of the final model on the same rows.
    model, tokenizer = load_model_and_tokenizer(str(result.final_checkpoint / "model"))
    rows = [json.loads(line) for line in val.read_text().splitlines()]
    want = logp_gap(model, tokenizer, preference_triples(tokenizer, rows, 1024, 256), batch_size=2)
    got = sink.evals[0][1]
    assert got["eval/logp_gap"] == pytest.approx(want["eval/logp_gap"], abs=1e-4)
    assert got["eval/logp_gap_accuracy"] == want["eval/logp_gap_accuracy"]


def test_gradient_accumulation_matches_one_large_batch(make_config):
    """Token-mean over the window: batch 6 x accumulation 1 == batch 1 x accumulation 6."""
    big_sink, small_sink = RecordingSink(), RecordingSink()
    big = run(make_config(output="big", n_epochs=1, batch_size=6), big_sink)
    small = run(
        make_config(output="small", n_epochs=1, batch_size=1, gradient_accumulation_steps=6), small_sink
    )
    assert big.global_step == small.global_step == 1 and big.trained_tokens == small.trained_tokens
    (_, big_metrics), (_, small_metrics) = big_sink.train[0], small_sink.train[0]
    assert small_metrics["train/loss"] == pytest.approx(big_metrics["train/loss"], rel=1e-6)
    assert small_metrics["train/grad_norm"] == pytest.approx(big_metrics["train/grad_norm"], rel=1e-5)
    a, b = _weights(big.final_checkpoint / "model"), _weights(small.final_checkpoint / "model")
    for key in a:
        # Adam's first step is lr * g / (|g| + eps): elements with |g| near eps amplify float noise.
        torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("case", ["full_mid_epoch", "lora_dropout_epoch_boundary"])
def test_resume_reproduces_the_uninterrupted_loss_series(make_config, case):
    if case == "full_mid_epoch":  # 6 steps in one epoch, checkpoint at 3 lands mid-epoch
        hp = {"n_epochs": 1, "batch_size": 1, "checkpoint_interval": 3}
    else:  # 3 steps per epoch x 2, dropout exercises the restored torch RNG
        hp = {"n_epochs": 2, "batch_size": 2, "lora": {"enabled": True, "r": 4, "dropout": 0.3}}
    hp.update(warmup_steps=2, weight_decay=0.1)  # schedule and decayed AdamW state must resume too

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
    for key in ("train/lr", "train/epoch", "train/tokens", "train/grad_norm"):
        assert [v[key] for _, v in resumed.train] == pytest.approx(
            [v[key] for _, v in straight.train[3:]], abs=1e-5
        )
    assert result.trained_tokens == full.trained_tokens
    a, b = _weights(full.final_checkpoint / "model"), _weights(result.final_checkpoint / "model")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-5)


def test_resume_rejects_incomplete_or_mismatched_checkpoints(make_config, tmp_path):
    first = run(make_config(n_epochs=1, batch_size=3), RecordingSink())
    with pytest.raises(ValueError, match="steps_per_epoch=3"):
        run(
            make_config(output="other", resume_from=str(first.final_checkpoint), n_epochs=1, batch_size=2),
            RecordingSink(),
        )
    (first.final_checkpoint / "manifest.json").unlink()
    with pytest.raises(ValueError, match="resume_from: expected a complete checkpoint"):
        run(
            make_config(output="other", resume_from=str(first.final_checkpoint), n_epochs=1, batch_size=3),
            RecordingSink(),
        )


def test_one_process_can_run_jobs_with_different_precisions(make_config, tmp_path):
    """A worker runs jobs one after another in one process; Accelerate's precision singleton
    must not pin the first job's choice. bf16 autocast works on CPU too."""
    plain = run(make_config(output="fp32", n_epochs=1, batch_size=6), RecordingSink())
    config = make_config(output="bf16", n_epochs=1, batch_size=6)
    config.mixed_precision = "bf16"
    sink = RecordingSink()
    mixed = run(config, sink)
    assert plain.status == mixed.status == "completed"
    assert any("mixed precision bf16" in message for _, message, _ in sink.events)
    assert 0 < sink.losses[0] < 20
