"""The experiment harness of issue 9 (experiments/) end to end on the tiny test model: a real `juice up`
on the embedded default started by run_grid.py itself, jobs over HTTP, checkpoint downloads, the
held-out evaluation, resuming, and report.py's figures and doc. About a minute of two CPU cores.

Needs the `experiments` extra (`pip install -e ".[experiments]"`: matplotlib, chitchat-dataset)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"


def _needs_extra() -> None:
    missing = [m for m in ("matplotlib", "chitchat_dataset") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(f"install the experiments extra (pip install -e '.[experiments]'): missing {missing}")


def _run(args: list[str], timeout: float) -> str:
    out = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("JUICE_")},
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
        },
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return out.stdout


def _experiments_module(name: str):
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(EXPERIMENTS))


def test_every_method_gets_the_same_optimiser_steps() -> None:
    """The budget the doc claims: the trainer's own step arithmetic gives every method's job of the full
    grid the same number of optimiser steps."""
    from trainer.spec.hyperparameters import HYPERPARAMETERS
    from trainer.spec.plan import total_steps

    run_grid = _experiments_module("run_grid")
    for smoke in (False, True):
        cfg = run_grid.grid_config(smoke)
        for method in run_grid.METHODS:
            block = run_grid.method_body(method, "arith", cfg)
            hp = HYPERPARAMETERS[block["type"]].model_validate(block[block["type"]]["hyperparameters"])
            # a two-stage arm's block is its second stage (the first is the sft cell's job); sft_2x is
            # SFT alone for both stages' steps
            stages = 2 if method == "sft_2x" else 1
            steps = total_steps(block["type"], hp, cfg["sizes"]["n_train"])
            assert steps == stages * cfg["budget_steps"], method


def test_tasks_are_fixed_and_well_formed() -> None:
    _needs_extra()
    tasks = _experiments_module("tasks")
    a, b = tasks.make_task("arith"), tasks.make_task("arith")
    assert a.train == b.train and a.validation == b.validation  # same seed, same data
    for row, held in zip(a.validation, a.heldout, strict=True):
        chosen = row["preferred_output"][0]["content"]
        assert (
            tasks.answer_of(chosen)
            == held["answer"]
            != tasks.answer_of(row["non_preferred_output"][0]["content"])
        )
    noisy = tasks.make_task("arith_noisy")
    wrong = sum(
        r["messages"][-1]["content"] != c["messages"][-1]["content"]
        for r, c in zip(noisy.train, a.train, strict=True)
    )
    assert wrong == round(0.3 * len(a.train))
    assert {h["messages"][-1]["content"] for h in a.heldout}.isdisjoint(
        {r["messages"][0]["content"] for r in a.train}
    )
    chat = tasks.make_task("chat")
    for row in chat.validation:
        assert row["input"]["messages"][0]["role"] == row["input"]["messages"][-1]["role"] == "user"
        assert row["preferred_output"][0]["content"] != row["non_preferred_output"][0]["content"]


@pytest.mark.slow
def test_smoke_grid_report_and_resume(tmp_path: Path) -> None:
    _needs_extra()
    home, results = tmp_path / "home", tmp_path / "results"
    # SPIN and IRFT differ from SFT only in their method block (checked above); RFT's jobs also hold a
    # reward-model checkpoint and DPO trains on the preference file, so those two run here.
    # spin_after_sft starts from the sft cell's fine-tuned model (`model: ft:...`).
    cells = ["arith:sft,rft,dpo,spin_after_sft", "chat:sft"]
    log = _run(
        [
            "experiments/run_grid.py",
            "--smoke",
            "--home",
            str(home),
            "--results",
            str(results),
            "--seeds",
            "0",
            "--cells",
            *cells,
        ],
        timeout=240,
    )
    assert "juice up stopped" in log
    for task, methods in (("arith", ["sft", "rft", "dpo", "spin_after_sft"]), ("chat", ["sft"])):
        base = json.loads((results / task / "base.eval.json").read_text())
        assert len(base["per_prompt"]) == 6
        for method in methods:
            run = json.loads((results / task / f"{method}-seed0.json").read_text())
            assert run["job"]["status"] == "succeeded", run["job"]
            assert run["job"]["metadata"]["method"] == method
            series = run["metrics"]["series"]["eval/logp_gap"]
            assert series["step"][-1] == run["config"]["budget_steps"] or task == "chat"
            assert run["events"] and run["checkpoints"] and run["wall_time_s"] is not None
            assert run["peak_memory"]["peak_rss_bytes"] > 0
            ev = json.loads((results / task / f"{method}-seed0.eval.json").read_text())
            assert len(ev["per_prompt"]) == 6 and 0.0 <= ev["win_rate_vs_base"] <= 1.0
            if task == "arith":  # (the tiny tokenizer makes chat pairs longer than smoke's max_seq_len)
                # the harness's log-prob gap of the downloaded checkpoint is the job's last eval/logp_gap
                assert ev["harness_logp"]["logp_gap"] == pytest.approx(series["value"][-1], abs=1e-3)
    assert "judge_check" in json.loads((results / "chat" / "base.eval.json").read_text())
    sft = json.loads((results / "arith" / "sft-seed0.json").read_text())["job"]
    second = json.loads((results / "arith" / "spin_after_sft-seed0.json").read_text())
    assert second["sft_stage"]["id"] == sft["id"]  # the sft cell's own job, not a second SFT run
    assert second["job"]["model"] == sft["fine_tuned_model"] and sft["fine_tuned_model"].startswith("ft:")
    assert second["job"]["method"]["type"] == "irft"

    # Resumed: every cell has its JSON, so nothing is submitted (no server at this URL is ever asked).
    before = {p: p.stat().st_mtime_ns for p in results.rglob("*.json")}
    log = _run(
        [
            "experiments/run_grid.py",
            "--smoke",
            "--api-url",
            "http://127.0.0.1:9/v1",
            "--api-key",
            "unused",
            "--base-model-dir",
            str(home / "models" / "tiny-llama"),
            "--results",
            str(results),
            "--seeds",
            "0",
            "--cells",
            *cells,
        ],
        timeout=120,
    )
    assert log.count("result exists, skipped") == 5
    assert {p: p.stat().st_mtime_ns for p in results.rglob("*.json")} == before

    doc, figures = tmp_path / "results.md", tmp_path / "figures"
    (doc).write_text(
        "old\n<!-- discussion:start (kept by experiments/report.py) -->\nMY TEXT\n<!-- discussion:end -->\n"
    )
    _run(
        ["experiments/report.py", "--results", str(results), "--figures", str(figures), "--doc", str(doc)],
        timeout=120,
    )
    for name in ("logp_gap.png", "win_rate.png", "cost.png"):
        assert (figures / name).read_bytes()[:4] == b"\x89PNG"
    text = doc.read_text()
    assert "SMOKE RUN" in text and "MY TEXT" in text and "## Discussion" in text
    assert "![logp_gap](figures/logp_gap.png)" in text  # relative: the link works in any clone
    assert "| RFT | 1/1 |" in text and "| DPO (pref. data) | 1/1 |" in text


def test_demo_compare_smoke(tmp_path: Path) -> None:
    """experiments/demo_compare.py (the README's SFT/IRFT/RFT comparison) on the tiny model: three jobs
    over HTTP that succeed with an `eval/logp_gap` curve each, and the base model's gap to read them by."""
    out = tmp_path / "compare.json"
    table = _run(
        ["experiments/demo_compare.py", "--smoke", "--home", str(tmp_path / "home"), "--out", str(out)],
        timeout=600,
    )
    record = json.loads(out.read_text())
    assert set(record["jobs"]) == {"sft", "irft", "rft"}
    assert record["base_logp_gap"] < 0  # chosen = rejected + a "Fresh answer:" prefix: more tokens to pay
    for name, job in record["jobs"].items():
        assert job["status"] == "succeeded", (name, job["error"])
        assert len(job["logp_gap"]) >= 2, name
        assert f"| {name} | succeeded |" in table


def test_win_rate_counts_the_same_reply_as_a_tie_whatever_its_float_noise() -> None:
    evaluate = _experiments_module("evaluate")
    base = [{"generated": "like what?", "relevance": 16.034480}, {"generated": "no", "relevance": 1.0}]
    mine = [
        {"generated": "like what? ", "relevance": 16.034454},  # same text, scored in another batch
        {"generated": "yes, in utah", "relevance": 2.0},
    ]
    assert evaluate.win_rate(mine, base, evaluate.win_key("chat")) == (0.5 + 1.0) / 2
    assert evaluate.win_key("arith") == "correct"
