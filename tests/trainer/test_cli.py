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
