"""Regenerate docs/results.md: issue 23's grid (run_grid23.py) as the page, issue 9's as its earlier section.

    .venv/bin/python experiments/report23.py
    .venv/bin/python experiments/report23.py --results DIR --figures DIR --doc FILE \\
        --results9 DIR --figures9 DIR

The verdict of each second stage is its PAIRED difference from `sft_more` (the same 21 extra steps of
SFT from the same SFT model), seed by seed: both arms of a seed start from the same sft_plateau job,
so the difference removes the between-seed spread of the starting point. Its mean and a 95% Student-t
interval over seeds decide: "helps" when the interval lies above 0, "hurts" when below, "no detectable
difference" when it holds 0. The metric is exact accuracy on the arithmetic tasks (200 held-out
prompts) and the per-token relevance judge on chat (evaluate.py); the win rate against the base
model, the dev loss of the handed-back model and the held-out log-prob gap are shown the same way.

Figures (experiments/figures23/):

- ``plateau.png``: sft_plateau's dev loss against the step, one line per seed, the step it handed
  back marked: the evidence that the second stages start from a plateau.
- ``dev_curves.png``: dev eval/loss and eval/logp_gap of every second stage from where the SFT stage
  ended (step 0 = the sft_plateau model): mean over seeds, band = min-max over seeds.
- ``paired.png``: the paired differences from sft_more (task metric and dev loss): mean, 95%
  t-interval, one dot per seed.

The other measurements' sections (between the more-results markers) and both hand-written Discussions
(issue 23's and issue 9's, each between its own markers) are kept when
the page is regenerated.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import report  # noqa: E402  # issue 9's section, and the shared statistics and table helpers
from cells23 import CELLS, CONTROL, PLANNED_SEEDS, PLATEAU, TASKS, cells_for  # noqa: E402
from report import _rel, _save, _table, ci95, plt  # noqa: E402

DISCUSSION_START = "<!-- issue23-discussion:start (kept by experiments/report23.py) -->"
DISCUSSION_END = "<!-- issue23-discussion:end -->"
# The other measurements of the page (issue 25's triage and filtering, issue 26's reinforcement), each
# from its own script's --report: kept as they are between these markers, after this grid's Discussion.
MORE_START = "<!-- more-results:start (kept by experiments/report23.py) -->"
MORE_END = "<!-- more-results:end -->"
DEFAULT_DISCUSSION = """_To be written by the lead once the grid's numbers exist: per method, where it helps or hurts
against the same number of extra SFT steps and in which regime (task, anchor, seeds), what the
diagnostics say about why, and what the measurements suggest would change a losing result._"""
TITLE = "Results: reward learning from a plateaued SFT model against more SFT"
TASK_LABELS = {
    "arith": "arith (exact answers)",
    "arith_noisy": "arith_noisy (30% wrong demonstrations)",
    "chat": "chat (chitchat)",
}
COLORS = {
    PLATEAU: "#7f7f7f",
    CONTROL: "#1f77b4",
    "spin_anchor": "#ff7f0e",
    "irft_anchor": "#2ca02c",
    "rft_anchor": "#d62728",
    "dpo_anchor": "#9467bd",
    "spin_noanchor": "#ffbb78",
    "irft_noanchor": "#98df8a",
    "rft_noanchor": "#ff9896",
    "dpo_noanchor": "#c5b0d5",
    "irft_anchor_from_base": "#8c564b",
}
# The second stages' diagnostics: (series, how a run is summarised, column label). Only the series a
# run has are shown (RFT's reward-model metrics, IRFT's dropped negatives, ...).
DIAGNOSTICS = [
    ("train/generation_length", "last", "sample length (last)"),
    ("negatives/dropped_identical", "mean", "negatives dropped: identical"),
    ("negatives/dropped_truncated", "mean", "negatives dropped: truncated"),
    ("rewards/accuracy", "mean", "pair accuracy (mean)"),
    ("logps/real", "first-last", "demo log-prob first → last"),
    ("reward_model/heldout_accuracy", "last", "RM held-out acc. (last)"),
    ("reward_model/policy_accuracy", "last", "RM acc. on policy (last)"),
    ("train/kl", "last", "KL (last)"),
    ("train/kl_coef", "last", "KL coef. (last)"),
]


# ---------------------------------------------------------------------------------------------------
# Loading


def load(results: Path) -> dict[str, Any]:
    """{"runs": {task: {cell: [run, ...]}}, "base": {task: eval}, "reference": {task: eval},
    "info": {task: data_info}}; a run is the job JSON with its eval (or None) under "eval"."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    out: dict[str, Any] = {"runs": runs, "base": {}, "reference": {}, "info": {}}
    for task_dir in sorted(p for p in results.iterdir() if p.is_dir()) if results.is_dir() else []:
        task = task_dir.name
        for key, name in (
            ("base", "base.eval.json"),
            ("reference", "reference.eval.json"),
            ("info", "data_info.json"),
        ):
            if (task_dir / name).exists():
                out[key][task] = json.loads((task_dir / name).read_text())
        for path in sorted(task_dir.glob("*-seed*.json")):
            if path.name.endswith(".eval.json"):
                continue
            run = json.loads(path.read_text())
            ev = path.with_name(path.name.removesuffix(".json") + ".eval.json")
            run["eval"] = json.loads(ev.read_text()) if ev.exists() else None
            runs[task][run["method"]].append(run)
    for cells in runs.values():
        for rs in cells.values():
            rs.sort(key=lambda r: r["seed"])
    return out


def tasks_of(data: dict[str, Any]) -> list[str]:
    found = set(data["runs"]) | set(data["base"])
    return [t for t in TASKS if t in found] + sorted(found - set(TASKS))


def cells_of(data: dict[str, Any], task: str) -> list[str]:
    found = set(data["runs"].get(task, {}))
    order = cells_for(task) if task in TASKS else []
    return [c for c in order if c in found] + sorted(found - set(order))


def ok(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if r["job"]["status"] == "succeeded"]


def label(cell: str) -> str:
    return CELLS[cell].label if cell in CELLS else cell


# ---------------------------------------------------------------------------------------------------
# Per-run measurements (None where a run lacks one)


def primary_name(task: str) -> str:
    return "per-token judge" if task == "chat" else "exact accuracy"


def primary(run: dict[str, Any], task: str) -> float | None:
    ev = run.get("eval")
    if not ev:
        return None
    return ev.get("mean_relevance_per_token") if task == "chat" else ev.get("accuracy")


def win(run: dict[str, Any], _task: str = "") -> float | None:
    return (run.get("eval") or {}).get("win_rate_vs_base")


def dev_loss(run: dict[str, Any], _task: str = "") -> float | None:
    """The dev loss of the model the job handed back (its selected step; the last for "last")."""
    return (run.get("selection") or {}).get("eval_loss")


def dev_gap(run: dict[str, Any], _task: str = "") -> float | None:
    return (run.get("selection") or {}).get("eval_logp_gap")


def heldout_gap(run: dict[str, Any], _task: str = "") -> float | None:
    return ((run.get("eval") or {}).get("harness_heldout") or {}).get("logp_gap")


def values(runs: list[dict[str, Any]], metric: Any, task: str) -> list[float]:
    return [v for v in (metric(r, task) for r in ok(runs)) if v is not None and not math.isnan(v)]


def interval(xs: list[float], digits: int = 3) -> str:
    """ "mean [low, high]" (a 95% t-interval over seeds), the mean alone for one seed, – for none."""
    if not xs:
        return "–"
    m, lo, hi = ci95(xs)
    if len(xs) < 2:
        return f"{m:.{digits}f} (1 seed)"
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


# ---------------------------------------------------------------------------------------------------
# Paired differences against sft_more


def paired(data: dict[str, Any], task: str, cell: str, metric: Any) -> list[tuple[int, float]]:
    """(seed, metric(cell) - metric(sft_more)) over the seeds where both have the metric."""
    runs = data["runs"].get(task, {})
    control = {r["seed"]: metric(r, task) for r in ok(runs.get(CONTROL, []))}
    mine = {r["seed"]: metric(r, task) for r in ok(runs.get(cell, []))}
    return [
        (s, mine[s] - control[s])
        for s in sorted(set(control) & set(mine))
        if mine[s] is not None and control[s] is not None
    ]


def verdict(diffs: list[float], higher_is_better: bool = True) -> str:
    """helps / hurts / no detectable difference, from the 95% t-interval of the paired differences."""
    if len(diffs) < 2:
        return "too few paired seeds" if diffs else "no paired seeds"
    _, lo, hi = ci95(diffs)
    if lo > 0:
        return "**helps**" if higher_is_better else "**hurts**"
    if hi < 0:
        return "**hurts**" if higher_is_better else "**helps**"
    return "no detectable difference at 95%"


def verdict_table(data: dict[str, Any], task: str) -> str | None:
    seconds = [c for c in cells_of(data, task) if c in CELLS and CELLS[c].second_stage]
    if not seconds or CONTROL not in data["runs"].get(task, {}):
        return None
    header = [
        "second stage",
        "paired seeds",
        f"Δ {primary_name(task)} [95% CI]",
        "verdict",
        "Δ win rate vs base [95% CI]",
        "Δ dev loss [95% CI] (lower is better)",
        "dev-loss verdict",
        "Δ held-out logp gap [95% CI]",
    ]
    rows = []
    for cell in seconds:
        d = [x for _, x in paired(data, task, cell, primary)]
        dl = [x for _, x in paired(data, task, cell, dev_loss)]
        rows.append(
            [
                label(cell),
                str(len(d)),
                interval(d),
                verdict(d),
                interval([x for _, x in paired(data, task, cell, win)]),
                interval(dl),
                verdict(dl, higher_is_better=False),
                interval([x for _, x in paired(data, task, cell, heldout_gap)], digits=2),
            ]
        )
    return _table(header, rows)


# ---------------------------------------------------------------------------------------------------
# Tables


def _single_eval(ev: dict[str, Any], chat: bool) -> list[str]:
    """The task-metric columns of one evaluation (the base model's, or the references')."""
    if chat:
        return [
            f"{ev['mean_relevance_per_token']:.3f}",
            f"{ev['mean_relevance']:.1f}",
            f"{ev['mean_reply_tokens']:.1f}",
            f"{ev['copy_rate']:.2f}",
        ]
    return [f"{ev['accuracy']:.3f}", f"{ev['accuracy_se']:.3f}", f"{ev['accuracy_lenient']:.3f}"]


def _num(x: float | None, digits: int) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def task_table(data: dict[str, Any], task: str) -> str:
    chat = task == "chat"
    header = ["arm", "seeds ok"]
    header += (
        ["per-token judge [95% CI]", "summed judge", "reply tokens", "copy rate"]
        if chat
        else ["exact accuracy [95% CI]", "SE per seed", "lenient accuracy"]
    )
    header += [
        "win rate vs base [95% CI]",
        "dev loss [95% CI]",
        "dev logp gap [95% CI]",
        "held-out logp gap [95% CI]",
        "dev-best step per seed",
        "wall time (s)",
        "peak RSS (MiB)",
    ]
    rows = []
    base, ref = data["base"].get(task), data["reference"].get(task)
    if base:
        dev = base.get("harness_dev", {})
        rows.append(
            [
                "base model",
                "–",
                *_single_eval(base, chat),
                "0.50 (itself)",
                _num(dev.get("chosen_nll"), 3),
                _num(dev.get("logp_gap"), 2),
                _num(base.get("harness_heldout", {}).get("logp_gap"), 2),
                *["–"] * 3,
            ]
        )
    if ref:
        rows.append(
            ["human references", "–", *_single_eval(ref, chat), _num(ref["win_rate_vs_base"], 2), *["–"] * 6]
        )
    for cell in cells_of(data, task):
        runs = data["runs"][task][cell]
        good = ok(runs)
        row = [label(cell), f"{len(good)}/{len(runs)}"]
        if chat:
            row += [
                interval(values(runs, primary, task)),
                report.fmt(
                    *report.mean_std([r["eval"]["mean_relevance"] for r in good if r.get("eval")]), digits=1
                ),
                report.fmt(
                    *report.mean_std([r["eval"]["mean_reply_tokens"] for r in good if r.get("eval")]),
                    digits=1,
                ),
                report.fmt(*report.mean_std([r["eval"]["copy_rate"] for r in good if r.get("eval")])),
            ]
        else:
            ses = [r["eval"]["accuracy_se"] for r in good if r.get("eval")]
            row += [
                interval(values(runs, primary, task)),
                f"{statistics.fmean(ses):.3f}" if ses else "–",
                report.fmt(
                    *report.mean_std([r["eval"]["accuracy_lenient"] for r in good if r.get("eval")]), digits=3
                ),
            ]
        best = [r.get("dev_best", {}).get("step") for r in good]
        row += [
            interval(values(runs, win, task), digits=2),
            interval(values(runs, dev_loss, task)),
            interval(values(runs, dev_gap, task), digits=2),
            interval(values(runs, heldout_gap, task), digits=2),
            ", ".join("–" if b is None else str(b) for b in best) or "–",
            report.fmt(
                *report.mean_std([r["wall_time_s"] for r in good if r.get("wall_time_s") is not None]),
                digits=0,
            ),
            report.fmt(
                *report.mean_std(
                    [
                        r["peak_memory"]["peak_rss_bytes"] / 2**20
                        for r in good
                        if r["peak_memory"].get("peak_rss_bytes")
                    ]
                ),
                digits=0,
            ),
        ]
        rows.append(row)
    return _table(header, rows)


def _summary(series: dict[str, Any] | None, how: str) -> float | tuple[float, float] | None:
    if not series or not series.get("value"):
        return None
    v = series["value"]
    return {"last": v[-1], "mean": statistics.fmean(v), "first-last": (v[0], v[-1])}[how]


def diagnostics_table(data: dict[str, Any], task: str) -> str | None:
    """Mean over seeds of each second stage's own training metrics (those its runs have)."""
    cells = [c for c in cells_of(data, task) if c != PLATEAU]
    present = [
        d
        for d in DIAGNOSTICS
        if any(d[0] in r["metrics"]["series"] for c in cells for r in ok(data["runs"][task][c]))
    ]
    if not present:
        return None
    rows = []
    for cell in cells:
        row = [label(cell)]
        for name, how, _ in present:
            got = [_summary(r["metrics"]["series"].get(name), how) for r in ok(data["runs"][task][cell])]
            got = [g for g in got if g is not None]
            if not got:
                row.append("–")
            elif how == "first-last":
                row.append(
                    f"{statistics.fmean(g[0] for g in got):.2f} → {statistics.fmean(g[1] for g in got):.2f}"
                )
            else:
                row.append(f"{statistics.fmean(got):.3g}")
        rows.append(row)
    return _table(["arm", *[d[2] for d in present]], rows)


def per_seed_table(data: dict[str, Any], task: str) -> str:
    """The task metric of every run, seed by seed: what the paired differences are made of."""
    seeds = sorted({r["seed"] for rs in data["runs"][task].values() for r in rs})
    rows = []
    for cell in cells_of(data, task):
        by_seed = {r["seed"]: primary(r, task) for r in data["runs"][task][cell]}
        rows.append(
            [label(cell)]
            + [
                ("–" if by_seed.get(s) is None else f"{by_seed[s]:.3f}") if s in by_seed else ""
                for s in seeds
            ]
        )
    return _table(["arm", *[f"seed {s}" for s in seeds]], rows)


def missing_cells(data: dict[str, Any]) -> list[str]:
    """Planned cells with fewer succeeded seeds than planned: the cells the CPU budget cut."""
    out = []
    for task in TASKS:
        if task not in data["runs"]:
            continue
        for cell in cells_for(task):
            have = len(ok(data["runs"][task].get(cell, [])))
            if have < PLANNED_SEEDS[task]:
                out.append(f"- {task}/{cell} ({label(cell)}): {have} of {PLANNED_SEEDS[task]} seeds")
    return out


def failures(data: dict[str, Any]) -> list[str]:
    out = []
    for task in tasks_of(data):
        for cell in cells_of(data, task):
            for r in data["runs"][task][cell]:
                if r["job"]["status"] != "succeeded":
                    err = r["job"].get("error") or {}
                    out.append(
                        f"- {task}/{cell}/seed{r['seed']}: {r['job']['status']} "
                        f"({err.get('code')}: {str(err.get('message'))[:300]})"
                    )
                elif (r.get("budget") or {}).get("total_steps") not in (None, r["budget"]["expected_steps"]):
                    out.append(
                        f"- {task}/{cell}/seed{r['seed']}: {r['budget']['total_steps']} optimiser steps, "
                        f"not the budget's {r['budget']['expected_steps']}"
                    )
    return out


# ---------------------------------------------------------------------------------------------------
# Figures


def _curve(run: dict[str, Any], name: str, key: str) -> list[tuple[int, float]]:
    """A second stage's dev series from its step 0, the SFT plateau model (the stage's value)."""
    series = run["metrics"]["series"].get(name)
    points = list(zip(series["step"], series["value"], strict=True)) if series else []
    start = (run.get("stage") or {}).get(key)
    if start is not None and all(s != 0 for s, _ in points):
        points = [(0, start), *points]
    return points


def _band(ax: Any, curves: list[list[tuple[int, float]]], color: str | None, lab: str) -> None:
    by_step: dict[int, list[float]] = defaultdict(list)
    for c in curves:
        for step, value in c:
            by_step[step].append(value)
    steps = sorted(by_step)
    ax.plot(steps, [statistics.fmean(by_step[s]) for s in steps], marker=".", color=color, label=lab)
    ax.fill_between(
        steps,
        [min(by_step[s]) for s in steps],
        [max(by_step[s]) for s in steps],
        color=color,
        alpha=0.15,
        lw=0,
    )


def fig_plateau(data: dict[str, Any], out: Path) -> Path:
    tasks = tasks_of(data)
    fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(5.2 * max(len(tasks), 1), 4.0), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        for k, run in enumerate(ok(data["runs"].get(task, {}).get(PLATEAU, []))):
            series = run["metrics"]["series"].get("eval/loss")
            if not series:
                continue
            ax.plot(series["step"], series["value"], color=f"C{k}", marker=".", label=f"seed {run['seed']}")
            step, loss = run["selection"].get("selected_step"), run["selection"].get("eval_loss")
            if step is not None and loss is not None:
                ax.scatter([step], [loss], marker="*", s=160, color=f"C{k}", edgecolor="black", zorder=3)
        ax.set_title(TASK_LABELS.get(task, task), fontsize=9)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("dev eval/loss (token-mean NLL)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        "SFT to its dev plateau: dev loss per seed,\n★ = the step handed back (best_eval_loss)", fontsize=10
    )
    return _save(fig, out / "plateau.png")


def fig_dev_curves(data: dict[str, Any], out: Path) -> Path:
    tasks = tasks_of(data)
    n = max(len(tasks), 1)
    fig, axes = plt.subplots(2, n, figsize=(5.2 * n, 8.5), squeeze=False)
    for col, task in enumerate(tasks):
        for row, (name, key, ylabel) in enumerate(
            (
                ("eval/loss", "eval_loss", "dev eval/loss"),
                ("eval/logp_gap", "eval_logp_gap", "dev eval/logp_gap (nats)"),
            )
        ):
            ax = axes[row][col]
            for cell in cells_of(data, task):
                if cell not in CELLS or not CELLS[cell].from_sft:
                    continue
                curves = [c for c in (_curve(r, name, key) for r in ok(data["runs"][task][cell])) if c]
                if curves:
                    _band(ax, curves, COLORS.get(cell), f"{label(cell)} (n={len(curves)})")
            ax.set_title(TASK_LABELS.get(task, task), fontsize=9)
            ax.set_xlabel("second-stage step (0 = the SFT plateau model)")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if row == 1:
                ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    fig.suptitle("Second stages on the dev split:\nmean over seeds, band = min–max over seeds", fontsize=10)
    return _save(fig, out / "dev_curves.png")


def fig_paired(data: dict[str, Any], out: Path) -> Path:
    tasks = tasks_of(data)
    n = max(len(tasks), 1)
    fig, axes = plt.subplots(2, n, figsize=(5.2 * n, 8.0), squeeze=False)
    for col, task in enumerate(tasks):
        seconds = [c for c in cells_of(data, task) if c in CELLS and CELLS[c].second_stage]
        for row, (metric, what) in enumerate(
            ((primary, f"Δ {primary_name(task)}"), (dev_loss, "Δ dev loss (lower is better)"))
        ):
            ax = axes[row][col]
            for i, cell in enumerate(seconds):
                d = [x for _, x in paired(data, task, cell, metric)]
                if not d:
                    continue
                m, lo, hi = ci95(d)
                ax.barh(i, m, color=COLORS.get(cell), alpha=0.8)
                if len(d) > 1:
                    ax.errorbar(m, i, xerr=[[m - lo], [hi - m]], color="black", capsize=4)
                ax.scatter(d, [i] * len(d), color="black", s=10, zorder=3)
            ax.axvline(0, color="grey", linewidth=1)
            ax.set_yticks(range(len(seconds)), [label(c) for c in seconds], fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel(f"{what} vs {label(CONTROL).removeprefix('→ ')}")
            ax.set_title(TASK_LABELS.get(task, task), fontsize=9)
            ax.grid(axis="x", alpha=0.3)
    fig.suptitle(
        "Paired difference from the same number of extra SFT steps\n(same seed, same SFT model):\n"
        "mean, 95% t-interval over seeds, dots = seeds",
        fontsize=10,
    )
    return _save(fig, out / "paired.png")


# ---------------------------------------------------------------------------------------------------
# The page


def _discussion(doc: Path, start: str, end: str) -> str | None:
    if not doc.exists():
        return None
    text = doc.read_text()
    if start in text and end in text:
        return text.split(start, 1)[1].split(end, 1)[0].strip("\n")
    return None


def configs(
    data: dict[str, Any],
) -> tuple[dict[str, Any] | None, dict[str, tuple[str, Any]], list[dict[str, Any]]]:
    """(the grid config, each cell's (task, method block) as first seen, the Juice sources seen).

    The grid config is the one of the last result read (the second stages come after their SFT stage):
    a config change between runs (the second stages' rate, 2026-12-07) leaves the SFT stage's recorded
    config behind, and each job's own method block (listed per cell) is what it ran with."""
    cfg: dict[str, Any] | None = None
    blocks: dict[str, tuple[str, Any]] = {}
    sources: list[dict[str, Any]] = []
    for task in tasks_of(data):
        for cell in cells_of(data, task):
            for r in data["runs"][task][cell]:
                cfg = {k: v for k, v in r["config"].items() if k != "request"}
                blocks.setdefault(cell, (task, r["config"]["request"]["method"]))
                if r.get("source") and r["source"] not in sources:
                    sources.append(r["source"])
    return cfg, blocks, sources


def render23(
    data: dict[str, Any], figures: list[Path], doc: Path, results: Path, discussion: str
) -> list[str]:
    cfg, blocks, sources = configs(data)
    parts = [f"# {TITLE}", ""]
    parts.append(
        "_Generated by `.venv/bin/python experiments/report23.py` from the raw per-job JSON in "
        f"`{_rel(results, doc)}/` (the from-SFT grid) and `experiments/results/` (the from-base grid, the "
        "earlier section below); do not edit the tables by hand (both Discussion sections are kept)._"
    )
    if cfg and cfg.get("smoke"):
        parts += ["", "**SMOKE RUN: the tiny test model on tiny data. These numbers mean nothing.**"]
    parts += ["", "## How it was run", ""]
    parts.append(
        "Through Juice's public API, as the from-base grid below (`experiments/run_grid23.py`; cells and "
        "numbers in `experiments/cells23.py`). Per task and seed: SFT from the base model to its dev plateau "
        "(`sft_plateau`, `select_checkpoint: best_eval_loss` on the dev split), then every second stage "
        'from that job\'s fine-tuned model (`model: "ft:..."`), each the same number of optimiser steps '
        "at the same learning rate, keeping its last step (`select_checkpoint: last`), beside the control "
        "`sft_more`: the same number of extra SFT steps. The harness downloads the model each job hands "
        "back and judges it on held-out prompts no job ever sees (`experiments/evaluate.py`, greedy)."
    )
    parts += [
        "",
        "```bash",
        "# the queue (breadth-first by priority, resumable: a cell whose JSON exists is skipped)",
        "setsid nohup nice -n 10 bash experiments/grid_queue23.sh >> experiments/results23/grid.log 2>&1 < /dev/null &",
        "# one task's cells of a priority, or named cells and seeds",
        ".venv/bin/python experiments/run_grid23.py --home /tmp/juice-grid23 --snapshot --tasks arith --priority 1",
        ".venv/bin/python experiments/run_grid23.py --home /tmp/juice-grid23 --snapshot --cells chat:dpo_anchor --seeds 0",
        "# this page",
        ".venv/bin/python experiments/report23.py",
        "# the whole pipeline on the tiny test model (what CI runs)",
        ".venv/bin/python -m pytest tests/test_experiments_smoke.py",
        "```",
    ]
    if cfg:
        pl, ss = cfg["plateau"], cfg["second_stage"]
        sizes = "; ".join(
            f"{t}: {s['n_train']} training, {s['n_dev']} dev, {s['n_heldout']} held-out"
            for t, s in cfg["sizes"].items()
        )
        parts += [
            "",
            f"**SFT plateau**: {cfg['plateau_steps']} optimiser steps ({pl['n_epochs']} epochs at batch "
            f"{cfg['common']['batch_size']}), lr {pl['learning_rate']}, dev evaluation every {pl['eval_interval']} "
            f"steps, the lowest-dev-loss step handed back. **Second stages**: {cfg['budget_steps']} optimiser "
            f"steps each ({ss['n_epochs']} epoch; IRFT's {cfg['irft']['T']} stagewise slices "
            f"{cfg['budget_steps'] // cfg['irft']['T']} steps each), lr {ss['learning_rate']}, dev evaluation "
            f"every {ss['eval_interval']} steps; the anchor is `nll_weight: {cfg['anchor_nll_weight']}`, "
            "without it `nll_weight: 0` (the pair or policy loss alone). Generation, RFT's reward model and "
            f"the reference passes are not equalised: they are the wall time. Model `{cfg['model']}`, LoRA "
            f"r{cfg['common']['lora']['r']}/alpha {cfg['common']['lora']['alpha']}. Data: {sizes}.",
            "",
            "Grid configuration (as recorded in every result):",
            "",
            "```json",
            json.dumps(cfg, indent=1),
            "```",
            "",
            "The `method` block of each cell's jobs (the seed, files and start model differ per job):",
            "",
        ]
        for cell, (task, block) in sorted(
            blocks.items(), key=lambda kv: list(CELLS).index(kv[0]) if kv[0] in CELLS else 99
        ):
            parts += [
                f"- {label(cell)} (`{cell}`, as on {task}):",
                "",
                "  ```json",
                "  " + json.dumps(block),
                "  ```",
                "",
            ]
    if sources:
        parts.append(
            "Juice source the jobs ran on: "
            + "; ".join(
                f"commit `{s.get('commit', '')[:12]}`"
                + (f" + uncommitted diff `{s['diff_sha256']}`" if s.get("dirty") else "")
                for s in sources
            )
            + "."
        )
    parts += ["", "## Data, dev split and judges", ""]
    parts.append(
        "The from-base grid's tasks (`experiments/tasks.py`), with the same 168 training rows, more "
        "held-out prompts (the first 40 are the from-base grid's) and a dev split of prompts disjoint from "
        "both. The dev split is every job's `validation_file` (preference pairs built as the held-out ones: Juice reports "
        "`eval/loss` on the chosen side and `eval/logp_gap`), and the only data that steers a run "
        "(sft_plateau's checkpoint choice). It is a held-out part of the user's demonstrations, so on "
        "arith_noisy 30% of its chosen answers are wrong, as in training. The held-out prompts are judged "
        "by the harness alone: exact accuracy of the first `Answer: N` on the arithmetic tasks (± its "
        "binomial standard error per seed), and on chat the frozen base model's relevance judge **per "
        "token**: `(log p(reply | own context) − mean log p(reply | 4 other held-out contexts))` divided "
        "by the reply's tokens. The summed form (the from-base grid's) grows with length: it scored the "
        "human reference replies below the base model's own long replies. Win rates against the base model are "
        "per prompt, ties ½, with that judge."
    )
    noisy = data["info"].get("arith_noisy", {})
    if noisy.get("n_dev"):
        parts += [
            "",
            f"arith_noisy's dev split: {noisy['noisy_dev_demonstrations']} of {noisy['n_dev']} chosen answers "
            f"wrong; its training set: {noisy['noisy_demonstrations']} of {noisy['n_train']}.",
        ]
    ref, base = data["reference"].get("chat"), data["base"].get("chat")
    if ref and base:
        check = base.get("judge_check", {})
        parts += [
            "",
            f"The judge on chat's held-out prompts: human references {ref['mean_relevance_per_token']:.3f} per "
            f"token against the base model's {base['mean_relevance_per_token']:.3f} (summed: "
            f"{ref['mean_relevance']:.1f} against {base['mean_relevance']:.1f}); the references win "
            f"{ref['win_rate_vs_base']:.0%} of the prompts against the base model per token. On the held-out "
            "pairs it ranks the real reply above another conversation's in "
            f"{check.get('judge_pair_accuracy_per_token', math.nan):.0%} of them per token "
            f"({check.get('judge_pair_accuracy', math.nan):.0%} summed).",
        ]
    parts += ["", "## Verdicts: each second stage against the same number of extra SFT steps", ""]
    parts.append(
        "Paired by seed (both arms start from the same sft_plateau job): mean difference from `sft_more` "
        "and its 95% Student-t interval over seeds. **helps** / **hurts**: the interval excludes 0; "
        "otherwise no difference this grid can detect. Δ dev loss is the dev loss of the handed-back "
        "model; Δ held-out gap the harness's chosen − rejected log-prob gap on the held-out pairs."
    )
    for task in tasks_of(data):
        table = verdict_table(data, task)
        if table:
            parts += ["", f"### {TASK_LABELS.get(task, task)}", "", table]
    parts += ["", "## Figures", ""]
    for path in figures:
        parts += [f"![{path.stem}]({_rel(path, doc)})", ""]
    parts += ["## Tables", ""]
    parts.append(
        "Means with 95% Student-t intervals over seeds. Dev loss and gap: the job's own evaluation of the "
        "model it handed back (sft_plateau: its selected step; the rest: the last). Dev-best step: where "
        "the job's dev loss was lowest, step 0 being its start (what `best_eval_loss` would have handed "
        "back; 0 = the second stage never beat its start on dev). The base model's dev loss and gaps are "
        "the harness's. Wall time from the job's created → finished stamps on two shared CPU cores."
    )
    for task in tasks_of(data):
        parts += ["", f"### {TASK_LABELS.get(task, task)}", "", task_table(data, task)]
        parts += ["", f"{primary_name(task).capitalize()} per seed:", "", per_seed_table(data, task)]
        diag = diagnostics_table(data, task)
        if diag:
            parts += ["", "Training diagnostics (mean over seeds):", "", diag]
    cut = missing_cells(data)
    if cut:
        parts += ["", "### Cells with fewer seeds than planned", "", *cut]
    fails = failures(data)
    if fails:
        parts += ["", "### Jobs that did not succeed or missed the step budget", "", *fails]
    parts += ["", "## Discussion", "", DISCUSSION_START, discussion, DISCUSSION_END, ""]
    return parts


def write_page(
    data: dict[str, Any],
    figures: list[Path],
    doc: Path,
    results: Path,
    data9: dict[str, Any],
    figures9: list[Path],
    results9: Path,
) -> None:
    discussion = _discussion(doc, DISCUSSION_START, DISCUSSION_END) or DEFAULT_DISCUSSION
    discussion9 = (
        _discussion(doc, report.DISCUSSION_START, report.DISCUSSION_END) or report.DEFAULT_DISCUSSION
    )
    if tasks_of(data):
        parts = render23(data, figures, doc, results, discussion)
    else:
        parts = [
            f"# {TITLE}",
            "",
            f"_No results in `{_rel(results, doc)}/` yet: launch the grid with "
            "`setsid nohup nice -n 10 bash experiments/grid_queue23.sh >> experiments/results23/grid.log 2>&1 "
            "< /dev/null &`._",
            "",
            "## Discussion",
            "",
            DISCUSSION_START,
            discussion,
            DISCUSSION_END,
            "",
        ]
    more = _discussion(doc, MORE_START, MORE_END)
    if more:
        parts += [MORE_START, more, MORE_END, ""]
    parts += ["---", ""]
    if report.tasks_of(data9):
        parts.append(
            report.render(
                data9,
                figures9,
                doc,
                results9,
                discussion=discussion9,
                level=2,
                title="Earlier: the from-base grid (every method from the base model, 21 steps)",
                generator="experiments/report23.py",
            )
        )
    else:
        parts += [f"## Earlier: the from-base grid: no results in `{_rel(results9, doc)}/`", ""]
        parts += [report.DISCUSSION_START, discussion9, report.DISCUSSION_END, ""]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(parts))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=HERE / "results23")
    p.add_argument("--figures", type=Path, default=HERE / "figures23")
    p.add_argument(
        "--results9", type=Path, default=HERE / "results", help="issue 9's results (earlier section)"
    )
    p.add_argument("--figures9", type=Path, default=HERE / "figures")
    p.add_argument("--doc", type=Path, default=REPO / "docs" / "results.md")
    args = p.parse_args(argv)
    data = load(args.results)
    figures: list[Path] = []
    if tasks_of(data):
        args.figures.mkdir(parents=True, exist_ok=True)
        figures = [
            fig_plateau(data, args.figures),
            fig_dev_curves(data, args.figures),
            fig_paired(data, args.figures),
        ]
    data9 = report.load(args.results9)
    figures9 = report.figures_of(data9, args.figures9) if report.tasks_of(data9) else []
    write_page(data, figures, args.doc, args.results, data9, figures9, args.results9)
    for path in [*figures, *figures9, args.doc]:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
