"""Juice trainer: data -> tokens -> losses -> training loop -> checkpoints. A pure library.

It imports nothing from the service (api, worker, juice) and no web, database or queue package;
`tests/trainer/test_import_boundaries.py` enforces this. One entry point:

    from trainer import TrainConfig, run
    result = run(TrainConfig(model="path/or/hub-id", training_file="train.jsonl", output_dir="out"))

`run` dispatches on `config.method` through the plain dict `METHODS`. See `trainer.cli` for the
command line, `trainer.callbacks` for the sink interface and metric names, and
`trainer.checkpointing` for the checkpoint layout.
"""

from __future__ import annotations

from trainer.callbacks import NullSink, PrintSink, Sink
from trainer.config import LoraSettings, SFTHyperparameters, TrainConfig, load_config
from trainer.methods import sft
from trainer.result import RunResult

METHODS = {"sft": sft.train}

__all__ = [
    "METHODS",
    "LoraSettings",
    "NullSink",
    "PrintSink",
    "RunResult",
    "SFTHyperparameters",
    "Sink",
    "TrainConfig",
    "load_config",
    "run",
]


def run(config: TrainConfig, sink: Sink | None = None) -> RunResult:
    """Train with the method named by `config.method`, reporting to `sink` (default: NullSink)."""
    if config.method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {config.method!r}")
    return METHODS[config.method](config, sink or NullSink())
