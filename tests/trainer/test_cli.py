"""`python -m trainer`: YAML + overrides in, PrintSink lines out."""

from __future__ import annotations

import io
import subprocess
import sys
from contextlib import redirect_stdout

import pytest

from trainer.callbacks import PrintSink
from trainer.cli import main


def test_cli_trains_from_yaml_with_overrides(tmp_path, tiny_model_dir, rows, write_jsonl):
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {tiny_model_dir}\ntraining_file: {train}\noutput_dir: {tmp_path / 'out'}\n"
        "device: cpu\nhyperparameters:\n  n_epochs: 5\n  batch_size: 6\n"
    )
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["--config", str(config), "n_epochs=1", "hyperparameters.learning_rate=1e-3"]) == 0
    text = out.getvalue()
    assert "step 1: train/loss=" in text and "checkpoint step 1:" in text
    assert text.rstrip().splitlines()[-1].startswith("completed: step 1,")

    # resume_from=auto picks the newest complete checkpoint: nothing left to do.
    out = io.StringIO()
    with redirect_stdout(out):
        main(["--config", str(config), "n_epochs=1", "resume_from=auto"])
    assert "Resumed from" in out.getvalue() and "completed: step 1," in out.getvalue()


def test_cli_reports_config_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["model=m", "training_file=t", "output_dir=o", "learning_rate=-1"])
    assert exc.value.code == 2
    assert "hyperparameters.learning_rate: expected" in capsys.readouterr().err


def test_cli_overrides_are_typed_by_the_field(monkeypatch, capsys):
    """`mixed_precision=no` is the string "no" (YAML would read false), lists come in brackets."""
    import trainer
    from trainer.result import RunResult

    seen = []

    def fake_run(config, sink):
        seen.append(config)
        return RunResult(status="completed", global_step=0, trained_tokens=0, final_checkpoint=None)

    monkeypatch.setattr(trainer, "run", fake_run)
    argv = ["model=m", "training_file=t", "output_dir=o", "mixed_precision=no", "method=rft"]
    argv += ["hyperparameters.lora.target_modules=[q_proj,v_proj]", "learning_rate=1e-4", "reward_model=null"]
    assert main(argv) == 0
    (config,) = seen
    assert config.mixed_precision == "no" and config.hyperparameters.reward_model is None
    assert config.hyperparameters.lora.target_modules == ["q_proj", "v_proj"]
    assert config.hyperparameters.learning_rate == pytest.approx(1e-4)
    with pytest.raises(SystemExit):
        main(["model=m", "training_file=t", "output_dir=o", "mixed_precision=maybe"])
    assert "mixed_precision: expected one of auto, no, bf16, fp16, got 'maybe'" in capsys.readouterr().err


def test_module_entry_point_help():
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "import-gguf" in result.stdout


def test_print_sink_format():
    out = io.StringIO()
    sink = PrintSink(out)
    sink.log_metrics(3, {"train/loss": 1.23456, "train/tokens": 10.0})
    sink.log_event("hello", level="warning")
    assert out.getvalue() == "step 3: train/loss=1.235 train/tokens=10\n[warning] hello\n"
    assert sink.should_stop() is False
