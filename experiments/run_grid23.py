"""Run issue 23's grid through Juice's public API: reward learning from a plateaued SFT model, against
the same number of extra SFT steps.

    .venv/bin/python experiments/run_grid23.py --tasks arith --priority 1          # every planned seed
    .venv/bin/python experiments/run_grid23.py --cells arith:sft_plateau,sft_more,spin_anchor --seeds 0 1
    .venv/bin/python experiments/run_grid23.py --smoke --results /tmp/smoke23        # the tiny model, minutes
    bash experiments/grid_queue23.sh                                                  # the whole queue

The cells and every number they run with are declared in cells23.py; the data in tasks.py (issue
23's sizes: a dev split of 40 prompts that is every job's `validation_file`, 200 held-out arithmetic
prompts, 80 chat ones). Per (task, cell, seed) it submits one job over HTTP, waits, and writes
``<results>/<task>/<cell>-seed<k>.json``: the job, every metric series, events, checkpoints, which
checkpoint is the job's fine-tuned model (``selection``), the lowest-dev-loss step of its own eval
series (``dev_best``), wall time, peak memory, and for a second stage the SFT plateau job it started
from (``stage``). Then it downloads the job's fine-tuned model (the selected checkpoint, not merely
the newest) and judges it on the held-out prompts (evaluate.py) into ``<cell>-seed<k>.eval.json``.
Once per task it writes ``base.eval.json`` (the base model) and ``reference.eval.json`` (the human
reference answers, judged as if generated: the judge's ceiling on chat).

A second stage (``model: "ft:..."``) starts from the same seed's sft_plateau job: the recorded cell's
job when this server still holds it; otherwise (a fresh JUICE_HOME) the same request is submitted
again and the result says so (``stage.resubmitted``). A missing sft_plateau cell is run first.

Resumable as issue 9's harness: a cell whose JSON exists is skipped, a job of it still on the server
is found by its metadata and awaited, a failed job's JSON is written (delete it to run the cell again),
and a missing eval file is filled in. ``--snapshot`` runs `juice up` from a copy of Juice's packages
made once per --home (``--resnapshot`` replaces it), so edits to the work tree during a queue of many
calls reach none of them; each result records that copy's commit and diff hash.

Disk: Juice stores every checkpoint as the merged model in the base model's dtype (~600 MB for
SmolLM2-135M in float32; RFT's ~1.1 GB with its reward model), sft_plateau saves one at every dev
improvement, and the API offers no way to delete one (DELETE /v1/models keeps the job's checkpoints).
The whole grid would hold ~190 GB. With ``--prune-checkpoints`` (the queue's setting; only when this
harness started `juice up` itself) the harness deletes, in its own JUICE_HOME's artifact store, the
checkpoint folders it has judged and no later job starts from: every checkpoint of a second stage once
its eval file is written, and every checkpoint of an sft_plateau job but the selected one (the
second stages' `model: "ft:..."`). Nothing a result records is lost; the eval file lists the steps.

Issue 9's results (experiments/results/) are the from-base reference and are never written here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import evaluate  # noqa: E402  # the sibling modules, importable however the script is started
from cells23 import (  # noqa: E402
    CELLS,
    EXPERIMENT,
    PLANNED_SEEDS,
    PLATEAU,
    TASKS,
    cells_for,
    config_hash,
    expected_steps,
    grid_config,
    method_body,
)
from run_grid import (  # noqa: E402  # issue 9's plumbing: `juice up`, the HTTP client, memory
    TERMINAL,
    Api,
    ApiError,
    JuiceUp,
    PeakMemory,
    _diff,
    log,
    snapshot_source,
    source_record,
    write_json,
)
from tasks import TaskData, make_task, sizes23  # noqa: E402

ISSUE9_RESULTS = HERE / "results"
# How long a job may wait in the queue of a grid that runs one job at a time (Grid23.wait)
QUEUED_LIMIT_S = {"smoke": 120, "full": 1800}


class WorkerStalled(RuntimeError):
    """No worker took the grid's job (Grid23.wait)."""


HARNESS_FILES = ("run_grid23.py", "cells23.py", "evaluate.py", "tasks.py", "run_grid.py")


def prune_checkpoints(home: Path, job_id: str, steps: list[int]) -> list[int]:
    """Delete these checkpoint folders of a job from the local artifact store of the `juice up` this
    harness started (module docstring: Juice has no API for it). Only folders laid out as expected
    (``artifacts/jobs/<job>/checkpoints/step_NNNNNNNN`` with a manifest) are removed; returns their steps."""
    root = home / "artifacts" / "jobs" / job_id / "checkpoints"
    removed = []
    for step in sorted(set(steps)):
        folder = root / f"step_{step:08d}"
        if (folder / "manifest.json").is_file():
            shutil.rmtree(folder)
            removed.append(step)
    return removed


def harness_record() -> dict[str, Any]:
    """Which harness judged the results (it runs from the work tree, not the snapshot)."""
    digest = hashlib.sha256()
    for name in HARNESS_FILES:
        digest.update((HERE / name).read_bytes())
    return {"files": list(HARNESS_FILES), "sha256": digest.hexdigest()[:16]}


def frozen_source(home: Path, fresh: bool) -> tuple[Path, dict[str, Any]]:
    """The snapshot of Juice's packages this home's `juice up` runs from: made once, reused by every
    later call with the same home (so a queue of calls runs on one source), replaced when `fresh`."""
    dest = home / "src"
    if fresh or not (dest / "SOURCE.json").is_file():
        snapshot_source(dest)
        log(f"snapshot of Juice's packages made in {dest}")
    else:
        log(f"reusing the snapshot in {dest} (--resnapshot replaces it)")
    return dest, json.loads((dest / "SOURCE.json").read_text())


def argmin_step(series: dict[str, Any] | None) -> tuple[int, float] | None:
    """(step, value) of a series' lowest value, the earliest on ties; None for an empty series."""
    if not series or not series.get("step"):
        return None
    pairs = list(zip(series["step"], series["value"], strict=True))
    best = min(range(len(pairs)), key=lambda i: (pairs[i][1], pairs[i][0]))
    return int(pairs[best][0]), float(pairs[best][1])


def value_at(series: dict[str, Any] | None, step: int) -> float | None:
    if not series:
        return None
    for s, v in zip(series.get("step", []), series.get("value", []), strict=True):
        if s == step:
            return float(v)
    return None


def dev_best(series: dict[str, Any] | None, stage: dict[str, Any] | None) -> dict[str, Any]:
    """The step of a job's lowest dev loss (what select_checkpoint best_eval_loss would hand back),
    step 0 included: a second stage's step 0 is its SFT plateau model, whose dev loss the stage
    records when the job's own series does not start with it."""
    steps = list(series["step"]) if series else []
    values = list(series["value"]) if series else []
    if stage is not None and stage.get("eval_loss") is not None and 0 not in steps:
        steps, values = [0, *steps], [stage["eval_loss"], *values]
    best = argmin_step({"step": steps, "value": values})
    return {"step": best[0], "eval_loss": best[1]} if best else {"step": None, "eval_loss": None}


def selection(
    job: dict[str, Any], series: dict[str, Any], checkpoints: list[dict[str, Any]]
) -> dict[str, Any]:
    """Which checkpoint is the job's fine-tuned model: the step the API reports (`selected_step`, set
    by select_checkpoint best_eval_loss), else the lowest eval/loss of a best_eval_loss job's series,
    else the newest model checkpoint. The harness judges exactly that checkpoint, the one a later
    `model: "ft:..."` job starts from."""
    hp = job["method"][job["method"]["type"]]["hyperparameters"]
    mode = hp.get("select_checkpoint", "last")
    models = [c for c in checkpoints if c.get("kind", "model") == "model"]
    best = argmin_step(series.get("eval/loss"))
    if job.get("selected_step") is not None:
        step, how = int(job["selected_step"]), "the job's selected_step"
    elif mode == "best_eval_loss" and best is not None:
        step, how = best[0], "the lowest eval/loss of the job's series (the job reported no selected_step)"
    elif models:
        step, how = max(c["step_number"] for c in models), "the newest model checkpoint"
    else:
        return {"select_checkpoint": mode, "selected_step": None, "checkpoint_id": None, "how": "none"}
    ckpt = next((c for c in models if c["step_number"] == step), None)
    return {
        "select_checkpoint": mode,
        "selected_step": step,
        "checkpoint_id": ckpt["id"] if ckpt else None,
        "how": how,
        "eval_loss": value_at(series.get("eval/loss"), step),
        "eval_logp_gap": value_at(series.get("eval/logp_gap"), step),
        # the selection rule and the series agree (a check of the trainer's choice)
        "agrees_with_series": None if mode != "best_eval_loss" or best is None else best[0] == step,
    }


class Grid23:
    def __init__(
        self,
        args: argparse.Namespace,
        api: Api,
        base_model_dir: Path,
        juice: JuiceUp | None,
        source: dict[str, Any],
    ) -> None:
        self.args, self.api, self.base_model_dir, self.juice = args, api, base_model_dir, juice
        self.cfg = grid_config(args.smoke)
        self.results: Path = args.results
        self.data_dir = Path(tempfile.mkdtemp(prefix="juice-grid23-data-"))
        self.files: dict[str, dict[str, str]] = {}
        self.source = source
        self.harness = harness_record()
        self._judge: evaluate.Model | None = None
        self._data: dict[str, TaskData] = {}

    # -- data -------------------------------------------------------------------------------------
    def task_data(self, task: str) -> TaskData:
        if task not in self._data:
            self._data[task] = make_task(task, sizes23(task, self.args.smoke))
        return self._data[task]

    def task_files(self, task: str) -> dict[str, str]:
        if task not in self.files:
            paths = self.task_data(task).write(self.data_dir / task)
            self.files[task] = {name: self.api.upload(paths[name]) for name in ("train", "train_pref", "dev")}
            info = {**self.task_data(task).info, "longest_tokens": self.longest(task)}
            info["max_seq_len"] = self.cfg["common"]["max_seq_len"]
            write_json(self.results / task / "data_info.json", info)
            if info["longest_tokens"] > info["max_seq_len"] and not self.args.smoke:
                # a cut example breaks the equal budget (SFT drops rows left without a trained token)
                raise SystemExit(f"{task}: an example of {info['longest_tokens']} tokens > max_seq_len")
        return self.files[task]

    def longest(self, task: str) -> int:
        """Tokens of the longest training example or pair (base tokenizer, chat template)."""
        model, data = self.judge(), self.task_data(task)
        rows = [(r["messages"][:-1], r["messages"][-1]["content"]) for r in data.train]
        for row in [*data.dev, *data.train_pref, *data.validation]:
            ctx = row["input"]["messages"]
            rows += [
                (ctx, row["preferred_output"][-1]["content"]),
                (ctx, row["non_preferred_output"][-1]["content"]),
            ]
        return max(sum(map(len, model.response_ids(c, r))) for c, r in rows)

    # -- jobs -------------------------------------------------------------------------------------
    def body(
        self, task: str, cell: str, seed: int, files: dict[str, str], stage: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        m = method_body(cell, task, self.cfg)
        metadata = {
            "experiment": EXPERIMENT,
            "task": task,
            "method": cell,
            "seed": str(seed),
            "config": config_hash(m),
        }
        if stage is not None:  # a resubmitted plateau job is another start: another job
            metadata["start_job"] = stage["id"]
        return {
            "model": stage["fine_tuned_model"] if stage else self.cfg["model"],
            "training_file": files["train_pref" if m["type"] == "dpo" else "train"],
            "validation_file": files["dev"],
            "seed": seed,
            "suffix": f"{task}-{cell}-s{seed}".replace("_", "-"),
            "method": m,
            "metadata": metadata,
        }

    def find_job(self, meta: dict[str, str]) -> dict[str, Any] | None:
        """A job of this cell already on the server (a resumed grid), unless it failed or was cancelled."""
        for job in self.api.jobs():
            if job.get("metadata") == meta and job["status"] not in ("failed", "cancelled"):
                return job
        return None

    def wait(self, job: dict[str, Any]) -> dict[str, Any]:
        """Poll the job until it ends. The grid runs one job at a time, so a job still queued after
        QUEUED_LIMIT_S means no worker is taking jobs (one whose broker connection died leaves `juice
        up` running): the job is cancelled (a later attempt submits the cell afresh) and the call fails,
        rather than waiting for ever."""
        poll = 0.3 if self.args.smoke else 5.0
        limit = QUEUED_LIMIT_S["smoke" if self.args.smoke else "full"]
        last_report, status = 0.0, job["status"]
        queued_since = time.monotonic()
        while job["status"] not in TERMINAL:
            time.sleep(poll)
            job = self.api.job(job["id"])
            now = time.monotonic()
            if job["status"] != "queued":
                queued_since = now
            elif now - queued_since > limit:
                try:
                    self.api.cancel(job["id"])
                except ApiError as exc:
                    log(f"  {job['id']}: cancelling the stalled job failed: {exc}")
                raise WorkerStalled(
                    f"{job['id']} stayed queued for {limit} s: no worker takes jobs (see the home's up.log); "
                    "it was cancelled, and a rerun submits the cell again"
                )
            if job["status"] != status or now - last_report > 300:
                progress = job.get("progress") or {}
                log(
                    f"  {job['id']} {job['status']} step {progress.get('step')}/{progress.get('total_steps')}"
                )
                status, last_report = job["status"], now
        return job

    def submit(self, body: dict[str, Any], what: str) -> dict[str, Any] | None:
        """The cell's job: found on the server (resumed) or created. None when the API refuses it (a
        cell the trainer does not support yet); the smoke run stops there instead."""
        job = self.find_job(body["metadata"])
        if job is not None:
            log(f"{what}: awaiting {job['id']} (submitted earlier)")
            return job
        try:
            job = self.api.create_job(body)
        except ApiError as exc:
            if exc.status in (400, 422) and not self.args.smoke:
                log(f"{what}: the API refused the job, skipped: {exc}")
                return None
            raise
        log(f"{what}: submitted {job['id']}")
        return job

    def run_cell(self, task: str, cell: str, seed: int) -> None:
        out = self.results / task / f"{cell}-seed{seed}.json"
        what = f"{task}/{cell}/seed{seed}"
        if out.exists():
            log(f"{what}: result exists, skipped")
            return
        files = self.task_files(task)
        stage = None
        if CELLS[cell].from_sft:
            stage = self.plateau_stage(task, seed, files)
            if stage is None:
                log(f"{what}: skipped, no succeeded {PLATEAU} job of seed {seed} to start from")
                return
        body = self.body(task, cell, seed, files, stage)
        sampler = PeakMemory(self.juice.proc.pid) if self.juice and self.juice.proc else None
        if sampler:
            sampler.start()
        t0 = time.time()
        job = self.submit(body, what)
        if job is None:
            if sampler:
                sampler.stop()
            return
        job = self.wait(job)
        wall_harness = time.time() - t0
        memory = (
            sampler.stop() if sampler else {"peak_rss_bytes": None, "source": "not measured (external API)"}
        )
        metrics = self.api.series(job["id"])
        checkpoints = self.api.checkpoints(job["id"])
        series = metrics["series"]
        steps = (job.get("progress") or {}).get("total_steps")
        result = {
            "experiment": EXPERIMENT,
            "task": task,
            "method": cell,
            "seed": seed,
            "config": {**self.cfg, "request": {k: v for k, v in body.items() if not k.endswith("_file")}},
            "source": self.source,
            "harness": self.harness,
            "job": job,
            "metrics": metrics,
            "events": self.api.events(job["id"]),
            "checkpoints": checkpoints,
            "selection": selection(job, series, checkpoints),
            "dev_best": dev_best(series.get("eval/loss"), stage),
            "budget": {"expected_steps": expected_steps(cell, self.cfg), "total_steps": steps},
            "wall_time_s": _diff(job.get("finished_at"), job.get("created_at")),
            "train_time_s": _diff(job.get("finished_at"), job.get("started_at")),
            "harness_wall_time_s": round(wall_harness, 2),
            "peak_memory": {**memory, "recorded_by_job": False},
        }
        if stage is not None:
            result["stage"] = stage
        if job["status"] == "succeeded" and steps != result["budget"]["expected_steps"]:
            log(
                f"{what}: WARNING {steps} optimiser steps, the budget is {result['budget']['expected_steps']}"
            )
        write_json(out, result)
        log(f"{what}: {job['status']} in {result['wall_time_s']} s -> {out}")

    def plateau_stage(self, task: str, seed: int, files: dict[str, str]) -> dict[str, Any] | None:
        """The SFT plateau job a second stage starts from, with the dev point it hands over: the
        recorded sft_plateau cell's job (run first if the cell is missing); if this server no longer
        holds it (a fresh JUICE_HOME), the same request (same seed) submitted again."""
        path = self.results / task / f"{PLATEAU}-seed{seed}.json"
        if not path.exists():
            self.run_cell(task, PLATEAU, seed)
            self.eval_cell(task, PLATEAU, seed)
        if not path.exists():
            return None
        cell = json.loads(path.read_text())
        if cell["job"]["status"] != "succeeded":
            return None
        try:
            job, resubmitted = self.api.job(cell["job"]["id"]), False
        except ApiError as exc:
            if exc.status != 404:
                raise
            log(
                f"{task}/{PLATEAU}/seed{seed}: job {cell['job']['id']} is not on this server, resubmitting it"
            )
            job = self.submit(self.body(task, PLATEAU, seed, files), f"{task}/{PLATEAU}/seed{seed} (stage)")
            if job is None:
                return None
            job, resubmitted = self.wait(job), True
        if job["status"] != "succeeded" or not job.get("fine_tuned_model"):
            log(f"{task}/{PLATEAU}/seed{seed}: the stage job {job['id']} ended {job['status']}")
            return None
        series = self.api.series(job["id"])["series"] if resubmitted else cell["metrics"]["series"]
        chosen = selection(
            job, series, self.api.checkpoints(job["id"]) if resubmitted else cell["checkpoints"]
        )
        return {
            "cell": PLATEAU,
            "id": job["id"],
            "recorded_id": cell["job"]["id"],
            "resubmitted": resubmitted,
            "fine_tuned_model": job["fine_tuned_model"],
            "selected_step": chosen["selected_step"],
            # the second stage's step 0: where its dev curves start
            "eval_loss": chosen["eval_loss"],
            "eval_logp_gap": chosen["eval_logp_gap"],
        }

    # -- evaluation -------------------------------------------------------------------------------
    def judge(self) -> evaluate.Model:
        if self._judge is None:
            self._judge = evaluate.Model(self.base_model_dir)
        return self._judge

    def summarise(self, task: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """The task's scores of per-prompt rows (a model's, or the references')."""
        n = len(rows)
        if task == "chat":
            return {
                "judge": "relevance: log p_base(r|own context) - mean log p_base(r|4 other held-out contexts); "
                "per token: divided by the reply's scored tokens",
                "mean_relevance_per_token": sum(r["relevance_per_token"] for r in rows) / n,
                "mean_relevance": sum(r["relevance"] for r in rows) / n,
                "mean_reply_tokens": sum(r["reply_tokens"] for r in rows) / n,
                "copy_rate": sum(r["copies_context"] for r in rows) / n,
                "empty_rate": sum(r["empty"] for r in rows) / n,
                "n_prompts": n,
            }
        accuracy = sum(r["correct"] for r in rows) / n
        return {
            "accuracy": accuracy,
            "accuracy_se": evaluate.binomial_se(accuracy, n),  # over prompts, within this one model
            "accuracy_lenient": sum(r["correct_lenient"] for r in rows) / n,
            "n_prompts": n,
        }

    def evaluate_model(self, task: str, model: evaluate.Model) -> dict[str, Any]:
        data = self.task_data(task)
        max_new = self.cfg["eval_max_new_tokens"][task]
        t0 = time.time()
        out: dict[str, Any] = {
            "harness_heldout": evaluate.logp_gap(model, data.validation),  # the held-out pairs
            "harness_dev": evaluate.logp_gap(model, data.dev),  # the job's own eval/loss, recomputed
        }
        if task == "chat":
            rows = evaluate.eval_chat(model, self.judge(), data.heldout, max_new)
        else:
            rows = evaluate.eval_arith(model, data.heldout, max_new)
        out.update(self.summarise(task, rows))
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

    def reference_eval(self, task: str) -> None:
        """The human reference answers judged as if a model had generated them: beside the base
        model's score it shows what a perfect imitator of the demonstrations would get."""
        path = self.results / task / "reference.eval.json"
        if path.exists():
            return
        base = self.base_eval(task)
        heldout = self.task_data(task).heldout
        answers = [h["reference"] for h in heldout]
        if task == "chat":
            rows = evaluate.chat_rows(self.judge(), heldout, answers)
        else:
            rows = evaluate.eval_arith_answers(heldout, answers)
        result = {"task": task, "model": "human reference answers", **self.summarise(task, rows)}
        result["win_rate_vs_base"] = evaluate.win_rate(
            rows, base["per_prompt"], evaluate.win_key(task, per_token=True)
        )
        result["per_prompt"] = rows
        write_json(path, result)

    def eval_cell(self, task: str, cell: str, seed: int) -> None:
        res_path = self.results / task / f"{cell}-seed{seed}.json"
        path = self.results / task / f"{cell}-seed{seed}.eval.json"
        what = f"{task}/{cell}/seed{seed}"
        if path.exists() or not res_path.exists():
            return
        result = json.loads(res_path.read_text())
        if result["job"]["status"] != "succeeded":
            return
        base = self.base_eval(task)
        chosen = result["selection"]
        if chosen["checkpoint_id"] is None:
            log(f"{what}: no checkpoint of the fine-tuned model (step {chosen['selected_step']}) to evaluate")
            return
        tmp = Path(tempfile.mkdtemp(prefix="juice-grid23-ckpt-"))
        try:
            folder = self.api.download(result["job"]["id"], chosen["checkpoint_id"], tmp)
            evaluation = self.evaluate_model(task, evaluate.Model(folder))
        except ApiError as exc:
            log(f"{what}: checkpoint download failed, eval skipped: {exc}")
            return
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        evaluation["win_rate_vs_base"] = evaluate.win_rate(
            evaluation["per_prompt"], base["per_prompt"], evaluate.win_key(task, per_token=True)
        )
        evaluation.update(
            task=task,
            method=cell,
            seed=seed,
            job_id=result["job"]["id"],
            checkpoint=chosen["checkpoint_id"],
            step=chosen["selected_step"],
            selected_by=chosen["how"],
        )
        # the second stages start from sft_plateau's selected checkpoint: it is the one kept
        keep = {chosen["selected_step"]} if cell == PLATEAU else set()
        doomed = sorted({c["step_number"] for c in result["checkpoints"]} - keep)
        if self.args.prune_checkpoints:
            evaluation["pruned_checkpoint_steps"] = doomed
        write_json(path, evaluation)
        if self.args.prune_checkpoints and self.juice is not None:
            removed = prune_checkpoints(self.juice.home, result["job"]["id"], doomed)
            log(f"{what}: pruned the checkpoints of steps {removed} from {self.juice.home}")
        score = evaluation.get("accuracy", evaluation.get("mean_relevance_per_token"))
        log(f"{what}: eval {score:.3f}, win rate vs base {evaluation['win_rate_vs_base']:.3f}")

    # -- the plan ---------------------------------------------------------------------------------
    def seeds(self, task: str) -> list[int]:
        return list(self.args.seeds) if self.args.seeds is not None else list(range(PLANNED_SEEDS[task]))

    def plan(self) -> list[tuple[str, list[str]]]:
        """(task, cells) in run order: --cells if given, else each task's cells of --priority."""
        if not self.args.cells:
            return [(task, cells_for(task, set(self.args.priority))) for task in self.args.tasks]
        plan: dict[str, list[str]] = {}
        for spec in self.args.cells:
            task, _, names = spec.partition(":")
            cells = names.split(",")
            if task not in TASKS or not names or any(c not in cells_for(task) for c in cells):
                raise SystemExit(
                    f"--cells {spec!r}: expected TASK:CELL[,CELL...] with a task of {TASKS} and its cells "
                    f"(cells23.py: {', '.join(cells_for(task)) if task in TASKS else '-'})"
                )
            plan.setdefault(task, []).extend(cells)
        return list(plan.items())

    def run(self) -> None:
        # cell by cell, every seed of a cell before the next cell: a queue cut short leaves whole cells
        for task, cells in self.plan():
            for cell in cells:
                for seed in self.seeds(task):
                    self.run_cell(task, cell, seed)
                    self.eval_cell(task, cell, seed)
            if any((self.results / task).glob("*-seed*.json")):
                self.base_eval(task)
                self.reference_eval(task)
        shutil.rmtree(self.data_dir, ignore_errors=True)


def check_results_folder(results: Path) -> None:
    """Issue 23's results never mix with issue 9's (their cells' names and data differ)."""
    if results.resolve() == ISSUE9_RESULTS.resolve():
        raise SystemExit(
            f"{results} holds issue 9's results; write issue 23's elsewhere (default results23/)"
        )
    marker = results / "EXPERIMENT"
    if marker.exists() and marker.read_text().strip() != EXPERIMENT:
        raise SystemExit(f"{results} holds results of {marker.read_text().strip()!r}, not {EXPERIMENT!r}")
    results.mkdir(parents=True, exist_ok=True)
    marker.write_text(EXPERIMENT + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--api-url", help="a running Juice's API, e.g. http://127.0.0.1:8000/v1 (else: juice up)")
    p.add_argument("--api-key", default=os.environ.get("JUICE_API_KEY"))
    p.add_argument("--base-model-dir", type=Path, help="the base model folder, for the harness's evaluation")
    p.add_argument(
        "--home", type=Path, help="JUICE_HOME of the `juice up` this starts (default: a temp folder)"
    )
    p.add_argument(
        "--snapshot",
        action="store_true",
        help="run `juice up` from HOME/src, a copy of Juice's packages made once",
    )
    p.add_argument(
        "--resnapshot", action="store_true", help="with --snapshot: replace HOME/src with a new copy"
    )
    p.add_argument(
        "--prune-checkpoints",
        action="store_true",
        help="delete judged checkpoints no later job starts from (module docstring; not with --api-url)",
    )
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument(
        "--priority",
        nargs="+",
        type=int,
        default=[1, 2, 3],
        help="the cells of these priorities (cells23.py)",
    )
    p.add_argument(
        "--cells",
        nargs="+",
        metavar="TASK:CELLS",
        help="instead of --tasks/--priority, e.g. arith:sft_plateau,sft_more",
    )
    p.add_argument(
        "--seeds", nargs="+", type=int, help="default: each task's planned seeds (5 arith, 3 chat)"
    )
    p.add_argument("--results", type=Path, default=HERE / "results23")
    p.add_argument(
        "--smoke", action="store_true", help="the tiny test model and tiny data; refusals are errors"
    )
    p.add_argument(
        "--threads", type=int, default=0, help="torch threads of the harness's evaluation (0: torch's)"
    )
    return p.parse_args(argv)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # so `finally` stops the `juice up` this started


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    check_results_folder(args.results)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    juice: JuiceUp | None = None
    temp_home: Path | None = None
    try:
        if args.api_url:
            if not args.api_key or not args.base_model_dir:
                raise SystemExit("--api-url needs --api-key (or JUICE_API_KEY) and --base-model-dir")
            if args.prune_checkpoints:
                raise SystemExit("--prune-checkpoints deletes files of a `juice up` this harness started")
            api, base_dir, source = Api(args.api_url, args.api_key), args.base_model_dir, source_record()
            source["note"] = "an external Juice: the commit is this work tree's, not necessarily the server's"
        else:
            home = args.home or Path(tempfile.mkdtemp(prefix="juice-grid23-home-"))
            temp_home = None if args.home else home
            home.mkdir(parents=True, exist_ok=True)
            (home / "grid.pid").write_text(f"{os.getpid()}\n")  # `kill $(cat HOME/grid.pid)` stops it cleanly
            if args.snapshot:
                src, source = frozen_source(home, args.resnapshot)
            else:
                src, source = REPO, source_record()
            juice = JuiceUp(home.resolve(), smoke=args.smoke, source=src)
            base_dir = args.base_model_dir or juice.prepare_model()
            key = juice.start()
            log(f"juice up at {juice.url} (JUICE_HOME={home}, source {src}, commit {source['commit'][:12]})")
            api = Api(juice.url, key)
        Grid23(args, api, base_dir, juice, source).run()
    finally:
        if juice is not None:
            juice.stop()
            log("juice up stopped")
        if temp_home is not None:
            shutil.rmtree(temp_home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
