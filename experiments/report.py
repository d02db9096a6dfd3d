"""Issue 9's figures and tables, from the raw per-job JSON of run_grid.py.

    .venv/bin/python experiments/report23.py                    # docs/results.md, this grid as a section
    .venv/bin/python experiments/report.py --results DIR --figures DIR --doc FILE   # issue 9's page alone

docs/results.md is issue 23's page now, with issue 9's as its labelled earlier section: report23.py
writes it and renders that section with this module (``render``, one heading level down); --doc is
required here, so no call of this script can overwrite issue 23's page with issue 9's.

Figures (PNG, matplotlib with the Agg backend: no display needed):

- ``logp_gap.png``: (a) held-out ``eval/logp_gap`` (mean log pi(chosen) - log pi(rejected)) against the
  optimiser step, one panel per task, one line per method: the mean over seeds, the band the range
  (min to max) over seeds; step 0 is the base model (the harness's own score, same definition).
- ``win_rate.png``: (b) win rate against the base model on the held-out prompts (exact correctness on
  the arithmetic tasks, the chat judge of evaluate.py on chat; a tie counts 1/2): mean over seeds with
  a 95% Student-t interval over seeds.
- ``cost.png``: (c) wall time (the job's created -> finished stamps) and peak resident memory of the
  job's worker process (sampled by the harness; Juice records none) per method and task, mean ± std.

The doc's Discussion section (between the two marker comments) is kept as it is when the doc is
regenerated, so the text the lead writes survives a rerun.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
METHOD_ORDER = [
    "sft",
    "spin",
    "irft",
    "rft",
    "rft_t3",
    "dpo",
    "sft_full",
    "spin_full",
    "irft_full",
    "sft_2x",
    "spin_after_sft",
    "irft_after_sft",
    "rft_after_sft",
    "spin_after_sft_low_lr",
    "irft_after_sft_low_lr",
]
LABELS = {
    "sft": "SFT",
    "spin": "SPIN (IRFT T=1)",
    "irft": "IRFT (T=3)",
    "rft": "RFT",
    "rft_t3": "RFT (T=3)",
    "dpo": "DPO (pref. data)",
    "sft_full": "SFT, full FT",
    "spin_full": "SPIN, full FT",
    "irft_full": "IRFT (T=3), full FT",
    "sft_2x": "SFT, 42 steps",
    "spin_after_sft": "SFT → SPIN",
    "irft_after_sft": "SFT → IRFT (T=3)",
    "rft_after_sft": "SFT → RFT",
    "spin_after_sft_low_lr": "SFT → SPIN, lr 3e-5",
    "irft_after_sft_low_lr": "SFT → IRFT (T=3), lr 3e-5",
}
TASK_ORDER = ["arith", "chat", "arith_noisy"]
TASK_LABELS = {"arith": "arith (exact)", "chat": "chat (chitchat)", "arith_noisy": "arith, 30% wrong demos"}
COLORS = {
    "sft": "#1f77b4",
    "spin": "#ff7f0e",
    "irft": "#2ca02c",
    "rft": "#d62728",
    "rft_t3": "#e377c2",
    "dpo": "#9467bd",
    "sft_full": "#17becf",
    "spin_full": "#bcbd22",
    "irft_full": "#8c564b",
    "sft_2x": "#aec7e8",
    "spin_after_sft": "#ffbb78",
    "irft_after_sft": "#98df8a",
    "rft_after_sft": "#ff9896",
    "spin_after_sft_low_lr": "#c49c94",
    "irft_after_sft_low_lr": "#c5b0d5",
}
# full fine-tuning dashed; the two-stage arms and their 42-step SFT control dash-dotted
LINESTYLES = (
    dict.fromkeys(("sft_full", "spin_full", "irft_full"), "--")
    | dict.fromkeys(("sft_2x", "spin_after_sft", "irft_after_sft", "rft_after_sft"), "-.")
    | dict.fromkeys(("spin_after_sft_low_lr", "irft_after_sft_low_lr"), ":")
)
DISCUSSION_START = "<!-- discussion:start (kept by experiments/report.py) -->"
DISCUSSION_END = "<!-- discussion:end -->"
# Two-sided 95% Student-t quantiles by degrees of freedom (n - 1); beyond the table, 1.96.
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


# ---------------------------------------------------------------------------------------------------
# Loading


def load(results: Path) -> dict[str, Any]:
    """{"runs": {task: {method: [run, ...]}}, "base": {task: base eval}}; a run is the job JSON with its
    eval (or None) under "eval"."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    base: dict[str, Any] = {}
    tasks = (
        [p for p in results.iterdir() if p.is_dir() and p.name != "superseded"] if results.is_dir() else []
    )
    for task_dir in sorted(tasks):
        task = task_dir.name
        if (task_dir / "base.eval.json").exists():
            base[task] = json.loads((task_dir / "base.eval.json").read_text())
        for path in sorted(task_dir.glob("*-seed*.json")):
            if path.name.endswith(".eval.json"):
                continue
            run = json.loads(path.read_text())
            ev = path.with_name(path.name.removesuffix(".json") + ".eval.json")
            run["eval"] = json.loads(ev.read_text()) if ev.exists() else None
            runs[task][run["method"]].append(run)
    for methods in runs.values():
        for rs in methods.values():
            rs.sort(key=lambda r: r["seed"])
    return {"runs": runs, "base": base}


def tasks_of(data: dict[str, Any]) -> list[str]:
    found = set(data["runs"]) | set(data["base"])
    return [t for t in TASK_ORDER if t in found] + sorted(found - set(TASK_ORDER))


def methods_of(data: dict[str, Any], task: str) -> list[str]:
    found = set(data["runs"].get(task, {}))
    return [m for m in METHOD_ORDER if m in found] + sorted(found - set(METHOD_ORDER))


def succeeded(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if r["job"]["status"] == "succeeded"]


# ---------------------------------------------------------------------------------------------------
# Statistics


def mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return math.nan, math.nan
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else math.nan  # one seed: no spread


def ci95(xs: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): a Student-t interval over the values (seeds); the mean alone for one value."""
    m, s = mean_std(xs)
    n = len([x for x in xs if x is not None and not math.isnan(x)])
    if n < 2:
        return m, m, m
    half = T95.get(n - 1, 1.96) * s / math.sqrt(n)
    return m, m - half, m + half


def fmt(m: float, s: float | None = None, digits: int = 2) -> str:
    if m is None or math.isnan(m):
        return "–"
    return f"{m:.{digits}f}" if s is None or math.isnan(s) else f"{m:.{digits}f} ± {s:.{digits}f}"


def final_gap(run: dict[str, Any]) -> float | None:
    series = run["metrics"]["series"].get("eval/logp_gap")
    return series["value"][-1] if series and series["value"] else None


# ---------------------------------------------------------------------------------------------------
# Figures


def gap_curve(run: dict[str, Any], base: float | None) -> list[tuple[int, float]]:
    """(step, eval/logp_gap) of one job, from the base model's gap at step 0; a two-stage arm's curve
    starts where its SFT stage ended (that job's last gap, at the stage's step count)."""
    series = run["metrics"]["series"].get("eval/logp_gap")
    if not series or not series["step"]:
        return []
    stage = run.get("sft_stage")
    offset = run["config"]["budget_steps"] if stage else 0
    start = stage["final_logp_gap"] if stage else base
    points = [(offset + s, v) for s, v in zip(series["step"], series["value"], strict=True)]
    if start is None:
        return points
    return [(offset, start)] + [(s, v) for s, v in points if s != offset]


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def fig_logp_gap(data: dict[str, Any], out: Path) -> Path:
    tasks = tasks_of(data)
    # 7 in tall: the legends go below the axes, where arith's 16 curves would cover its plot
    fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(5.2 * max(len(tasks), 1), 7.0), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        base = data["base"].get(task, {}).get("harness_logp", {}).get("logp_gap")
        for method in methods_of(data, task):
            curves = [gap_curve(r, base) for r in succeeded(data["runs"][task][method])]
            curves = [c for c in curves if c]
            if not curves:
                continue
            by_step: dict[int, list[float]] = defaultdict(list)
            for c in curves:
                for step, value in c:
                    by_step[step].append(value)
            steps = sorted(by_step)
            mean = [statistics.fmean(by_step[s]) for s in steps]
            lo = [min(by_step[s]) for s in steps]
            hi = [max(by_step[s]) for s in steps]
            ax.plot(
                steps,
                mean,
                marker=".",
                linestyle=LINESTYLES.get(method, "-"),
                color=COLORS.get(method),
                label=f"{LABELS.get(method, method)} (n={len(curves)})",
            )
            ax.fill_between(steps, lo, hi, color=COLORS.get(method), alpha=0.15, linewidth=0)
        if base is not None:
            ax.axhline(base, color="grey", linestyle=":", linewidth=1, label="base model")
        ax.set_title(TASK_LABELS.get(task, task))
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("held-out eval/logp_gap (nats)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    fig.suptitle(
        "(a) held-out log-prob gap, chosen − rejected\nmean over seeds, band = min–max over seeds",
        fontsize=10,
    )
    return _save(fig, out / "logp_gap.png")


def win_rates(data: dict[str, Any], task: str, method: str) -> list[float]:
    return [r["eval"]["win_rate_vs_base"] for r in succeeded(data["runs"][task][method]) if r.get("eval")]


def fig_win_rate(data: dict[str, Any], out: Path) -> Path:
    tasks = tasks_of(data)
    fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(5.2 * max(len(tasks), 1), 4.3), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        methods = methods_of(data, task)
        for i, method in enumerate(methods):
            wr = win_rates(data, task, method)
            if not wr:
                continue
            m, lo, hi = ci95(wr)
            ax.bar(i, m, color=COLORS.get(method), alpha=0.8)
            ax.errorbar(i, m, yerr=[[m - lo], [hi - m]], color="black", capsize=4)
            ax.scatter([i] * len(wr), wr, color="black", s=10, zorder=3)
        ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_xticks(
            range(len(methods)), [LABELS.get(m, m) for m in methods], rotation=25, ha="right", fontsize=8
        )
        ax.set_ylim(0, 1)
        judge = "relevance judge (frozen base)" if task == "chat" else "exact correctness"
        ax.set_title(f"{TASK_LABELS.get(task, task)}: {judge}", fontsize=9)
        ax.set_ylabel("win rate vs base (tie = ½)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(
        "(b) win rate against the base model\nmean over seeds, 95% t-interval over seeds, dots = seeds",
        fontsize=10,
    )
    return _save(fig, out / "win_rate.png")


def fig_cost(data: dict[str, Any], out: Path) -> Path:
    tasks = tasks_of(data)
    methods = [m for m in METHOD_ORDER if any(m in data["runs"].get(t, {}) for t in tasks)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    width = 0.8 / max(len(tasks), 1)
    for k, task in enumerate(tasks):
        for i, method in enumerate(methods):
            rs = succeeded(data["runs"].get(task, {}).get(method, []))
            if not rs:
                continue
            x = i + (k - (len(tasks) - 1) / 2) * width
            wall = mean_std([r["wall_time_s"] for r in rs if r.get("wall_time_s") is not None])
            mem = mean_std(
                [
                    r["peak_memory"]["peak_rss_bytes"] / 2**20
                    for r in rs
                    if r["peak_memory"].get("peak_rss_bytes")
                ]
            )
            label = TASK_LABELS.get(task, task) if i == 0 else None
            color = f"C{k}"
            axes[0].bar(x, wall[0], width, yerr=wall[1], color=color, alpha=0.8, capsize=3, label=label)
            if not math.isnan(mem[0]):
                axes[1].bar(x, mem[0], width, yerr=mem[1], color=color, alpha=0.8, capsize=3, label=label)
    for ax, ylabel in ((axes[0], "wall time per job (s)"), (axes[1], "peak RSS of the job process (MiB)")):
        ax.set_xticks(
            range(len(methods)), [LABELS.get(m, m) for m in methods], rotation=25, ha="right", fontsize=8
        )
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        "(c) cost per job: mean ± std over seeds\n(same optimiser steps for every method)", fontsize=10
    )
    return _save(fig, out / "cost.png")


# ---------------------------------------------------------------------------------------------------
# The doc


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def task_table(data: dict[str, Any], task: str) -> str:
    base = data["base"].get(task, {})
    chat = task == "chat"
    header = ["method", "seeds ok", "final eval/logp_gap", "Δ gap vs base"]
    header += (
        ["mean relevance", "copy rate", "words/reply"] if chat else ["exact accuracy", "lenient accuracy"]
    )
    header += ["win rate vs base [95% CI]", "wall time (s)", "peak RSS (MiB)"]
    rows = []
    base_gap = base.get("harness_logp", {}).get("logp_gap")
    if base:
        if chat:
            words = statistics.fmean(r["words"] for r in base["per_prompt"])
            extra = [fmt(base["mean_relevance"]), fmt(base["copy_rate"]), fmt(words, digits=1)]
        else:
            extra = [fmt(base["accuracy"]), fmt(base.get("accuracy_lenient", math.nan))]
        rows.append(["base model", "–", fmt(base_gap), "–", *extra, "0.50 (itself)", "–", "–"])
    for method in methods_of(data, task):
        runs = data["runs"][task][method]
        ok = succeeded(runs)
        gaps = [g for g in (final_gap(r) for r in ok) if g is not None]
        evs = [r["eval"] for r in ok if r.get("eval")]
        row = [LABELS.get(method, method), f"{len(ok)}/{len(runs)}", fmt(*mean_std(gaps))]
        row.append(fmt(*mean_std([g - base_gap for g in gaps])) if base_gap is not None else "–")
        if chat:
            row += [
                fmt(*mean_std([e["mean_relevance"] for e in evs])),
                fmt(*mean_std([e["copy_rate"] for e in evs])),
                fmt(
                    *mean_std([statistics.fmean(p["words"] for p in e["per_prompt"]) for e in evs]), digits=1
                ),
            ]
        else:
            row.append(fmt(*mean_std([e["accuracy"] for e in evs])))
            row.append(fmt(*mean_std([e.get("accuracy_lenient", math.nan) for e in evs])))
        m, lo, hi = ci95([e["win_rate_vs_base"] for e in evs])
        row.append("–" if math.isnan(m) else f"{m:.2f} [{lo:.2f}, {hi:.2f}]")
        row.append(
            fmt(*mean_std([r["wall_time_s"] for r in ok if r.get("wall_time_s") is not None]), digits=0)
        )
        mem = [
            r["peak_memory"]["peak_rss_bytes"] / 2**20 for r in ok if r["peak_memory"].get("peak_rss_bytes")
        ]
        row.append(fmt(*mean_std(mem), digits=0))
        rows.append(row)
    return _table(header, rows)


def failures(data: dict[str, Any]) -> list[str]:
    out = []
    for task in tasks_of(data):
        for method in methods_of(data, task):
            for r in data["runs"][task][method]:
                if r["job"]["status"] != "succeeded":
                    err = r["job"].get("error") or {}
                    out.append(
                        f"- {task}/{method}/seed{r['seed']}: {r['job']['status']} "
                        f"({err.get('code')}: {str(err.get('message'))[:300]})"
                    )
    return out


def configs(data: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any], list[dict[str, Any]]]:
    """(the grid config, the method block of each method, the source records seen)."""
    cfg: dict[str, Any] | None = None
    blocks: dict[str, Any] = {}
    sources: list[dict[str, Any]] = []
    for task in tasks_of(data):
        for method in methods_of(data, task):
            for r in data["runs"][task][method]:
                cfg = cfg or {k: v for k, v in r["config"].items() if k != "request"}
                blocks.setdefault(method, r["config"]["request"]["method"])
                if r.get("source") and r["source"] not in sources:
                    sources.append(r["source"])
    return cfg, blocks, sources


def old_discussion(doc: Path) -> str | None:
    if not doc.exists():
        return None
    text = doc.read_text()
    if DISCUSSION_START in text and DISCUSSION_END in text:
        return text.split(DISCUSSION_START, 1)[1].split(DISCUSSION_END, 1)[0].strip("\n")
    return None


DEFAULT_DISCUSSION = """_To be written by the lead once the grid's numbers exist: where the result agrees or disagrees
with the paper (Figure 1: RFT and IRFT widen the held-out gap more than SFT; the win-rate ordering
SFT < SPIN < IRFT), whether a wider gap meant better answers, RFT's behaviour, the noisy-demonstration
task, and the headline numbers with their spreads and costs._"""


def _rel(path: Path, doc: Path) -> str:
    """`path` as the document links it: relative to the document's folder (`../experiments/...`), so
    the link works in any clone and on the forge."""
    return Path(os.path.relpath(path.resolve(), doc.resolve().parent)).as_posix()


TITLE = "Results: SFT vs reward-learning fine-tuning on SmolLM2-135M-Instruct (the from-base grid)"


def write_doc(data: dict[str, Any], figures: list[Path], doc: Path, results: Path) -> None:
    """Issue 9's page alone (the standalone form; docs/results.md embeds `render` instead)."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = render(data, figures, doc, results, discussion=old_discussion(doc) or DEFAULT_DISCUSSION)
    doc.write_text(text)


def render(
    data: dict[str, Any],
    figures: list[Path],
    doc: Path,
    results: Path,
    *,
    discussion: str,
    level: int = 1,
    title: str = TITLE,
    generator: str = "experiments/report.py",
) -> str:
    """Issue 9's page as Markdown, its title at heading `level` (links relative to `doc`), with the
    hand-written `discussion` between its markers."""
    h = "#" * level
    cfg, blocks, sources = configs(data)
    smoke = bool(cfg and cfg.get("smoke"))
    parts = [f"{h} {title}", ""]
    parts.append(
        f"_Generated by `.venv/bin/python {generator}` from the raw per-job JSON in "
        f"`{_rel(results, doc)}/`; do not edit the tables by hand (the Discussion section is kept)._"
    )
    if smoke:
        parts += ["", "**SMOKE RUN: the tiny test model on tiny data. These numbers mean nothing.**"]
    parts += ["", f"{h}# How it was run", ""]
    parts.append(
        "Every job was submitted to Juice's public API over HTTP with an API key (`experiments/run_grid.py`), "
        "as a user would: upload the task's JSONL files, `POST /v1/fine_tuning/jobs`, poll the job, then read "
        "`/metrics/series`, `/events` and `/checkpoints`, and download the final checkpoint "
        "(`/checkpoints/{id}/content`) for the held-out evaluation, which runs in plain transformers "
        "(`experiments/evaluate.py`, greedy decoding)."
    )
    parts += [
        "",
        "```bash",
        "# the grid (resumable: a (task, method, seed) whose JSON exists is skipped)",
        "nice -n 10 .venv/bin/python experiments/run_grid.py --home /tmp/juice-grid --snapshot \\",
        "    --tasks arith chat arith_noisy --methods sft spin irft rft dpo --seeds 0 1 2 \\",
        "    --results experiments/results --threads 2",
        "# task 1's full fine-tuning arms (every weight trained, lr 2e-5)",
        "nice -n 10 .venv/bin/python experiments/run_grid.py --home /tmp/juice-grid --snapshot \\",
        "    --cells arith:sft_full,spin_full,irft_full --seeds 0 1 2 --results experiments/results --threads 2",
        "# RFT with T=3 outer iterations (its reward model retrained on the policy's samples every 7 steps)",
        "nice -n 10 .venv/bin/python experiments/run_grid.py --home /tmp/juice-grid --snapshot \\",
        "    --cells arith:rft_t3 arith_noisy:rft_t3 chat:rft_t3 --seeds 0 1 2 --results experiments/results",
        "# the paper's setup: SPIN, IRFT and RFT from the sft cell's model (`model: ft:...`), and SFT for 42 steps",
        "nice -n 10 .venv/bin/python experiments/run_grid.py --home /tmp/juice-grid --snapshot \\",
        "    --cells arith:sft_2x,spin_after_sft,irft_after_sft,rft_after_sft,spin_after_sft_low_lr,irft_after_sft_low_lr \\",
        "    --seeds 0 1 2 --results experiments/results --threads 2",
        "# the README's demo-data comparison (SFT, IRFT T=2, RFT k=2) and its dashboard screenshots",
        ".venv/bin/python experiments/demo_compare.py --screenshots docs/images",
        "# the queue this page's cells ran in (the lines above, breadth-first, resumable)",
        "setsid nohup nice -n 10 bash experiments/grid_queue.sh >> experiments/results/grid.log 2>&1 &",
        "# every figure and table of this page (and of the from-SFT grid's)",
        ".venv/bin/python experiments/report23.py",
        "# the whole pipeline on the tiny test model, in seconds (what CI runs)",
        ".venv/bin/python -m pytest tests/test_experiments_smoke.py",
        "```",
    ]
    if cfg:
        parts += [
            "",
            f"Budget: **{cfg['budget']}**, {cfg['budget_steps']} optimiser steps per job for every method "
            f"({cfg['sizes']['n_train']} training examples, batch {cfg['common']['batch_size']}, "
            f"{cfg['common']['n_epochs']} epochs; IRFT's {cfg['irft_T']} stagewise slices take "
            f"{cfg['budget_steps'] // cfg['irft_T']} steps each; RFT one policy step per batch of prompts, "
            f"{cfg['rft_samples_per_prompt']} samples each; DPO one step per batch of pairs). Generation, "
            "RFT's reward model and the reference passes are not equalised: they are the cost in (c). "
            f"Held-out prompts: {cfg['sizes']['n_heldout']} per task. Model: `{cfg['model']}`, LoRA "
            f"r{cfg['common']['lora']['r']}/alpha {cfg['common']['lora']['alpha']}, "
            f"lr {cfg['common']['learning_rate']}.",
            "",
            "Grid configuration (as recorded in every result):",
            "",
            "```json",
            json.dumps(cfg, indent=1),
            "```",
            "",
            "The `method` block of each method's jobs (the seed and files differ per job):",
            "",
        ]
        for method in METHOD_ORDER:
            if method in blocks:
                parts += [
                    f"- {LABELS[method]}:",
                    "",
                    "  ```json",
                    "  " + json.dumps(blocks[method]),
                    "  ```",
                    "",
                ]
    if sources:
        parts += [
            "Juice source the jobs ran on: "
            + "; ".join(
                f"commit `{s.get('commit', '')[:12]}`"
                + (f" + uncommitted diff `{s['diff_sha256']}`" if s.get("dirty") else "")
                for s in sources
            )
            + "."
        ]
    parts += ["", f"{h}# Tasks and judges", ""]
    parts.append(
        "Generated offline with a fixed seed by `experiments/tasks.py` (see its docstring). **arith**: "
        '"Compute 17 + 26 - 9." with the worked answer "17 + 26 = 43. 43 - 9 = 34. Answer: 34"; '
        "validation pairs: chosen = correct, rejected = the same form with one step off by 1–9 (carried "
        "through). **arith_noisy**: arith with 30% of the demonstrations replaced by such wrong answers "
        "(held-out set and DPO's pairs unchanged, so DPO keeps clean labels). **chat**: chitchat-dataset "
        "(MIT, PyPI; the data ships in the wheel): up to 3 messages of context and the real next message; "
        "rejected = the real reply of another held-out conversation (same style and length distribution, "
        "so the pair tests fit to the conversation, and it does not depend on the model under test)."
    )
    parts += [
        "",
        "Win rate against the base model, per held-out prompt, a tie counting ½: on arith, exact correctness "
        "of the first `Answer: N`; on chat, the relevance judge: the frozen base model's "
        "`log p(reply | own context) − mean log p(reply | 4 other held-out contexts)`, which none of the "
        "methods trains on and which does not reward generic high-likelihood replies. Its blind spot, "
        "parroting the context, is shown as the copy rate. Lenient accuracy (arith, not used for the win "
        "rate) reads the last integer of the generation instead, so it separates getting the format from "
        "getting the arithmetic: the base model never writes `Answer: N`.",
    ]
    judge = data["base"].get("chat", {}).get("judge_check")
    if judge:
        parts.append(
            f"Sanity check of the judge on the held-out pairs: it scores the real reply above another "
            f"conversation's in {judge['judge_pair_accuracy']:.0%} of them."
        )
    parts += ["", f"{h}# Figures", ""]
    for path in figures:
        parts += [f"![{path.stem}]({_rel(path, doc)})", ""]
    parts += [f"{h}# Tables", ""]
    parts.append(
        "Mean ± standard deviation over seeds; the win-rate interval is a 95% Student-t interval over "
        "seeds. Final gap = the job's last `eval/logp_gap`; Δ gap = that minus the base model's. Wall time "
        "from the job's created → finished stamps (the CPU was shared with other work, so expect noise); "
        "peak RSS of the worker's job process, sampled by the harness (Juice's job records hold no memory "
        "figure)."
    )
    for task in tasks_of(data):
        parts += ["", f"{h}## {TASK_LABELS.get(task, task)}", "", task_table(data, task)]
    fails = failures(data)
    if fails:
        parts += ["", f"{h}## Jobs that did not succeed", "", *fails]
    parts += [
        "",
        f"{h}# Discussion",
        "",
        DISCUSSION_START,
        discussion,
        DISCUSSION_END,
        "",
    ]
    return "\n".join(parts)


def figures_of(data: dict[str, Any], out: Path) -> list[Path]:
    """Issue 9's three figures, written under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    return [fig_logp_gap(data, out), fig_win_rate(data, out), fig_cost(data, out)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=HERE / "results")
    p.add_argument("--figures", type=Path, default=HERE / "figures")
    # Required: docs/results.md is report23.py's page (this one's is a section of it), so no call of
    # this script can overwrite it with the earlier grid's page alone.
    p.add_argument("--doc", type=Path, required=True, help="write the earlier grid's page alone here")
    args = p.parse_args(argv)
    data = load(args.results)
    if not tasks_of(data):
        print(f"no results under {args.results}", file=sys.stderr)
        return 1
    figures = figures_of(data, args.figures)
    write_doc(data, figures, args.doc, args.results)
    for path in [*figures, args.doc]:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
