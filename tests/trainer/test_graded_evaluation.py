"""Graded evaluation for every method (trainer/grading.py, loop.validate): a job with a grader answers its
validation file's prompts at each evaluation and once for the starting model, beside eval/loss, with each
line's own answer as `{{item.reference}}`."""

from __future__ import annotations

import pytest

from tests.trainer.recording import RecordingSink
from trainer import TrainConfig, run
from trainer.grading import graded_tasks

REFERENCE_MATCH = {
    "type": "text_similarity",
    "name": "like_reference",
    "input": "{{sample.output_text}}",
    "reference": "{{item.reference}}",
    "evaluation_metric": "fuzzy_match",
}


def test_every_kind_of_validation_line_gives_a_prompt_and_its_reference(
    tokenizer, tmp_path, write_jsonl, rows
):
    path = write_jsonl(
        tmp_path / "v.jsonl",
        [
            rows[0],  # chat: the last assistant message is the reference
            {"prompt": "Name a colour.", "completion": "Blue."},
            {"prompt": "What is two plus two?", "chosen": "Four.", "rejected": "Seven."},
        ],
    )
    tasks, longest = graded_tasks(str(path), tokenizer, 256)
    assert [t.item["reference"] for t in tasks] == ["The capital of France is Paris.", "Blue.", "Four."]
    assert [t.line for t in tasks] == [1, 2, 3] and longest > 0
    assert tokenizer.decode(tasks[0].prompt).endswith("<|im_start|>assistant\n")  # the generation prompt


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_a_grader_scores_the_validation_prompts_at_each_evaluation(
    method, tiny_model_dir, tmp_path, write_jsonl, rows
):
    if method == "dpo":
        train = [
            {
                "prompt": r["messages"][-2]["content"],
                "chosen": r["messages"][-1]["content"],
                "rejected": "No.",
            }
            for r in rows
            if "messages" in r
        ]
    else:
        train = rows
    config = TrainConfig.from_dict(
        {
            "model": str(tiny_model_dir),
            "training_file": str(write_jsonl(tmp_path / "train.jsonl", train)),
            "validation_file": str(write_jsonl(tmp_path / "valid.jsonl", rows[:3])),
            "output_dir": str(tmp_path / "out"),
            "method": method,
            "device": "cpu",
            "grader": REFERENCE_MATCH,
            "hyperparameters": {"n_epochs": 2, "batch_size": 4, "learning_rate": 1e-2},
        }
    )
    sink = RecordingSink()
    result = run(config, sink)
    assert result.status == "completed"
    graded = [(step, v) for step, v in sink.metrics if "eval/reward" in v]
    losses = [step for step, v in sink.metrics if "eval/loss" in v]
    assert graded[0][0] == 0 and [s for s, _ in graded[1:]] == losses  # the start, then with each eval/loss
    for _, v in graded:
        assert 0.0 <= v["eval/reward"] <= 1.0 and v["eval/grader_error_rate"] == 0.0
        assert v["eval/generation_length"] > 0
