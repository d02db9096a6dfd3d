"""The example run config in examples/ stays valid and trains (on the tiny model instead of SmolLM2)."""

from __future__ import annotations

from pathlib import Path

from trainer import run
from trainer.config import load_config

REPO = Path(__file__).resolve().parents[2]


def test_irft_example_config_runs(tiny_model_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(REPO)  # the example's data paths are relative to the repository
    config = load_config(
        REPO / "examples" / "irft_run.yaml",
        [f"model={tiny_model_dir}", f"output_dir={tmp_path}", "generation.max_new_tokens=4"],
    )
    assert config.method == "irft" and config.hyperparameters.outer_iterations == 2
    result = run(config)
    assert result.status == "completed" and result.final_checkpoint is not None


def test_home_paths_are_expanded(tmp_path) -> None:
    config = load_config(REPO / "examples" / "irft_run.yaml", [f"output_dir={tmp_path}"])
    assert config.model == str(Path.home() / ".juice" / "models" / "SmolLM2-135M-Instruct")
