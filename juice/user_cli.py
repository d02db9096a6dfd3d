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

This module holds the commands (their options, request bodies and output); the HTTP client is
juice/client.py, the live display of `watch` juice/live.py.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from juice.client import ClientError, JuiceClient
from juice.live import console, watch

DEFAULT_API_URL = "http://127.0.0.1:8000/v1"


class CliError(Exception):
    """A failure the user gets as one line on stderr, and exit code 1, that is not the API's (a bad
    --hp, a missing key, a folder in the way): the API's own come as juice.client's ClientError."""


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


def command(fn: Callable[[argparse.Namespace, JuiceClient], int]) -> Callable[[argparse.Namespace], int]:
    """Run a command with its client, turning every CliError and ClientError into one line on stderr
    and exit 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            api = JuiceClient(
                args.api_url or os.environ.get("JUICE_API_URL") or DEFAULT_API_URL, resolve_key(args.api_key)
            )
            try:
                return fn(args, api)
            finally:
                api.close()
        except (CliError, ClientError) as e:
            print(f"juice: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130

    return run


# --- files --------------------------------------------------------------------------------------------


def cmd_files_upload(args: argparse.Namespace, api: JuiceClient) -> int:
    print(api.upload(Path(args.path), args.purpose))
    return 0


def file_id(api: JuiceClient, given: str) -> str:
    """A local path is uploaded first; anything else must be a file id."""
    path = Path(given)
    if path.is_file():
        fid = api.upload(path, "fine-tune")
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


def method_block(
    method: str, hyperparameters: dict[str, Any], grader: dict[str, Any] | None = None
) -> dict[str, Any]:
    """OpenAI's shape: `{"type": T, T: {"hyperparameters": {...}, "grader": {...}}}`; no block when
    nothing is set."""
    block: dict[str, Any] = {"type": method}
    inner: dict[str, Any] = {"hyperparameters": hyperparameters} if hyperparameters else {}
    if grader is not None:
        inner["grader"] = grader
    if inner:
        block[method] = inner
    return block


def job_body(
    model: str,
    training_file: str,
    method: str,
    hyperparameters: dict[str, Any],
    grader: dict[str, Any] | None = None,
    **optional: Any,
) -> dict[str, Any]:
    """POST /v1/fine_tuning/jobs's body; `optional` fields (validation_file, suffix, seed) left out when None."""
    body = {
        "model": model,
        "training_file": training_file,
        "method": method_block(method, hyperparameters, grader),
    }
    return body | {k: v for k, v in optional.items() if v is not None}


def read_grader(value: str | None) -> dict[str, Any] | None:
    """--grader: a JSON file's path, or the JSON itself (OpenAI's grader shapes; the API checks them)."""
    if value is None:
        return None
    path = Path(value)
    text = path.read_text() if not value.lstrip().startswith("{") and path.is_file() else value
    try:
        grader = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"--grader: neither a JSON file nor JSON ({exc})") from None
    if not isinstance(grader, dict):
        raise CliError("--grader: expected a JSON object (a grader)")
    return grader


def cmd_jobs_create(args: argparse.Namespace, api: JuiceClient) -> int:
    hyperparameters = parse_hyperparameters(args.hp or [])  # a typo fails before anything is uploaded
    grader = read_grader(args.grader)
    training = file_id(api, args.training_file)
    validation = file_id(api, args.validation_file) if args.validation_file else None
    body = job_body(
        args.model,
        training,
        args.method,
        hyperparameters,
        grader,
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


# --- jobs list, cancel, pause, resume, watch ---------------------------------------------------------


def _when(unix: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(unix)) if unix else ""


def cmd_jobs_list(args: argparse.Namespace, api: JuiceClient) -> int:
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


def cmd_jobs_action(args: argparse.Namespace, api: JuiceClient) -> int:
    job = api.call("POST", f"/fine_tuning/jobs/{args.job_id}/{args.action}")
    print(f"{job['id']}: {job['status']}{ACTION_NOTES.get((args.action, job['status']), '')}")
    return 0


def cmd_jobs_watch(args: argparse.Namespace, api: JuiceClient) -> int:
    return watch(api, args.job_id)


# --- jobs download ------------------------------------------------------------------------------------


def find_checkpoint(api: JuiceClient, job_id: str, checkpoint_id: str | None) -> dict[str, Any]:
    """The named checkpoint, or else the job's model: the checkpoint select_checkpoint chose (the job's
    `selected_step`), or, when it chose none, the newest model checkpoint (the final one once the job
    succeeded), the same checkpoint that chat and jobs starting from the model use."""
    path = f"/fine_tuning/jobs/{job_id}/checkpoints"
    if checkpoint_id is not None:
        found = next((c for c in api.list_all(path) if c["id"] == checkpoint_id), None)
        if found is None:
            raise CliError(f"{job_id} has no checkpoint {checkpoint_id}")
        return found
    selected = api.call("GET", f"/fine_tuning/jobs/{job_id}").get("selected_step")
    if selected is None:
        page = api.call("GET", path, params={"kind": "model", "limit": 1})
        if not page["data"]:
            raise CliError(f"{job_id} has no model checkpoint yet")
        return dict(page["data"][0])
    chosen = next((c for c in api.list_all(path, {"kind": "model"}) if c["step_number"] == selected), None)
    if chosen is None:  # never another one instead: that would be a model the selection rejected
        raise CliError(f"{job_id}'s model is its checkpoint at step {selected}, which is no longer listed")
    return chosen


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


def cmd_jobs_download(args: argparse.Namespace, api: JuiceClient) -> int:
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
    jc.add_argument(
        "--method", default="supervised", help="supervised (sft), dpo, irft, rft, iql, reinforcement"
    )
    jc.add_argument(
        "--grader",
        help="a grader (OpenAI's JSON, or a file holding it): reinforcement's reward, or graded evaluation",
    )
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
