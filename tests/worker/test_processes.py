"""A multi-process job's supervisor (worker/processes.py) with real launched processes (two gloo ranks on
CPU): it reports what rank 0 reports, uploads each checkpoint before training goes on, passes a cancel
or a hand-over on, and re-raises the trainer's errors as an in-process run would."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import trainer
from tests.trainer.recording import RecordingSink
from trainer.errors import DataError
from trainer.result import RunResult
from worker.processes import ProcessesFailed, _child_error, decode_result, encode_result, train_in_processes

pytestmark = pytest.mark.slow


class CheckedSink(RecordingSink):
    """Records, and checks that a checkpoint is complete when it is reported (the upload's view)."""

    def on_checkpoint(self, step, path, metrics):
        assert (Path(path) / "manifest.json").exists()
        super().on_checkpoint(step, path, metrics)


def _config(tmp_path: Path, model: Path, rows: list[dict], **hp) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {
        "model": str(model / "tiny-llama"),  # the session's model root (tests/conftest.py)
        "training_file": str(train),
        "output_dir": str(tmp_path / "out"),
        "device": "cpu",
        "method": hp.pop("method", "sft"),
        "seed": 3,
        "hyperparameters": {"n_epochs": 2, "learning_rate": 0.01, "logging_interval": 1, **hp},
    }


ROWS = [{"prompt": f"Name a number {i}.", "completion": f"Seven {i}."} for i in range(6)]


def test_two_processes_report_what_one_process_does(tmp_path, tiny_model_dir):
    one = RecordingSink()
    trainer.run(
        trainer.TrainConfig.from_dict(_config(tmp_path / "a", tiny_model_dir, ROWS, batch_size=2)), one
    )
    two = CheckedSink()
    result = train_in_processes(
        _config(tmp_path / "b", tiny_model_dir, ROWS, batch_size=1), two, 2, tmp_path / "b" / "channel"
    )
    assert result.status == "completed" and result.global_step == 6
    assert result.final_checkpoint is not None and (result.final_checkpoint / "manifest.json").exists()
    assert [s for s, _ in two.train] == [s for s, _ in one.train]
    assert two.losses == pytest.approx(one.losses, rel=1e-4)
    assert [s for s, _, _ in two.checkpoints] == [3, 6]  # each epoch's end, each uploaded before going on
    started = next(data for _, message, data in two.events if message.startswith("Training for"))
    assert started["num_processes"] == 2


def test_a_result_crosses_the_channel_whole(tmp_path):
    """result.json carries every RunResult field, whatever the trainer adds: each one set here."""
    result = RunResult(
        status="completed",
        global_step=12,
        trained_tokens=345,
        final_checkpoint=tmp_path / "checkpoints" / "step_00000012",
        last_metrics={"train/loss": 1.5, "eval/loss": 2.25},
        selected_step=4,
        demonstration_scores=tmp_path / "demonstration_scores.jsonl",
    )
    unset = [f.name for f in dataclasses.fields(RunResult) if getattr(result, f.name) == f.default]
    assert not unset  # a field the trainer adds must be set here, so the round trip below proves it crosses
    text = encode_result(result)
    assert set(json.loads(text)) == set(RunResult.__dataclass_fields__)
    assert decode_result(text) == result
    last = RunResult("completed", 3, 10, None)  # "last": no selection, no final checkpoint
    assert decode_result(encode_result(last)) == last


def test_the_selected_step_comes_back_from_the_processes(tmp_path, tiny_model_dir):
    """select_checkpoint best_eval_loss on two processes: the step rank 0 selected reaches the worker."""
    config = _config(
        tmp_path,
        tiny_model_dir,
        ROWS,
        batch_size=1,
        learning_rate=0.3,
        lr_scheduler_type="constant",
        eval_interval=1,
        select_checkpoint="best_eval_loss",
    )
    validation = tmp_path / "validation.jsonl"
    validation.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:4]))
    config["validation_file"] = str(validation)
    sink = CheckedSink()
    result = train_in_processes(config, sink, 2, tmp_path / "channel")
    losses = {step: values["eval/loss"] for step, values in sink.evals}
    assert result.status == "completed" and 0 in losses  # the starting model was evaluated
    assert result.selected_step == min(losses, key=lambda step: (losses[step], step))
    assert result.selected_step in [step for step, _, _ in sink.checkpoints]  # and its checkpoint stored


def test_a_cancel_stops_the_processes_and_a_hand_over_checkpoints(tmp_path, tiny_model_dir):
    rows = ROWS * 4
    stopped = train_in_processes(
        _config(tmp_path / "s", tiny_model_dir, rows, batch_size=1),
        RecordingSink(stop_after_steps=2),
        2,
        tmp_path / "s" / "channel",
    )
    assert stopped.status == "stopped" and stopped.global_step < 24
    held_sink = CheckedSink(hold_after_steps=2)
    held = train_in_processes(
        _config(tmp_path / "h", tiny_model_dir, rows, batch_size=1), held_sink, 2, tmp_path / "h" / "channel"
    )
    assert held.status == "held" and held.global_step < 24
    assert held_sink.checkpoints[-1][0] == held.global_step  # checkpointed where it stopped


def test_the_trainers_input_errors_come_back_as_themselves(tmp_path, tiny_model_dir):
    config = _config(tmp_path, tiny_model_dir, [{"prompt": "x", "completion": "y"}], method="dpo")
    with pytest.raises(DataError) as caught:
        train_in_processes(config, RecordingSink(), 2, tmp_path / "channel")
    assert caught.value.param == "training_file" and "preference pairs" in str(caught.value)


def test_a_crash_without_a_report_names_the_exit_and_the_log(tmp_path):
    (tmp_path / "train.log").write_text("line 1\nSegmentation fault\n")
    error = _child_error(tmp_path, -11)
    assert isinstance(error, ProcessesFailed)
    assert "status -11" in str(error) and "Segmentation fault" in str(error)
    (tmp_path / "error.1.json").write_text(
        json.dumps({"type": "OutOfMemoryError", "code": None, "param": None, "message": "CUDA out of memory"})
    )
    assert isinstance(_child_error(tmp_path, 1), MemoryError)  # classified as the job's "oom"


class Gone(Exception):
    pass


class GoingAway(RecordingSink):
    """The task is going away mid-run (a shutdown): the sink raises at the first metrics row."""

    def log_metrics(self, step, values):
        raise Gone("the task is going away")


def _alive(channel: Path) -> list[str]:
    import subprocess

    out = subprocess.run(["pgrep", "-af", str(channel)], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def test_the_processes_end_with_the_task(tmp_path, tiny_model_dir):
    """Every rank (torchrun starts each in a session of its own) goes when the supervising task does."""
    import time

    channel = tmp_path / "channel"
    config = _config(tmp_path, tiny_model_dir, ROWS * 4, batch_size=1)
    with pytest.raises(Gone):
        train_in_processes(config, GoingAway(), 2, channel)
    deadline = time.monotonic() + 30
    while _alive(channel) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _alive(channel)
