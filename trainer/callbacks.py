"""How the trainer reports to whoever runs it: the `Sink` protocol and two simple sinks.

The worker implements a sink that writes metrics, events and checkpoint rows to the service and
answers `should_stop()` from the job's cancel flag. Only the main process calls a sink.

Metric names (exact strings; the API and dashboard rely on them). Every training value is the mean
over the optimiser steps since the last log row (`loop.MetricAccumulator`), for every method:

    train/loss            the step's loss (SFT: token-mean NLL), averaged since the last log
    train/lr              the learning rate the last of those steps was taken with
    train/grad_norm       global gradient norm before clipping, averaged since the last log
    train/tokens_per_s    non-padding input tokens per second, all processes, since the last log
    train/token_accuracy  argmax accuracy on trained tokens, averaged since the last log
    train/epoch           fractional epoch, e.g. 1.5 = halfway through the second epoch
    train/tokens          cumulative trained (label) tokens
    eval/loss             token-mean NLL on the validation file (`evaluation.py`, every method)
    eval/token_accuracy   argmax accuracy on the validation file
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Protocol, TextIO, runtime_checkable

METRIC_NAMES = (  # SFT's series, exactly (plus eval/logp_gap{,_accuracy} on a preference validation file)
    "train/loss",
    "train/lr",
    "train/grad_norm",
    "train/tokens_per_s",
    "train/token_accuracy",
    "train/epoch",
    "train/tokens",
    "eval/loss",
    "eval/token_accuracy",
)


@runtime_checkable
class Sink(Protocol):
    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        """Named scalar values at optimiser step `step`."""

    def log_event(self, message: str, level: str = "info", data: dict | None = None) -> None:
        """A human-readable event (level: info | warning | error) with optional structured data."""

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        """A complete checkpoint directory exists at `path` (manifest written, renamed into place)."""

    def should_stop(self) -> bool:
        """Polled between optimiser steps; True makes the trainer stop after the current step (cancel)."""

    def should_hold(self) -> bool:
        """Polled between optimiser steps; True makes the trainer checkpoint the current step and stop,
        so that another attempt resumes exactly there (the worker is shutting down)."""


class NullSink:
    """Discards everything and never asks to stop."""

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        pass

    def log_event(self, message: str, level: str = "info", data: dict | None = None) -> None:
        pass

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def should_hold(self) -> bool:
        return False


class PrintSink(NullSink):
    """One line per call, for the CLI."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def _print(self, line: str) -> None:
        print(line, file=self.stream or sys.stdout, flush=True)

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        parts = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        self._print(f"step {step}: {parts}")

    def log_event(self, message: str, level: str = "info", data: dict | None = None) -> None:
        self._print(f"[{level}] {message}" + (f" {data}" if data else ""))

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        self._print(f"checkpoint step {step}: {path}")
