"""Issue 23's harness (run_grid23.py, report23.py) end to end on the tiny model. Split from tests/test_experiments_smoke.py so that
the harness smokes, the suite's longest tests, run in parallel processes (scripts/test.sh)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_experiments_smoke import _needs_extra, _run


@pytest.mark.slow
def test_issue23_smoke_grid_report_and_resume(tmp_path: Path) -> None:
    """Issue 23's pipeline on the tiny model: SFT to its dev plateau with select_checkpoint
    best_eval_loss, second stages from its fine-tuned model (`model: ft:...`) with and without the
    anchor, the evaluation of exactly the checkpoint each job hands back, the reference row, resuming,
    and report23.py's page and figures."""
    _needs_extra()
    home, results = tmp_path / "home", tmp_path / "results23"
    cells = {
        "arith": ["sft_plateau", "sft_more", "spin_anchor", "irft_noanchor", "rft_anchor"],
        "chat": ["sft_plateau", "sft_more", "dpo_anchor"],
    }
    args = ["--smoke", "--results", str(results), "--seeds", "0", "--cells"]
    args += [f"{task}:{','.join(names)}" for task, names in cells.items()]
    log = _run(["experiments/run_grid23.py", "--home", str(home), "--prune-checkpoints", *args], timeout=540)
    assert "juice up stopped" in log and "WARNING" not in log  # every job kept its step budget

    for task, names in cells.items():
        plateau = json.loads((results / task / "sft_plateau-seed0.json").read_text())
        for name in names:
            run = json.loads((results / task / f"{name}-seed0.json").read_text())
            assert run["job"]["status"] == "succeeded", (task, name, run["job"]["error"])
            assert run["job"]["metadata"]["experiment"] == "issue23"
            assert run["budget"]["total_steps"] == run["budget"]["expected_steps"]
            assert run["dev_best"]["step"] is not None and run["source"]["commit"]
            ev = json.loads((results / task / f"{name}-seed0.eval.json").read_text())
            # the harness judged the checkpoint the job handed back: its own dev loss at that step
            assert ev["step"] == run["selection"]["selected_step"]
            assert ev["harness_dev"]["chosen_nll"] == pytest.approx(run["selection"]["eval_loss"], abs=1e-3)
            assert 0.0 <= ev["win_rate_vs_base"] <= 1.0
            if task == "chat":
                assert all("relevance_per_token" in row for row in ev["per_prompt"])
            # judged checkpoints are pruned from the home, but the plateau's selected one (the start
            # of every second stage, which therefore ran after the pruning)
            stored = home / "artifacts" / "jobs" / run["job"]["id"] / "checkpoints"
            kept = sorted(int(d.name.removeprefix("step_")) for d in stored.iterdir())
            assert kept == ([run["selection"]["selected_step"]] if name == "sft_plateau" else [])
            if name == "sft_plateau":
                assert run["selection"]["select_checkpoint"] == "best_eval_loss"
                assert run["selection"]["selected_step"] == run["job"]["selected_step"]
                assert run["selection"]["agrees_with_series"] is True
                continue
            # a second stage: from the same seed's plateau job's fine-tuned model, keeping its last step
            assert run["job"]["model"] == plateau["job"]["fine_tuned_model"]
            assert run["stage"]["id"] == plateau["job"]["id"] and run["stage"]["resubmitted"] is False
            assert run["stage"]["eval_loss"] == plateau["selection"]["eval_loss"]
            hp = run["config"]["request"]["method"][run["job"]["method"]["type"]]["hyperparameters"]
            assert hp["select_checkpoint"] == "last" and run["selection"]["selected_step"] == 3
        reference = json.loads((results / task / "reference.eval.json").read_text())
        assert reference["model"] == "human reference answers" and len(reference["per_prompt"]) == 6
    assert json.loads((results / "arith" / "reference.eval.json").read_text())["accuracy"] == 1.0
    spin = json.loads((results / "arith" / "spin_anchor-seed0.json").read_text())
    assert (
        "negatives/dropped_truncated" in spin["metrics"]["series"]
        and "train/nll" in spin["metrics"]["series"]
    )
    irft = json.loads((results / "arith" / "irft_noanchor-seed0.json").read_text())
    assert irft["config"]["request"]["method"]["irft"]["hyperparameters"]["nll_weight"] == 0.0
    assert (
        "judge_pair_accuracy_per_token"
        in json.loads((results / "chat" / "base.eval.json").read_text())["judge_check"]
    )

    # Resumed: every cell has its JSON, so nothing is submitted (no server at this URL is ever asked).
    before = {p: p.stat().st_mtime_ns for p in results.rglob("*.json")}
    log = _run(
        [
            "experiments/run_grid23.py",
            "--api-url",
            "http://127.0.0.1:9/v1",
            "--api-key",
            "unused",
            "--base-model-dir",
            str(home / "models" / "tiny-llama"),
            *args,
        ],
        timeout=120,
    )
    assert log.count("result exists, skipped") == sum(map(len, cells.values()))
    assert {p: p.stat().st_mtime_ns for p in results.rglob("*.json")} == before

    doc, figures = tmp_path / "results.md", tmp_path / "figures23"
    doc.write_text(
        "<!-- issue23-discussion:start (kept by experiments/report23.py) -->\nTEXT 23\n<!-- issue23-discussion:end -->\n"
        "<!-- discussion:start (kept by experiments/report.py) -->\nTEXT 9\n<!-- discussion:end -->\n"
    )
    _run(
        [
            "experiments/report23.py",
            "--results",
            str(results),
            "--figures",
            str(figures),
            "--results9",
            str(tmp_path / "no-issue9-results"),
            "--doc",
            str(doc),
        ],
        timeout=120,
    )
    for name in ("plateau.png", "dev_curves.png", "paired.png"):
        assert (figures / name).read_bytes()[:4] == b"\x89PNG"
    text = doc.read_text()
    assert "SMOKE RUN" in text and "TEXT 23" in text and "TEXT 9" in text
    assert text.index("TEXT 23") < text.index("Earlier: the from-base grid") < text.index("TEXT 9")
    assert (
        "## Verdicts" in text
        and "| → SPIN + NLL | 1 |" in text
        and "| → DPO + NLL (pref. data) | 1 |" in text
    )
    assert "![paired](figures23/paired.png)" in text and "| human references |" in text
