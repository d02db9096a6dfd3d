"""GPU checks: a bf16 SFT step on CUDA. Skipped cleanly where there is no GPU (CI never has one)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.helpers import chat_jsonl
from trainer import TrainConfig, run
from trainer.callbacks import NullSink

require_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class Metrics(NullSink):
    def __init__(self) -> None:
        self.values: list[dict] = []

    def log_metrics(self, step, values):
        self.values.append(dict(values))


@pytest.mark.gpu
@require_gpu
def test_bf16_sft_steps_on_cuda(tiny_model_dir, tmp_path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_bytes(chat_jsonl(16))
    sink = Metrics()
    config = TrainConfig.from_dict(
        {
            "model": str(tiny_model_dir),
            "training_file": str(data),
            "output_dir": str(tmp_path / "out"),
            "device": "cuda",
            "mixed_precision": "auto",
            "hyperparameters": {"n_epochs": 2, "batch_size": 4, "learning_rate": 1e-3, "max_seq_len": 128},
        }
    )
    result = run(config, sink)
    assert result.status == "completed" and result.global_step == 8
    losses = [v["train/loss"] for v in sink.values if "train/loss" in v]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    saved = json.loads((result.final_checkpoint / "model" / "juice_training_config.json").read_text())
    assert saved["mixed_precision"] == "auto"
    assert torch.cuda.is_bf16_supported()  # H100/H200: "auto" resolved to bf16
