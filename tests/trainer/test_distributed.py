"""Two CPU processes (DDP over gloo) train exactly like one process with the same global batch."""

from __future__ import annotations

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
