"""select_checkpoint "best_eval_loss" on the tiny model, CPU: the run hands back the checkpoint with the
lowest eval/loss (the starting model, step 0, included), every method, and resumes with what it saw."""

from __future__ import annotations

import json

import pytest

from tests.trainer.recording import RecordingSink
from trainer import TrainConfig, run
from trainer.errors import InputError
from trainer.evaluation import evaluate, load_validation
from trainer.modeling import load_model_and_tokenizer
from trainer.runtime import make_accelerator
from trainer.spec.hyperparameters import HYPERPARAMETERS


@pytest.fixture
def make_config(tmp_path, tiny_model_dir, rows, write_jsonl):
    train_file = write_jsonl(tmp_path / "train.jsonl", rows)
    validation = write_jsonl(tmp_path / "val.jsonl", rows[:3])

    def make(method="sft", output="out", resume_from=None, validation_file=validation, **hp) -> TrainConfig:
        extra = {
            "sft": {},
            "irft": {"generation": {"max_new_tokens": 4}, "truncated_negatives": "keep"},
            "rft": {
                "samples_per_prompt": 2,
                "generation": {"max_new_tokens": 4},
                "reward_learning_rate": 1e-3,
            },
            "dpo": {},
            "iql": {},
        }[method]
        return TrainConfig.from_dict(
            {
                "model": str(tiny_model_dir),
                "training_file": str(train_file),
                "validation_file": str(validation_file) if validation_file else None,
                "output_dir": str(tmp_path / output),
                "resume_from": resume_from,
                "method": method,
                "device": "cpu",
                "seed": 0,
                "hyperparameters": {
                    "learning_rate": 1e-2,
                    "batch_size": 2,
                    "n_epochs": 2,
                    "eval_interval": 1,
                    "checkpoint_interval": 1000,  # only what the selection needs, and the last step
                    "select_checkpoint": "best_eval_loss",
                    **extra,
                    **hp,
                },
            }
        )

    return make


def _eval_losses(sink: RecordingSink) -> list[tuple[int, float]]:
    return [(step, v["eval/loss"]) for step, v in sink.metrics if "eval/loss" in v]


def _loss_of_checkpoint(path, config: TrainConfig) -> float:
    model, tokenizer = load_model_and_tokenizer(path / "model")
    validation = load_validation(config.validation_file, tokenizer, 1024, 256, RecordingSink())
    assert validation is not None
    return evaluate(model, tokenizer, validation, make_accelerator(config), 2)["eval/loss"]


@pytest.mark.parametrize("method", ["sft", "irft", "rft", "iql"])
def test_the_selected_checkpoint_is_the_lowest_eval_loss_step_zero_included(make_config, method):
    config = make_config(method)
    sink = RecordingSink()
    result = run(config, sink)
    assert result.status == "completed"
    losses = _eval_losses(sink)
    assert losses[0][0] == 0  # the starting model was evaluated
    best_step, best_loss = min(losses, key=lambda sl: (sl[1], sl[0]))
    assert result.selected_step == best_step
    saved = {step: path for step, path, _ in sink.checkpoints}
    assert 0 in saved and best_step in saved and result.global_step in saved
    # a checkpoint at each evaluation that improved on every earlier one, and none at the others
    running, improving = float("inf"), set()
    for step, loss in losses:
        if loss < running:
            running, improving = loss, improving | {step}
    assert set(saved) == improving | {result.global_step}
    # the selected checkpoint's weights give the loss the selection was made on
    assert _loss_of_checkpoint(saved[best_step], config) == pytest.approx(best_loss, abs=1e-4)
    [(_, message, data)] = [e for e in sink.events if "fine-tuned model is" in e[1]]
    assert data["best_step"] == best_step and f"step {best_step}" in message


def test_a_run_that_only_gets_worse_hands_back_its_starting_model_with_a_warning(make_config):
    sink = RecordingSink()
    result = run(make_config(learning_rate=1.0), sink)  # far too high: every step is worse
    losses = _eval_losses(sink)
    assert all(loss > losses[0][1] for _, loss in losses[1:]), losses
    assert result.selected_step == 0
    [(level, message, _)] = [e for e in sink.events if "starting model" in e[1]]
    assert level == "warning" and "did not improve" in message


def test_last_is_todays_behaviour(make_config):
    sink = RecordingSink()
    result = run(make_config(select_checkpoint="last"), sink)
    assert result.selected_step is None
    assert [step for step, _, _ in sink.checkpoints] == [result.global_step]
    assert 0 not in [step for step, _ in _eval_losses(sink)]


def test_best_eval_loss_needs_a_validation_file(make_config):
    with pytest.raises(InputError, match=r"^hyperparameters\.select_checkpoint: .*validation_file") as err:
        run(make_config(validation_file=None), RecordingSink())
    assert err.value.param == "hyperparameters.select_checkpoint"


def test_auto_is_the_reward_learning_default_and_selects_only_with_a_validation_file(make_config):
    """IRFT's and RFT's default: best_eval_loss when the job has a validation file, else last (and no
    error); SFT and DPO keep OpenAI's last."""
    defaults = {m: cls().select_checkpoint for m, cls in HYPERPARAMETERS.items()}
    assert defaults == {
        "sft": "last",
        "dpo": "last",
        "irft": "auto",
        "rft": "auto",
        "iql": "last",
        "reinforcement": "last",  # no eval/loss to select by
    }
    sink = RecordingSink()
    worse = run(make_config("irft", select_checkpoint="auto", learning_rate=1.0), sink)
    assert worse.selected_step == 0 and _eval_losses(sink)[0][0] == 0
    sink = RecordingSink()
    plain = run(make_config("irft", select_checkpoint="auto", validation_file=None), sink)
    assert plain.status == "completed" and plain.selected_step is None
    assert [step for step, _, _ in sink.checkpoints] == [plain.global_step]


def test_a_resumed_run_keeps_the_best_it_had_seen(make_config):
    """Resuming from the step-0 checkpoint repeats the run exactly, and a checkpoint carries the selection
    state, so the resumed run selects the same step."""
    straight = RecordingSink()
    whole = run(make_config(output="whole"), straight)
    step0 = next(path for step, path, _ in straight.checkpoints if step == 0)
    state = json.loads((step0 / "state" / "trainer_state.json").read_text())
    assert state["selection"]["best_step"] == 0 and state["global_step"] == 0
    resumed = RecordingSink()
    again = run(make_config(output="again", resume_from=str(step0)), resumed)
    assert again.selected_step == whole.selected_step
    expected = _eval_losses(straight)[1:]  # step 0 was evaluated before the checkpoint
    assert [s for s, _ in _eval_losses(resumed)] == [s for s, _ in expected]
    assert [v for _, v in _eval_losses(resumed)] == pytest.approx([v for _, v in expected], abs=1e-5)
