"""The shared loop plumbing (trainer/loop.py) and the step plan (trainer/spec/plan.py) that every method
and the worker's progress total use: the plan must equal the steps each method actually trains."""

from __future__ import annotations

import pytest

from tests.trainer.recording import RecordingSink
from trainer import TrainConfig, loop, run
from trainer.config import IRFTHyperparameters, RFTHyperparameters, SFTHyperparameters
from trainer.errors import InputError, PolicyDidNotMoveError
from trainer.spec import plan


def test_due_rule_logs_evaluates_and_checkpoints_on_one_schedule():
    hp = SFTHyperparameters(logging_interval=3, eval_interval=0, checkpoint_interval=4)
    due = [loop.due(hp, s, end_of_period=s in (5, 10), last_step=s == 10) for s in range(1, 11)]
    assert [s for s, d in enumerate(due, 1) if d.log] == [3, 5, 6, 9, 10]  # every 3 and each period end
    assert [s for s, d in enumerate(due, 1) if d.evaluate] == [5, 10]  # 0 = at each period end
    assert [s for s, d in enumerate(due, 1) if d.checkpoint] == [4, 8, 10]  # every 4 and the last step


def test_accumulator_means_since_the_last_log():
    acc = loop.MetricAccumulator()
    acc.add({"train/loss": 2.0, "train/grad_norm": 1.0}, lr=0.1, input_tokens=100, seconds=1.0)
    acc.add({"train/loss": 4.0, "train/grad_norm": 3.0}, lr=0.2, input_tokens=300, seconds=1.0)
    assert acc.pop() == {
        "train/loss": 3.0,
        "train/grad_norm": 2.0,
        "train/lr": 0.2,
        "train/tokens_per_s": 200.0,
    }
    acc.add({"train/loss": 1.0}, lr=0.3, input_tokens=10, seconds=2.0)
    assert acc.pop() == {"train/loss": 1.0, "train/lr": 0.3, "train/tokens_per_s": 5.0}  # started over


@pytest.mark.parametrize(
    ("method", "hp", "n", "want"),
    [
        ("sft", SFTHyperparameters(n_epochs=3, batch_size=4, gradient_accumulation_steps=2), 17, 9),
        ("irft", IRFTHyperparameters(outer_iterations=3, n_epochs=2, batch_size=2), 7, 8),  # 2,2,3
        ("irft", IRFTHyperparameters(outer_iterations=3, schedule="full", n_epochs=1, batch_size=4), 7, 6),
        ("rft", RFTHyperparameters(outer_iterations=2, n_epochs=2, batch_size=2), 5, 6),  # 2,3
    ],
)
def test_plan_arithmetic_by_hand(method, hp, n, want):
    assert plan.total_steps(method, hp, n) == want
    slices = loop.iteration_slices(method, hp, n, seed=0)
    assert [len(s) for s in slices] == plan.iteration_sizes(method, hp, n)
    if plan.is_stagewise(method, hp):
        assert sorted(i for s in slices for i in s) == list(range(n))  # disjoint and covering


CASES = {
    "sft": ("sft", {"n_epochs": 2, "batch_size": 4, "gradient_accumulation_steps": 1}),
    "sft_accumulation": ("sft", {"n_epochs": 1, "batch_size": 1, "gradient_accumulation_steps": 4}),
    "irft_stagewise": ("irft", {"outer_iterations": 2, "n_epochs": 2, "batch_size": 2}),
    "irft_full": ("irft", {"outer_iterations": 2, "schedule": "full", "n_epochs": 1, "batch_size": 4}),
    "rft": ("rft", {"outer_iterations": 2, "n_epochs": 2, "batch_size": 2, "samples_per_prompt": 2}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_plan_equals_the_steps_each_method_trains(case, tiny_model_dir, rows, tmp_path, write_jsonl):
    """The worker shows plan.total_steps as the job's progress total before training starts."""
    method, hp = CASES[case]
    hp = {"learning_rate": 1e-3, **hp}
    if method != "sft":
        hp["generation"] = {"max_new_tokens": 4, "temperature": 1.0}
    config = TrainConfig.from_dict(
        {
            "model": str(tiny_model_dir),
            "training_file": str(write_jsonl(tmp_path / "train.jsonl", rows)),
            "output_dir": str(tmp_path / "out"),
            "method": method,
            "device": "cpu",
            "hyperparameters": hp,
        }
    )
    sink = RecordingSink()
    result = run(config, sink)
    planned = plan.total_steps(method, config.hyperparameters, len(rows))
    assert result.status == "completed"
    assert result.global_step == planned == len({s for s, _ in sink.train})
    assert [s for s, _ in sink.train][-1] == planned


def test_rft_epochs_and_eval_interval_are_honoured(tiny_model_dir, rows, tmp_path, write_jsonl):
    """RFT's n_epochs are passes of the policy step over each slice; eval_interval counts policy steps."""
    config = TrainConfig.from_dict(
        {
            "model": str(tiny_model_dir),
            "training_file": str(write_jsonl(tmp_path / "train.jsonl", rows)),
            "validation_file": str(write_jsonl(tmp_path / "val.jsonl", rows[:2])),
            "output_dir": str(tmp_path / "out"),
            "method": "rft",
            "device": "cpu",
            "hyperparameters": {
                "outer_iterations": 1,
                "n_epochs": 2,
                "batch_size": 3,
                "samples_per_prompt": 2,
                "eval_interval": 3,
                "generation": {"max_new_tokens": 4},
                "select_checkpoint": "last",  # the cadence alone ("auto" adds the start's evaluation)
            },
        }
    )
    sink = RecordingSink()
    result = run(config, sink)
    assert result.global_step == 4  # ceil(6 / 3) * 2 epochs
    assert [s for s, _ in sink.evals] == [3, 4]  # every 3 policy steps and after the last


def test_movement_check_warns_per_still_period_and_fails_a_run_that_never_moved():
    sink = RecordingSink()
    watch = loop.MovementCheck()
    watch.add({"train/grad_norm": 0.0, "advantages/std": 5e-9})  # float noise of identical samples
    watch.end_period(sink, "Outer iteration 1/2")
    watch.add({"train/grad_norm": 0.5, "advantages/std": 0.0})
    watch.end_period(sink, "Outer iteration 2/2")
    warnings = [(m, d["signal"]) for level, m, d in sink.events if level == "warning"]
    assert [s for _, s in warnings] == ["train/grad_norm", "advantages/std", "advantages/std"]
    assert warnings[0][0].startswith("Outer iteration 1/2: the gradient was zero")
    watch.check_run()  # it moved in iteration 2

    still = loop.MovementCheck()
    still.add({"train/grad_norm": 4e-8})
    with pytest.raises(PolicyDidNotMoveError, match="zero at all 1 optimiser steps"):
        still.check_run()


def test_rft_with_identical_samples_fails_loudly_instead_of_succeeding(
    tiny_model_dir, rows, tmp_path, write_jsonl
):
    """A nucleus of ~0 mass samples greedily: k identical samples, zero RLOO advantages, zero gradient."""
    config = TrainConfig.from_dict(
        {
            "model": str(tiny_model_dir),
            "training_file": str(write_jsonl(tmp_path / "train.jsonl", rows)),
            "output_dir": str(tmp_path / "out"),
            "method": "rft",
            "device": "cpu",
            "hyperparameters": {
                "n_epochs": 1,
                "batch_size": 3,
                "samples_per_prompt": 2,
                "generation": {"max_new_tokens": 4, "temperature": 1.0, "top_p": 1e-9},
            },
        }
    )
    sink = RecordingSink()
    with pytest.raises(PolicyDidNotMoveError):
        run(config, sink)
    warned = {d["signal"] for level, _, d in sink.events if level == "warning" and d and "signal" in d}
    assert warned == {"train/grad_norm", "advantages/std"}
    assert max(sink.series("advantages/std")) <= loop.STILL_TOLERANCE
    assert max(sink.series("train/grad_norm")) <= loop.STILL_TOLERANCE


def _config(tiny_model_dir, train_file, out, method, **hp) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "model": str(tiny_model_dir),
            "training_file": str(train_file),
            "output_dir": str(out),
            "method": method,
            "device": "cpu",
            "hyperparameters": {"generation": {"max_new_tokens": 4}, **hp},
        }
    )


@pytest.mark.parametrize("method", ["irft", "rft"])
def test_more_stagewise_iterations_than_examples_is_the_users_error(
    method, tiny_model_dir, rows, tmp_path, write_jsonl
):
    config = _config(
        tiny_model_dir, write_jsonl(tmp_path / "t.jsonl", rows[:2]), tmp_path, method, outer_iterations=3
    )
    with pytest.raises(InputError, match=r"^hyperparameters.outer_iterations: expected at most 2") as err:
        run(config, RecordingSink())
    assert err.value.param == "hyperparameters"


def test_irft_refuses_fp16_it_has_no_loss_scaler_for(tiny_model_dir, rows, tmp_path, write_jsonl):
    config = _config(tiny_model_dir, write_jsonl(tmp_path / "t.jsonl", rows), tmp_path, "irft")
    config = config.model_copy(update={"mixed_precision": "fp16"})
    with pytest.raises(ValueError, match=r"^mixed_precision: irft runs with no or bf16, got 'fp16'"):
        run(config, RecordingSink())


def test_a_checkpoint_of_an_older_trainer_is_refused_clearly(tiny_model_dir, rows, tmp_path, write_jsonl):
    import json

    config = _config(
        tiny_model_dir, write_jsonl(tmp_path / "t.jsonl", rows), tmp_path / "a", "rft", n_epochs=1
    )
    checkpoint = run(config, RecordingSink()).final_checkpoint
    state_file = checkpoint / "state" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["iteration_steps"]  # what RFT checkpoints held before the shared plan
    state_file.write_text(json.dumps(state))
    manifest = json.loads((checkpoint / "manifest.json").read_text())  # keep the checkpoint complete
    for entry in manifest["files"]:
        if entry["path"] == "state/trainer_state.json":
            entry["size"] = state_file.stat().st_size
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))
    again = config.model_copy(update={"resume_from": str(checkpoint), "output_dir": str(tmp_path / "b")})
    with pytest.raises(ValueError, match=r"written by an older trainer \(no iteration_steps\)"):
        run(again, RecordingSink())
