"""The user's commands: `juice files` and `juice jobs`, over the public REST API under /v1 and nothing else.

juice files upload PATH [--purpose fine-tune]            prints the file id
juice jobs create --model M --training-file F [...]      F: a file id or a local path (uploaded first)
juice jobs list [--limit N]
juice jobs watch ID                                      progress, loss and events until the job ends
juice jobs cancel|pause|resume ID
juice jobs download ID [--checkpoint CKPT] [-o DIR]      a checkpoint, unpacked as a Hugging Face folder

These talk plain HTTP (httpx) to the same endpoints the `openai` SDK uses, so they work against any Juice
from any machine and import nothing of the service (no torch, trainer, worker or database). Every command
takes --api-url (env JUICE_API_URL, default http://127.0.0.1:8000/v1) and --api-key (env JUICE_API_KEY,
else the key `juice up` wrote to $JUICE_HOME/api_key). An API error is one line on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import queue
import shutil
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

import httpx

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_API_URL = "http://127.0.0.1:8000/v1"
FINAL = ("succeeded", "failed", "cancelled")
POLL_S = 1.0  # how often `watch` reads the job and its events (metrics come as they are written)
END_GRACE_S = 5.0  # how long `watch` waits, once the job is final, for the stream's last points
TRAIN_LOSS, EVAL_LOSS = "train/loss", "eval/loss"


class CliError(Exception):
    """A failure the user gets as one line on stderr, and exit code 1."""


class ApiError(CliError):
    """The API answered with an error status (its OpenAI error envelope, made into one line)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ConnectionLost(CliError):
    """The API did not answer, or the connection broke."""


def transient(e: CliError) -> bool:
    """Whether asking again later may work: a broken connection, a rate limit, a server error (a restart,
    the database away). `watch` rides these out; everything else ends it."""
    return isinstance(e, ConnectionLost) or (isinstance(e, ApiError) and (e.status == 429 or e.status >= 500))


# --- talking to the API -------------------------------------------------------------------------------


def home_key_file() -> Path:
    # The same default as api/core/config.py's `_default_home`, spelled out here so that this module
    # does not import the service's settings.
    return Path(os.environ.get("JUICE_HOME") or Path.home() / ".juice").expanduser() / "api_key"


def resolve_key(given: str | None) -> str:
    """--api-key, else JUICE_API_KEY, else the embedded install's key file: `juice up` users pass nothing."""
    key = given or os.environ.get("JUICE_API_KEY")
    if key:
        return key
    path = home_key_file()
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    except OSError as e:
        raise CliError(f"cannot read the API key file {path}: {e.strerror}") from None
    if not key:
        raise CliError(
            f"no API key: pass --api-key, set JUICE_API_KEY, or run `juice up` once (it writes {path})"
        )
    return key


def error_line(r: httpx.Response) -> str:
    """The API's own message from the OpenAI error envelope, with the status, code and field it names."""
    try:
        err = r.json().get("error")
    except (ValueError, AttributeError):
        err = None
    if isinstance(err, dict) and err.get("message"):
        message = str(err["message"])
        details = [f"HTTP {r.status_code}", *(str(err[k]) for k in ("code", "param") if err.get(k))]
    else:  # not Juice answering (a proxy, another server): show what it said, shortly
        message = r.text.strip()[:300] or r.reason_phrase
        details = [f"HTTP {r.status_code}"]
    hint = "; check --api-key or JUICE_API_KEY" if r.status_code == 401 else ""
    return f"{message} ({', '.join(details)}){hint}"


class Api:
    """An authenticated client of one Juice API; every failure comes out as a CliError."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url.rstrip("/"), key
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key}", "User-Agent": "juice-cli"},
            # a metrics stream sends a keep-alive every 15 s, so a 60 s read timeout only fires on a dead link
            timeout=httpx.Timeout(60.0, connect=5.0),
        )

    def clone(self) -> Api:
        """A client of its own, for another thread (one httpx.Client is not shared across threads here)."""
        return Api(self.url, self.key)

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """A request whose answer is JSON: that JSON."""
        with self._transport_errors():
            r = self.http.request(method, path, **kwargs)
        self._check(r)
        try:
            return r.json()
        except ValueError:
            raise CliError(f"{r.url} did not answer JSON; is {self.url} the API's /v1 URL?") from None

    @contextmanager
    def stream(self, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A GET whose body is read as it arrives (a metrics stream, a checkpoint tar)."""
        with self._transport_errors(), self.http.stream("GET", path, **kwargs) as r:
            if r.is_error:
                r.read()
            self._check(r)
            yield r

    def _check(self, r: httpx.Response) -> None:
        if not r.is_error:
            return
        # The likeliest cause of a 404 on every call: a URL without the /v1 the routes live under.
        hint = "; the API's URL ends in /v1" if r.status_code == 404 and not self.url.endswith("/v1") else ""
        raise ApiError(error_line(r) + hint, r.status_code)

    @contextmanager
    def _transport_errors(self) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectError as e:
            raise ConnectionLost(
                f"{self.url} did not answer ({e}); start Juice with `juice up`, "
                "or point --api-url / JUICE_API_URL at a running one"
            ) from None
        except httpx.TransportError as e:
            raise ConnectionLost(f"the connection to {self.url} failed: {e or type(e).__name__}") from None


def command(fn: Callable[[argparse.Namespace, Api], int]) -> Callable[[argparse.Namespace], int]:
    """Run a command with its client, turning every CliError into one line on stderr and exit 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            api = Api(
                args.api_url or os.environ.get("JUICE_API_URL") or DEFAULT_API_URL, resolve_key(args.api_key)
            )
            try:
                return fn(args, api)
            finally:
                api.close()
        except CliError as e:
            print(f"juice: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130

    return run


def console() -> Console:
    """rich's console for stdout. Into a pipe or a file it is unbounded in width: a table is then never
    folded to 80 columns, so ids stay whole for grep and awk."""
    from rich.console import Console

    out = Console()
    return out if out.is_terminal else Console(width=10_000)


# --- files --------------------------------------------------------------------------------------------


def upload(api: Api, path: Path, purpose: str) -> str:
    """Upload a JSONL file; its id. The API validates every line and names the first bad one."""
    try:
        f = path.open("rb")
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}") from None
    with f:
        files = {"file": (path.name, f, "application/jsonl")}
        return str(api.call("POST", "/files", files=files, data={"purpose": purpose})["id"])


def cmd_files_upload(args: argparse.Namespace, api: Api) -> int:
    print(upload(api, Path(args.path), args.purpose))
    return 0


def file_id(api: Api, given: str) -> str:
    """A local path is uploaded first; anything else must be a file id."""
    path = Path(given)
    if path.is_file():
        fid = upload(api, path, "fine-tune")
        print(f"uploaded {path} as {fid}", file=sys.stderr)
        return fid
    if given.startswith("file-"):
        return given
    raise CliError(f"{given} is neither a local file nor a file id (file-...)")


# --- jobs create: the request body --------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def parse_value(text: str) -> Any:
    """JSON when it parses (numbers, true/false/null, lists, objects), else the text itself ("auto", a
    name). NaN and Infinity stay text: they are not JSON numbers, and the API refuses them as numbers."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError:
        return text


def parse_hyperparameters(pairs: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs as a hyperparameters dict; a dotted key (`lora.r=8`) is a nested block."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise CliError(f"--hp {pair!r}: expected KEY=VALUE, e.g. n_epochs=3 or lora.r=8")
        node = out
        for depth, part in enumerate(parts[:-1], 1):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CliError(f"--hp {pair!r}: {'.'.join(parts[:depth])} is given as a value, not a block")
        if parts[-1] in node:
            raise CliError(f"--hp {pair!r}: {key.strip()} is given twice")
        node[parts[-1]] = parse_value(raw)
    return out


def method_block(method: str, hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's shape: `{"type": T, T: {"hyperparameters": {...}}}`; no block when nothing is set."""
    block: dict[str, Any] = {"type": method}
    if hyperparameters:
        block[method] = {"hyperparameters": hyperparameters}
    return block


def job_body(
    model: str, training_file: str, method: str, hyperparameters: dict[str, Any], **optional: Any
) -> dict[str, Any]:
    """POST /v1/fine_tuning/jobs's body; `optional` fields (validation_file, suffix, seed) left out when None."""
    body = {"model": model, "training_file": training_file, "method": method_block(method, hyperparameters)}
    return body | {k: v for k, v in optional.items() if v is not None}


def cmd_jobs_create(args: argparse.Namespace, api: Api) -> int:
    hyperparameters = parse_hyperparameters(args.hp or [])  # a typo fails before anything is uploaded
    training = file_id(api, args.training_file)
    validation = file_id(api, args.validation_file) if args.validation_file else None
    body = job_body(
        args.model,
        training,
        args.method,
        hyperparameters,
        validation_file=validation,
        suffix=args.suffix,
        seed=args.seed,
    )
    job = api.call("POST", "/fine_tuning/jobs", json=body)
    if not args.watch:
        print(job["id"])
        return 0
    print(f"created {job['id']}", flush=True)
    return watch(api, job["id"])


# --- jobs list, cancel, pause, resume -----------------------------------------------------------------


def _when(unix: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(unix)) if unix else ""


def cmd_jobs_list(args: argparse.Namespace, api: Api) -> int:
    from rich.table import Table

    jobs = api.call("GET", "/fine_tuning/jobs", params={"limit": args.limit})["data"]
    table = Table("id", "model", "method", "status", "created", "fine_tuned_model")
    # In a narrow terminal, ids and model names (no spaces to wrap at) fold whole rather than end in "…".
    for column in table.columns:
        column.overflow = "fold"
    table.columns[0].no_wrap = True
    for job in jobs:
        method = (job.get("method") or {}).get("type", "")
        table.add_row(
            job["id"],
            job["model"],
            method,
            job["status"],
            _when(job["created_at"]),
            job["fine_tuned_model"] or "",
        )
    console().print(table)
    return 0


# What a status means right after an action, while the worker has yet to act on it at its next step.
ACTION_NOTES = {
    ("cancel", "running"): " (cancellation requested: it stops at the next step)",
    ("pause", "running"): " (pause requested: it checkpoints at the next step and stops)",
    ("resume", "queued"): " (it continues from its checkpoint)",
}


def cmd_jobs_action(args: argparse.Namespace, api: Api) -> int:
    job = api.call("POST", f"/fine_tuning/jobs/{args.job_id}/{args.action}")
    print(f"{job['id']}: {job['status']}{ACTION_NOTES.get((args.action, job['status']), '')}")
    return 0


# --- jobs watch ---------------------------------------------------------------------------------------


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

    def __init__(self, api: Api, job_id: str, after_seq: int) -> None:
        self.api, self.job_id = api, job_id
        self.cursor = after_seq  # the stream thread's: where a reconnect resumes
        self.taken = after_seq  # the main thread's: the newest seq handed out (no point twice)
        self.points: queue.Queue[dict[str, Any]] = queue.Queue()
        self.ended = threading.Event()  # the stream said `end`: every point of the job has been queued
        self.failed = ""  # why the stream was given up; from then on points are polled
        threading.Thread(target=self._follow, args=(api.clone(),), daemon=True).start()

    def _follow(self, api: Api) -> None:
        misses, why = 0, "the metrics stream kept closing"
        while misses < 3:
            try:
                if self._read_stream(api):
                    self.ended.set()
                    return
                misses += 1  # closed without `end` (the server drops a slow reader, a restart): resume
            except CliError as e:
                misses, why = (misses + 1 if transient(e) else 3), str(e)  # a 403 or 404 stays one
            except (ValueError, KeyError) as e:  # a garbled event
                misses, why = misses + 1, str(e) or type(e).__name__
            time.sleep(1)
        self.failed = why

    def _read_stream(self, api: Api) -> bool:
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
            except CliError as e:
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

    def __init__(self, api: Api, job_id: str) -> None:
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


def start_seq(api: Api, job_id: str) -> int:
    """The job's newest metric seq: the stream starts there, so joining a long job does not replay it
    (the losses so far come from the job's `latest_metrics`)."""
    page = api.call(
        "GET", f"/fine_tuning/jobs/{job_id}/metrics/series", params={"names": TRAIN_LOSS, "max_points": 10}
    )
    return int(page["last_seq"])


def watch(api: Api, job_id: str) -> int:
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


def _follow(api: Api, job: dict[str, Any], display: Display) -> dict[str, Any]:
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
        except CliError as e:
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


def cmd_jobs_watch(args: argparse.Namespace, api: Api) -> int:
    return watch(api, args.job_id)


# --- jobs download ------------------------------------------------------------------------------------


def find_checkpoint(api: Api, job_id: str, checkpoint_id: str | None) -> dict[str, Any]:
    """The named checkpoint, or else the job's model: the checkpoint select_checkpoint chose (the job's
    `selected_step`), or, when it chose none, the newest model checkpoint (the final one once the job
    succeeded), the same checkpoint that chat and jobs starting from the model use."""
    path = f"/fine_tuning/jobs/{job_id}/checkpoints"
    if checkpoint_id is not None:
        found = next((c for c in _all_checkpoints(api, path, {}) if c["id"] == checkpoint_id), None)
        if found is None:
            raise CliError(f"{job_id} has no checkpoint {checkpoint_id}")
        return found
    selected = api.call("GET", f"/fine_tuning/jobs/{job_id}").get("selected_step")
    if selected is None:
        page = api.call("GET", path, params={"kind": "model", "limit": 1})
        if not page["data"]:
            raise CliError(f"{job_id} has no model checkpoint yet")
        return dict(page["data"][0])
    chosen = next(
        (c for c in _all_checkpoints(api, path, {"kind": "model"}) if c["step_number"] == selected), None
    )
    if chosen is None:  # never another one instead: that would be a model the selection rejected
        raise CliError(f"{job_id}'s model is its checkpoint at step {selected}, which is no longer listed")
    return chosen


def _all_checkpoints(api: Api, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every checkpoint of the list at `path`, newest first, a page at a time."""
    params = {**params, "limit": 100}
    while True:
        page = api.call("GET", path, params=params)
        yield from (dict(c) for c in page["data"])
        if not page["has_more"]:
            return
        params["after"] = page["data"][-1]["id"]


class ChunkReader(io.RawIOBase):
    """A file-like view of an iterator of bytes: tarfile unpacks the response as it arrives, so a
    checkpoint of any size needs neither a temporary tar nor the memory to hold it."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks, self.buffer = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self.buffer:
            self.buffer = next(self.chunks, b"")
            if not self.buffer:
                return 0
        n = min(len(b), len(self.buffer))
        b[:n] = self.buffer[:n]
        self.buffer = self.buffer[n:]
        return n


def unpack_tar(chunks: Iterator[bytes], into: Path) -> int:
    """Unpack a checkpoint tar into `into`, without its top folder (`<job>-step-N/`); files written.
    tarfile's "data" filter refuses absolute paths, `..`, links out and device files."""
    count = 0
    with tarfile.open(fileobj=io.BufferedReader(ChunkReader(chunks)), mode="r|") as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts[1:]
            if not parts:
                continue  # the top folder itself
            member.name = "/".join(parts)
            tar.extract(member, into, filter="data")
            count += member.isfile()
    return count


def check_destination(dest: Path, force: bool) -> None:
    if dest.exists() and not dest.is_dir():
        raise CliError(f"{dest} exists and is not a folder")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise CliError(f"{dest} is not empty; pass --force to overwrite the files in it")


def move_into(staging: Path, dest: Path) -> None:
    """Move the unpacked files into place, replacing same-named ones (--force); others are left alone."""
    for entry in staging.iterdir():
        target = dest / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        entry.replace(target)


def cmd_jobs_download(args: argparse.Namespace, api: Api) -> int:
    job_id = args.job_id
    ckpt = find_checkpoint(api, job_id, args.checkpoint)
    kind = "" if ckpt["kind"] == "model" else "-" + ckpt["kind"].replace("_", "-")
    dest = Path(args.output or f"{job_id}-step-{ckpt['step_number']}{kind}")
    check_destination(dest, args.force)
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    # Unpacked into a folder inside dest first: an interrupted download leaves nothing half-written in
    # place, and the final moves stay on one filesystem.
    staging = Path(tempfile.mkdtemp(prefix=".juice-download-", dir=dest))
    try:
        with api.stream(f"/fine_tuning/jobs/{job_id}/checkpoints/{ckpt['id']}/content") as r:
            count = unpack_tar(r.iter_bytes(), staging)
        move_into(staging, dest)
    except tarfile.TarError as e:
        raise CliError(f"the checkpoint archive could not be unpacked: {e}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(dest.iterdir()):
            dest.rmdir()
    size = ckpt.get("size_bytes") or 0
    print(f"{ckpt['fine_tuned_model_checkpoint']} ({count} files, {size / 1e6:.1f} MB) -> {dest}")
    return 0


# --- the parsers --------------------------------------------------------------------------------------


def _connection_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--api-url", help=f"the API's /v1 URL (env JUICE_API_URL; default {DEFAULT_API_URL})")
    p.add_argument("--api-key", help="an API key (env JUICE_API_KEY; default: $JUICE_HOME/api_key)")
    return p


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`juice files ...` and `juice jobs ...` under the `juice` command's subparsers."""
    conn = [_connection_options()]

    files = sub.add_parser("files", help="upload training files (over the HTTP API)")
    fs = files.add_subparsers(dest="action", required=True)
    fu = fs.add_parser("upload", parents=conn, help="upload a JSONL file; prints its id")
    fu.add_argument("path")
    fu.add_argument("--purpose", default="fine-tune")
    fu.set_defaults(func=command(cmd_files_upload))

    jobs = sub.add_parser("jobs", help="create, follow and manage fine-tuning jobs (over the HTTP API)")
    js = jobs.add_subparsers(dest="action", required=True)
    jc = js.add_parser("create", parents=conn, help="create a job; prints its id")
    jc.add_argument("--model", required=True)
    jc.add_argument("--training-file", required=True, help="a file id, or a local path to upload")
    jc.add_argument("--validation-file", help="a file id, or a local path to upload")
    jc.add_argument("--method", default="supervised", help="supervised (sft), dpo, irft, rft, ...")
    jc.add_argument("--suffix")
    jc.add_argument("--seed", type=int)
    jc.add_argument(
        "--hp",
        nargs="+",
        action="extend",
        metavar="KEY=VALUE",
        help="a hyperparameter (JSON value, else text; dotted keys nest: lora.r=8); see GET /v1/fine_tuning/methods",
    )
    jc.add_argument("--watch", action="store_true", help="follow the job until it ends")
    jc.set_defaults(func=command(cmd_jobs_create))

    jl = js.add_parser("list", parents=conn, help="the newest jobs, as a table")
    jl.add_argument("--limit", type=int, default=20)
    jl.set_defaults(func=command(cmd_jobs_list))

    jw = js.add_parser("watch", parents=conn, help="progress, loss and events until the job ends")
    jw.add_argument("job_id")
    jw.set_defaults(func=command(cmd_jobs_watch))

    for action in ("cancel", "pause", "resume"):
        ja = js.add_parser(action, parents=conn, help=f"{action} a job; prints its new status")
        ja.add_argument("job_id")
        ja.set_defaults(func=command(cmd_jobs_action))

    jd = js.add_parser("download", parents=conn, help="download a checkpoint as a Hugging Face folder")
    jd.add_argument("job_id")
    jd.add_argument(
        "--checkpoint",
        help="a checkpoint id (default: the job's model: the checkpoint select_checkpoint chose, else the newest)",
    )
    jd.add_argument("-o", "--output", help="the folder to unpack into (default: ./<job>-step-<N>)")
    jd.add_argument("--force", action="store_true", help="overwrite files in a non-empty folder")
    jd.set_defaults(func=command(cmd_jobs_download))
