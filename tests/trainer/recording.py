"""A Sink that keeps everything a trainer reports, shared by the method tests."""

from __future__ import annotations


class Crash(RuntimeError):
    """Raised by RecordingSink after a chosen checkpoint: a worker dying mid-run."""


class RecordingSink:
    """Keeps metrics, events and checkpoints; can ask to stop (cancel) or hold (hand over) after N
    logged steps, or crash after checkpoint N."""

    def __init__(
        self,
        stop_after_steps: int | None = None,
        crash_after_checkpoint: int | None = None,
        hold_after_steps: int | None = None,
    ):
        self.metrics: list[tuple[int, dict]] = []
        self.events: list[tuple[str, str, dict | None]] = []  # (level, message, data)
        self.checkpoints: list[tuple[int, object, dict]] = []  # (step, path, metrics)
        self.stop_after_steps = stop_after_steps
        self.crash_after_checkpoint = crash_after_checkpoint
        self.hold_after_steps = hold_after_steps
        self.polls = 0

    def log_metrics(self, step, values):
        self.metrics.append((step, dict(values)))

    def log_event(self, message, level="info", data=None):
        self.events.append((level, message, data))

    def on_checkpoint(self, step, path, metrics):
        self.checkpoints.append((step, path, dict(metrics)))
        if step == self.crash_after_checkpoint:
            raise Crash(f"simulated crash after checkpoint {step}")

    def should_stop(self):
        self.polls += 1
        return self.stop_after_steps is not None and len(self.train) >= self.stop_after_steps

    def should_hold(self):
        return self.hold_after_steps is not None and len(self.train) >= self.hold_after_steps

    @property
    def train(self) -> list[tuple[int, dict]]:
        return [(s, v) for s, v in self.metrics if "train/loss" in v]

    @property
    def losses(self) -> list[float]:
        return [v["train/loss"] for _, v in self.train]

    @property
    def evals(self) -> list[tuple[int, dict]]:
        return [(s, v) for s, v in self.metrics if "eval/loss" in v]

    def series(self, name: str) -> list[float]:
        return [v[name] for _, v in self.metrics if name in v]
