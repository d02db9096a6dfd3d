"""`juice jobs watch` (and `juice jobs create --watch`): a running job followed live until it ends.

The main loop reads the job and its events once a second while a thread follows the metrics stream
(SSE), reconnecting from the last seq and falling back to polling `GET .../metrics` when the stream
cannot be had. Into a terminal it is a rich progress bar with the latest losses, events scrolling
above; into a pipe or a file, one plain line per event and per logged loss. An outage of the API
(`transient`) is ridden out; any other ClientError ends the watch.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from juice.client import ClientError, JuiceClient, transient

if TYPE_CHECKING:
    from rich.console import Console

FINAL = ("succeeded", "failed", "cancelled")
POLL_S = 1.0  # how often `watch` reads the job and its events (metrics come as they are written)
END_GRACE_S = 5.0  # how long `watch` waits, once the job is final, for the stream's last points
TRAIN_LOSS, EVAL_LOSS = "train/loss", "eval/loss"


def console() -> Console:
    """rich's console for stdout. Into a pipe or a file it is unbounded in width: a table is then never
    folded to 80 columns, so ids stay whole for grep and awk."""
    from rich.console import Console

    out = Console()
    return out if out.is_terminal else Console(width=10_000)


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) of each Server-Sent Event; comments (the keep-alives), `id` and `retry` skipped."""
    event = "message"
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)


class MetricFeed:
    """A job's new metric points: from the SSE stream, read in a thread of its own so the main loop can
    poll the job and its events meanwhile, or, when the stream cannot be had (a proxy that buffers, the
    per-organization stream cap), by polling GET .../metrics."""

    def __init__(self, api: JuiceClient, job_id: str, after_seq: int) -> None:
        self.api, self.job_id = api, job_id
        self.cursor = after_seq  # the stream thread's: where a reconnect resumes
        self.taken = after_seq  # the main thread's: the newest seq handed out (no point twice)
        self.points: queue.Queue[dict[str, Any]] = queue.Queue()
        self.ended = threading.Event()  # the stream said `end`: every point of the job has been queued
        self.failed = ""  # why the stream was given up; from then on points are polled
        threading.Thread(target=self._follow, args=(api.clone(),), daemon=True).start()

    def _follow(self, api: JuiceClient) -> None:
        misses, why = 0, "the metrics stream kept closing"
        while misses < 3:
            try:
                if self._read_stream(api):
                    self.ended.set()
                    return
                misses += 1  # closed without `end` (the server drops a slow reader, a restart): resume
            except ClientError as e:
                misses, why = (misses + 1 if transient(e) else 3), str(e)  # a 403 or 404 stays one
            except (ValueError, KeyError) as e:  # a garbled event
                misses, why = misses + 1, str(e) or type(e).__name__
            time.sleep(1)
        self.failed = why

    def _read_stream(self, api: JuiceClient) -> bool:
        """Follow the stream from the cursor; True once it ended with the job."""
        path = f"/fine_tuning/jobs/{self.job_id}/metrics/stream"
        with api.stream(path, params={"after_seq": self.cursor}) as r:
            for event, data in sse_events(r.iter_lines()):
                if event == "end":
                    return True
                if event == "metric":
                    point = json.loads(data)
                    self.cursor = point["seq"]
                    self.points.put(point)
        return False

    def take(self, wait_s: float) -> list[dict[str, Any]]:
        """The points that came since the last call, waiting up to `wait_s` for the first."""
        if self.failed:
            time.sleep(wait_s)
            try:
                return self.poll()
            except ClientError as e:
                if transient(e):
                    return []  # the main loop's own reads report the outage
                raise
        try:
            got = [self.points.get(timeout=wait_s)]
        except queue.Empty:
            return []
        while not self.points.empty():
            got.append(self.points.get_nowait())
        return self._fresh(got)

    def poll(self) -> list[dict[str, Any]]:
        """The points after the last one taken, read with a plain GET (the stream's fallback)."""
        path = f"/fine_tuning/jobs/{self.job_id}/metrics"
        return self._fresh(
            self.api.call("GET", path, params={"after_seq": self.taken, "limit": 1000})["data"]
        )

    def rest(self) -> list[dict[str, Any]]:
        """Once the job is final, the points not taken yet. The stream ends right after the job's last
        point; if it has not within END_GRACE_S (or was given up), they are read with a GET."""
        if not self.failed:
            self.ended.wait(END_GRACE_S)
        got = self.take(0) if self.ended.is_set() else []
        return got + ([] if self.ended.is_set() else self.poll())

    def _fresh(self, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
        fresh = [p for p in points if p["seq"] > self.taken]
        if fresh:
            self.taken = fresh[-1]["seq"]
        return fresh


@dataclass
class WatchState:
    status: str = ""
    step: int = 0
    total: int | None = None
    train_loss: float | None = None
    eval_loss: float | None = None

    def apply_job(self, job: dict[str, Any]) -> None:
        progress = job.get("progress") or {}
        self.status, self.total = job["status"], progress.get("total_steps") or self.total
        self.step = max(self.step, progress.get("step") or 0)
        latest = job.get("latest_metrics") or {}
        self.train_loss = latest.get(TRAIN_LOSS, self.train_loss)
        self.eval_loss = latest.get(EVAL_LOSS, self.eval_loss)

    def apply_point(self, point: dict[str, Any]) -> None:
        self.step, values = point["step"], point["values"]
        self.train_loss = values.get(TRAIN_LOSS, self.train_loss)
        self.eval_loss = values.get(EVAL_LOSS, self.eval_loss)

    def losses(self) -> str:
        return format_losses(self.train_loss, self.eval_loss)


def format_losses(train: float | None, evaluation: float | None) -> str:
    shown = [(name, v) for name, v in (("train loss", train), ("eval loss", evaluation)) if v is not None]
    return "  ".join(f"{name} {value:.4f}" for name, value in shown)


class Display(Protocol):
    """How `watch` shows a job: `line` for what stays in the output (an event, a status change),
    `progress` after the state took in a metric point (or a fresh read of the job, `point` None)."""

    def line(self, text: str) -> None: ...
    def progress(self, state: WatchState, point: dict[str, Any] | None) -> None: ...
    def close(self) -> None: ...


class PlainDisplay:
    """Not a terminal (a pipe, a log file, a test): one plain line per event and per logged loss."""

    def line(self, text: str) -> None:
        print(text, flush=True)

    def progress(self, state: WatchState, point: dict[str, Any] | None) -> None:
        # A line says what this point logged: the train and the eval loss of a step come as two points.
        logged = format_losses(*(point["values"].get(n) for n in (TRAIN_LOSS, EVAL_LOSS))) if point else ""
        if logged:
            self.line(f"step {state.step}/{state.total or '?'}  {logged}")

    def close(self) -> None:
        pass


class RichDisplay:
    """A terminal: a live progress bar of step / total_steps with the latest losses; events scroll above."""

    def __init__(self, out: Console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("[bold]{task.fields[status]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[losses]}"),
            TimeElapsedColumn(),
            console=out,
        )
        self.task = self.bar.add_task("", total=None, status="", losses="")
        self.bar.start()

    def line(self, text: str) -> None:
        self.bar.console.print(text, markup=False, highlight=False)

    def progress(self, state: WatchState, point: dict[str, Any] | None) -> None:
        self.bar.update(
            self.task, completed=state.step, total=state.total, status=state.status, losses=state.losses()
        )

    def close(self) -> None:
        self.bar.stop()


class EventLog:
    """A job's events not shown yet, oldest first (the API lists them newest first)."""

    def __init__(self, api: JuiceClient, job_id: str) -> None:
        self.api, self.job_id = api, job_id
        self.seen: set[str] = set()

    def new(self) -> list[str]:
        page = self.api.call("GET", f"/fine_tuning/jobs/{self.job_id}/events", params={"limit": 100})
        fresh = [e for e in reversed(page["data"]) if e["id"] not in self.seen]
        self.seen.update(e["id"] for e in fresh)
        return [self._format(e) for e in fresh]

    @staticmethod
    def _format(event: dict[str, Any]) -> str:
        level = "" if event.get("level") == "info" else f"{event.get('level', '').upper()}: "
        return f"{time.strftime('%H:%M:%S', time.localtime(event['created_at']))}  {level}{event['message']}"


def start_seq(api: JuiceClient, job_id: str) -> int:
    """The job's newest metric seq: the stream starts there, so joining a long job does not replay it
    (the losses so far come from the job's `latest_metrics`)."""
    page = api.call(
        "GET", f"/fine_tuning/jobs/{job_id}/metrics/series", params={"names": TRAIN_LOSS, "max_points": 10}
    )
    return int(page["last_seq"])


def watch(api: JuiceClient, job_id: str) -> int:
    job = api.call("GET", f"/fine_tuning/jobs/{job_id}")
    out = console()
    display: Display = RichDisplay(out) if out.is_terminal else PlainDisplay()
    try:
        job = _follow(api, job, display)
    except KeyboardInterrupt:
        display.close()
        print(
            f"juice: stopped watching; {job_id} goes on (`juice jobs watch {job_id}` follows it again)",
            file=sys.stderr,
        )
        return 130
    display.close()
    return finish(job)


def _follow(api: JuiceClient, job: dict[str, Any], display: Display) -> dict[str, Any]:
    """Show the job until it is final or paused; the job as last read."""
    state, events = WatchState(), EventLog(api, job["id"])
    state.apply_job(job)
    display.line(f"status: {state.status}")
    for text in events.new():
        display.line(text)
    if job["status"] in (*FINAL, "paused"):
        return job
    feed, polled, warned = MetricFeed(api, job["id"], start_seq(api, job["id"])), 0.0, False
    while True:
        for point in feed.take(POLL_S):
            state.apply_point(point)
            display.progress(state, point)
        if time.monotonic() - polled < POLL_S:
            continue  # metrics come fast while training: the job and its events are read once a second
        polled = time.monotonic()
        try:
            job, fresh = api.call("GET", f"/fine_tuning/jobs/{job['id']}"), events.new()
        except ClientError as e:
            if not transient(e):
                raise
            if not warned:
                display.line(f"(the API is busy or away: {e}; still watching)")
            warned = True
            continue
        warned = False
        for text in fresh:
            display.line(text)
        if job["status"] != state.status:
            display.line(f"status: {job['status']}")
        if job["status"] in FINAL:
            for point in feed.rest():
                state.apply_point(point)
                display.progress(state, point)
        state.apply_job(job)
        display.progress(state, None)
        if job["status"] in (*FINAL, "paused"):
            return job


def finish(job: dict[str, Any]) -> int:
    """The final line; exit 0 for succeeded (and paused, which may resume), 1 for failed or cancelled."""
    state = WatchState()
    state.apply_job(job)
    losses = f"  {state.losses()}" if state.losses() else ""
    if job["status"] == "succeeded":
        print(f"{job['id']} succeeded  fine-tuned model: {job['fine_tuned_model']}{losses}")
        return 0
    if job["status"] == "paused":
        print(f"{job['id']} paused at step {state.step}; `juice jobs resume {job['id']}` continues it")
        return 0
    print(f"{job['id']} {job['status']}{losses}")
    error = job.get("error") or {}
    why = f": {error['message']} ({error['code']})" if error.get("message") else ""
    print(f"juice: job {job['id']} {job['status']}{why}", file=sys.stderr)
    return 1
