"""A job that asks for `resources.processes = N > 1` trains in N processes (DDP, one per GPU) started by
`torch.distributed.run` as a supervised child of the worker's task:

- parent (`train_in_processes`, in the Celery task): writes the config, starts the launcher in its own
  session (the worker's SIGTERM does not reach it; a dying worker takes it down through
  PR_SET_PDEATHSIG), replays what rank 0 reports into the job's ServiceSink (metrics, events,
  checkpoints, uploaded before the child goes on, as in-process), passes a cancel or a hand-over on
  through a control file, kills the group when a cancel is not honoured within CANCEL_GRACE_S, and
  turns the child's end into the RunResult or the exception an in-process run would have given.
- child (`python -m worker.processes CHANNEL`, every rank): runs `trainer.run` with a `ChannelSink` on
  rank 0 (the trainer only lets the main process talk) and writes result.json, or error.<rank>.json.

The channel is a folder in the attempt's work dir: config.json, out.jsonl (rank 0's reports, one JSON
per line), ack.<n> (the parent stored checkpoint n), control ("stop" | "hold"), result.json,
error.<rank>.json and train.log (every rank's stdout and stderr).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: `trainer` loads torch, which the Celery parent never does
    from trainer.result import RunResult

log = logging.getLogger(__name__)

POLL_S = 0.2
CANCEL_GRACE_S = 120.0  # a cancel the trainer has not honoured by then (a long generation) is a kill
TERM_GRACE_S = 30.0  # from SIGTERM to SIGKILL when the processes are stopped
LOG_TAIL_LINES = 20


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- child side --------------------------------------------------------------------------------------
class ChannelSink:
    """trainer.callbacks.Sink for rank 0 of a launched job: reports go to out.jsonl for the parent."""

    def __init__(self, channel: Path) -> None:
        self.channel = channel
        self.out = (channel / "out.jsonl").open("a", encoding="utf-8")
        self.checkpoints = 0

    def _send(self, entry: dict[str, Any]) -> None:
        self.out.write(json.dumps(entry, default=str) + "\n")
        self.out.flush()

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        self._send({"kind": "metrics", "step": step, "values": values})

    def log_event(self, message: str, level: str = "info", data: dict | None = None) -> None:
        self._send({"kind": "event", "message": message, "level": level, "data": data})

    def on_checkpoint(self, step: int, path: Path, metrics: dict[str, float]) -> None:
        """Reported, then waited for: the parent uploads it before training goes on, as in-process."""
        self.checkpoints += 1
        n = self.checkpoints
        self._send({"kind": "checkpoint", "n": n, "step": step, "path": str(path), "metrics": metrics})
        while not (self.channel / f"ack.{n}").exists():
            time.sleep(POLL_S)

    def _control(self) -> str:
        try:
            return (self.channel / "control").read_text().strip()
        except FileNotFoundError:
            return ""

    def should_stop(self) -> bool:
        return self._control() == "stop"

    def should_hold(self) -> bool:
        return self._control() == "hold"


def child_main(channel: Path) -> int:
    import trainer
    from trainer.callbacks import NullSink
    from trainer.errors import InputError

    rank = int(os.environ.get("RANK", "0"))
    _set_parent_death_signal()  # the launcher starts each rank in its own session: go when it goes
    try:
        config = trainer.TrainConfig.from_dict(json.loads((channel / "config.json").read_text()))
        result = trainer.run(config, ChannelSink(channel) if rank == 0 else NullSink())
    except BaseException as exc:
        error = {
            "type": type(exc).__name__,
            "code": exc.code if isinstance(exc, InputError) else None,
            "param": exc.param if isinstance(exc, InputError) else None,
            "message": str(exc),
        }
        _write_atomic(channel / f"error.{rank}.json", json.dumps(error))
        raise
    if rank == 0:
        _write_atomic(channel / "result.json", encode_result(result))
    return 0


def encode_result(result: RunResult) -> str:
    """A RunResult as result.json holds it: every field of the dataclass, so a field the trainer adds
    (selected_step, say) reaches the parent without this file changing; paths as strings."""
    return json.dumps(dataclasses.asdict(result), default=str)


def decode_result(text: str) -> RunResult:
    """The RunResult that `encode_result` wrote."""
    from trainer.result import RunResult

    data = json.loads(text)
    for name in ("final_checkpoint", "demonstration_scores"):  # the Path fields
        data[name] = Path(data[name]) if data.get(name) else None
    return RunResult(**data)


# --- parent side -------------------------------------------------------------------------------------
class ProcessesFailed(RuntimeError):
    """The launched processes ended without a result or an error of their own (killed, crashed)."""


def _set_parent_death_signal() -> None:
    """SIGTERM this process when its parent dies (Linux prctl; elsewhere nothing)."""
    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(AttributeError, OSError):  # no prctl outside Linux
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _die_with_parent() -> None:  # in the launcher, before exec: its own session, SIGTERM if we die
    os.setsid()
    _set_parent_death_signal()


def _stop(child: subprocess.Popen) -> None:
    """End the launcher and its ranks: SIGTERM first (the launcher passes it on to every rank, which run
    in sessions of their own), SIGKILL after TERM_GRACE_S (the ranks' parent-death signal follows)."""
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(timeout=TERM_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    except ProcessLookupError:
        child.wait()


def launch_command(channel: Path, processes: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a local rendezvous on a free port
        "--nproc_per_node",
        str(processes),
        "-m",
        "worker.processes",
        str(channel),
    ]


def check_processes(processes: int) -> None:
    """A CUDA worker gives each process its own GPU: refuse more processes than it has."""
    import torch

    from trainer.errors import InputError

    if torch.cuda.is_available() and processes > torch.cuda.device_count():
        raise InputError(
            "resources",
            f"resources.processes: expected at most {torch.cuda.device_count()} (the GPUs of this "
            f"worker), got {processes}",
        )


def train_in_processes(config: dict[str, Any], sink: Any, processes: int, channel: Path) -> Any:
    """Run the trainer on `processes` processes, reporting to `sink` as an in-process run does, and
    return its RunResult (or raise what it raised)."""
    from trainer.result import RunResult

    check_processes(processes)
    channel.mkdir(parents=True, exist_ok=True)
    _write_atomic(channel / "config.json", json.dumps(config))
    (channel / "out.jsonl").touch()
    with (channel / "train.log").open("ab") as logfile:
        child = subprocess.Popen(
            launch_command(channel, processes),
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
    reader = _Replay(channel, sink)
    cancelled_at: float | None = None
    try:
        while child.poll() is None:
            if reader.pump() and cancelled_at is not None:  # an upload is not the trainer ignoring it
                cancelled_at = time.monotonic()
            if sink.should_stop():
                _write_atomic(channel / "control", "stop")
                cancelled_at = cancelled_at or time.monotonic()
                if time.monotonic() - cancelled_at > CANCEL_GRACE_S:
                    log.warning("the training processes did not honour a cancel; stopping them")
                    _stop(child)
            elif sink.should_hold():
                _write_atomic(channel / "control", "hold")
            time.sleep(POLL_S)
    except BaseException:  # the task itself is going away: take the processes with it
        _stop(child)
        raise
    reader.pump()
    result = channel / "result.json"
    if result.exists():
        return decode_result(result.read_text())
    if cancelled_at is not None:  # killed after a cancel: nothing to resume, as a stop would leave
        return RunResult("stopped", reader.last_step, 0, None, {})
    raise _child_error(channel, child.returncode)


class _Replay:
    """Reads rank 0's complete new lines of out.jsonl and calls the job's sink with them."""

    def __init__(self, channel: Path, sink: Any) -> None:
        self.channel, self.sink = channel, sink
        self.offset = 0
        self.last_step = 0

    def pump(self) -> bool:
        """Apply the new complete lines; True if one of them was a checkpoint (an upload)."""
        with (self.channel / "out.jsonl").open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        uploaded = False
        for line in complete.splitlines():
            uploaded = self._apply(json.loads(line)) or uploaded
        return uploaded

    def _apply(self, entry: dict[str, Any]) -> bool:
        kind = entry["kind"]
        if kind == "metrics":
            self.last_step = max(self.last_step, entry["step"])
            self.sink.log_metrics(entry["step"], entry["values"])
        elif kind == "event":
            self.sink.log_event(entry["message"], level=entry["level"], data=entry["data"])
        elif kind == "checkpoint":
            try:
                self.sink.on_checkpoint(entry["step"], Path(entry["path"]), entry["metrics"])
            finally:  # stored or not (the sink records a failed upload), training goes on
                (self.channel / f"ack.{entry['n']}").touch()
            return True
        return False


def _child_error(channel: Path, returncode: int) -> BaseException:
    """The exception the processes raised (rank 0's if it wrote one), rebuilt so that the worker
    classifies it as it would in-process: an input error keeps its class, code and param; running
    out of memory stays MemoryError; anything else is a ProcessesFailed with the log's tail."""
    from trainer import errors

    # The first written: a failing rank makes the launcher stop the others, whose own reports follow.
    reports = sorted(channel.glob("error.*.json"), key=lambda p: p.stat().st_mtime_ns)
    if reports:
        error = json.loads(reports[0].read_text())
        for cls in (errors.PolicyDidNotMoveError, errors.DataError, errors.ModelLoadError, errors.InputError):
            if error["code"] == cls.code and error["param"] is not None:
                return cls(error["param"], error["message"])
        if error["type"] in ("OutOfMemoryError", "MemoryError"):
            return MemoryError(error["message"])
        return ProcessesFailed(f"{error['type']}: {error['message']}")
    try:
        tail = (channel / "train.log").read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    except FileNotFoundError:
        tail = []
    return ProcessesFailed(
        f"the training processes exited with status {returncode} and no report; log tail:\n" + "\n".join(tail)
    )


if __name__ == "__main__":
    raise SystemExit(child_main(Path(sys.argv[1])))
