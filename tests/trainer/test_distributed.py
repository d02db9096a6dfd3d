"""Two CPU processes (DDP over gloo) train exactly like one process with the same global batch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest


def _train_lines(output: str) -> list[str]:
    # "step N: train/loss=... train/grad_norm=..." without the timing-dependent tokens_per_s
    lines = [re.sub(r" train/tokens_per_s=\S+", "", line) for line in output.splitlines()]
    return [line for line in lines if line.startswith("step ")]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, tiny_model_dir, write_jsonl):
    rows = [{"prompt": f"Name a number {i}.", "completion": "Seven."} for i in range(7)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    common = [
        f"model={tiny_model_dir}",
        f"training_file={train}",
        f"validation_file={train}",
        "device=cpu",
        "n_epochs=2",
        "gradient_accumulation_steps=2",
        "learning_rate=0.01",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    single = subprocess.run(
        [sys.executable, "-m", "trainer", *common, "batch_size=4", f"output_dir={tmp_path / 'one'}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    # 7 examples, 2 x 2 per micro-batch: the last micro-batch leaves one process a single example.
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "-m",
            "trainer",
            *common,
            "batch_size=2",
            f"output_dir={tmp_path / 'two'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-2000:]

    expected = _train_lines(single.stdout)
    assert len(expected) == 4  # two train and two eval lines
    assert _train_lines(launched.stdout) == expected  # printed by the main process only
    assert (tmp_path / "two" / "checkpoints" / "step_00000002" / "manifest.json").exists()


def _launch(args: list[str], processes: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [] if processes == 1 else ["-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
    return subprocess.run(
        [sys.executable, *launcher, "-m", "trainer", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def _series(output: str) -> list[tuple[int, dict[str, float]]]:
    """(step, {metric: value}) of every printed metrics row, without the timing-dependent tokens_per_s."""
    rows = []
    for line in _train_lines(output):
        head, _, body = line.partition(": ")
        values = dict(part.split("=", 1) for part in body.split())
        rows.append((int(head.split()[1]), {k: float(v) for k, v in values.items()}))
    return rows


# Printed to 4 significant digits, and two processes sum in another order than one: equal within the
# rounding of the print (5e-4 relative) and float noise of values near zero (advantages/mean ~ 1e-8).
REL, ABS = 2e-3, 1e-4


def _assert_same_series(one: list, two: list) -> None:
    assert [step for step, _ in two] == [step for step, _ in one]
    for (step, a), (_, b) in zip(one, two, strict=True):
        assert a.keys() == b.keys(), step
        for name in a:
            assert b[name] == pytest.approx(a[name], rel=REL, abs=ABS), (step, name, a[name], b[name])


PAIR_METHOD_CASES = {
    # SPIN's two outer iterations: generation and reference scoring sharded, gathered, then trained on.
    # Two sampled negatives per prompt (gathered a prompt's group at a time) and the anchor.
    "irft": [
        "method=irft",
        "outer_iterations=2",
        "schedule=full",
        "generation.max_new_tokens=6",
        "samples_per_prompt=2",
        "truncated_negatives=keep",
        "nll_weight=0.5",
    ],
    # Sampled at temperature 1: per-prompt RNG streams keep the split from changing the samples.
    "rft": [
        "method=rft",
        "outer_iterations=2",
        "samples_per_prompt=2",
        "generation.max_new_tokens=6",
        "reward_epochs=2",
        "nll_weight=0.5",  # the ptx term: one forward with the samples, the divisor over all processes
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(PAIR_METHOD_CASES))
def test_two_processes_match_one_for_the_paper_methods(method, tmp_path, tiny_model_dir, write_jsonl):
    """IRFT and RFT on two gloo processes with half the per-process batch: the same loss series (and
    every other metric) as one process, with 7 examples so that a last micro-batch leaves one process a
    single example and another none. (DPO runs IRFT's pair loop, `pair_training.py`, with its second
    responses read from the file instead of generated.)"""
    rows = [{"prompt": f"Name a number {i}.", "completion": f"Seven {i}."} for i in range(7)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    common = [
        f"model={tiny_model_dir}",
        f"training_file={train}",
        "device=cpu",
        "n_epochs=2",
        "gradient_accumulation_steps=2",
        "learning_rate=0.01",
        "logging_interval=1",
        "checkpoint_interval=1",
        *PAIR_METHOD_CASES[method],
    ]
    single = _launch([*common, "batch_size=2", f"output_dir={tmp_path / 'one'}"], 1)
    assert single.returncode == 0, single.stderr[-3000:]
    double = _launch([*common, "batch_size=1", f"output_dir={tmp_path / 'two'}"], 2)
    assert double.returncode == 0, double.stderr[-3000:]

    one, two = _series(single.stdout), _series(double.stdout)
    assert len(one) >= 4 and any("train/loss" in values for _, values in one)
    _assert_same_series(one, two)
    assert double.stdout.count("completed: step") == 1  # one process reports
    # The main process alone scores the demonstrations at the end, with the same final model: same file.
    scores = [
        [json.loads(x) for x in (tmp_path / run / "demonstration_scores.jsonl").read_text().splitlines()]
        for run in ("one", "two")
    ]
    assert [r["line"] for r in scores[1]] == [r["line"] for r in scores[0]] and len(scores[0]) == 7
    assert [r["score"] for r in scores[1]] == pytest.approx([r["score"] for r in scores[0]], rel=REL, abs=ABS)

    # Resumed on two processes from the first (mid-iteration) checkpoint: the rest of the same series.
    first = tmp_path / "two" / "checkpoints" / "step_00000001"
    assert (first / "manifest.json").exists(), "the main process wrote no checkpoint"
    resumed = _launch(
        [*common, "batch_size=1", f"output_dir={tmp_path / 'three'}", f"resume_from={first}"], 2
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_series([row for row in two if row[0] > 1], _series(resumed.stdout))


def test_shards_interleave_back_in_order():
    import doctest

    import trainer.runtime
    from trainer.runtime import interleave, shard

    result = doctest.testmod(trainer.runtime)
    assert result.attempted > 0 and result.failed == 0
    for world in (1, 2, 3, 5):
        for n in (0, 1, 4, 7):
            assert interleave([shard(list(range(n)), r, world) for r in range(world)]) == list(range(n))
