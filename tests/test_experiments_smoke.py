"""The experiment harnesses of issues 9 and 23 (experiments/) end to end on the tiny test model: a real
`juice up` on the embedded default started by run_grid.py / run_grid23.py itself, jobs over HTTP
(issue 23's: SFT to a dev plateau with select_checkpoint, then second stages from its `ft:` model),
checkpoint downloads, the held-out evaluation, resuming, and report.py's / report23.py's figures and
doc. About two minutes of two CPU cores.

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


def test_win_rate_counts_the_same_reply_as_a_tie_whatever_its_float_noise() -> None:
    evaluate = _experiments_module("evaluate")
    base = [{"generated": "like what?", "relevance": 16.034480}, {"generated": "no", "relevance": 1.0}]
    mine = [
        {"generated": "like what? ", "relevance": 16.034454},  # same text, scored in another batch
        {"generated": "yes, in utah", "relevance": 2.0},
    ]
    assert evaluate.win_rate(mine, base, evaluate.win_key("chat")) == (0.5 + 1.0) / 2
    assert evaluate.win_key("arith") == "correct"


# ---------------------------------------------------------------------------------------------------
# Issue 23's grid: second stages from a plateaued SFT model (run_grid23.py, cells23.py, report23.py)


def test_issue23_cells_validate_and_keep_the_budget() -> None:
    """Every cell's method block is a valid request of the trainer's spec (unknown keys are errors, so a
    renamed option fails here), spells out each option the cell tests, and takes its budget: the SFT
    plateau's steps, or the one budget every second stage and the control share."""
    from trainer.spec.hyperparameters import HYPERPARAMETERS
    from trainer.spec.plan import total_steps

    cells23 = _experiments_module("cells23")
    for smoke in (False, True):
        cfg = cells23.grid_config(smoke)
        for task in cells23.TASKS:
            for name in cells23.cells_for(task):
                cell = cells23.CELLS[name]
                block = cells23.method_body(name, task, cfg)
                given = block[block["type"]]["hyperparameters"]
                hp = HYPERPARAMETERS[block["type"]].model_validate(given)
                n_train = cfg["sizes"][task]["n_train"]
                assert total_steps(block["type"], hp, n_train) == cells23.expected_steps(name, cfg), name
                assert given["select_checkpoint"] == ("best_eval_loss" if name == "sft_plateau" else "last")
                if cell.nll_weight is not None:  # the anchor is explicit, never a default
                    assert given["nll_weight"] == cell.nll_weight, name
                if block["type"] == "irft":
                    assert {"samples_per_prompt", "truncated_negatives", "generation"} <= set(given)
                    assert given["outer_iterations"] == (1 if cell.kind == "spin" else 3)
                if block["type"] == "rft":
                    assert {
                        "missing_eos_penalty",
                        "kl_target",
                        "whiten_advantages",
                        "reward_normalization",
                    } <= set(given)
                if cell.from_sft:
                    assert given["learning_rate"] == cfg["second_stage"]["learning_rate"]
        # every job evaluates its last step, so a "last" job's dev loss is that of the model it hands back
        for stage in ("plateau", "second_stage", "from_base"):
            steps = cfg["plateau_steps"] if stage == "plateau" else cfg["budget_steps"]
            assert steps % cfg[stage]["eval_interval"] == 0, stage
    full = cells23.grid_config(False)
    assert full["budget_steps"] == 21 and full["plateau_steps"] == 126
    assert "dpo_anchor" in cells23.cells_for("chat") and "dpo_anchor" not in cells23.cells_for("arith")
    # the queue's order: priority 1 (the control and the anchored arms) before the un-anchored ones
    assert cells23.cells_for("arith", {1}) == [
        "sft_plateau",
        "sft_more",
        "spin_anchor",
        "irft_anchor",
        "rft_anchor",
    ]


@pytest.mark.slow
def test_issue23_data_has_a_disjoint_dev_split_and_keeps_issue9s_rows() -> None:
    _needs_extra()
    tasks = _experiments_module("tasks")
    for name in ("arith", "arith_noisy", "chat"):
        nine, new = tasks.make_task(name, tasks.FULL), tasks.make_task(name, tasks.sizes23(name))
        assert new.train == nine.train and not nine.dev  # issue 9's data is unchanged
        assert [h["messages"] for h in new.heldout[:40]] == [h["messages"] for h in nine.heldout]
        sizes = tasks.sizes23(name)
        assert (len(new.train), len(new.heldout), len(new.dev)) == (
            sizes.n_train,
            sizes.n_heldout,
            sizes.n_dev,
        )

        def key(messages: list[dict]) -> str:  # a prompt's text (training rows mark context weights)
            return json.dumps([(m["role"], m["content"]) for m in messages])

        train = {key(r["messages"][:-1]) for r in new.train}
        held = {key(h["messages"]) for h in new.heldout}
        dev = {key(r["input"]["messages"]) for r in new.dev}
        assert len(dev) == len(new.dev) and dev.isdisjoint(train) and dev.isdisjoint(held)
        assert all(r["preferred_output"] != r["non_preferred_output"] for r in new.dev)
        assert new.dev == tasks.make_task(name, tasks.sizes23(name)).dev  # fixed seed, same rows
    assert tasks.sizes23("arith").n_heldout >= 200
    clean, noisy = (
        tasks.make_task("arith", tasks.sizes23("arith")),
        tasks.make_task("arith_noisy", tasks.sizes23("arith")),
    )
    wrong = [
        tasks.answer_of(n["preferred_output"][0]["content"])
        != tasks.answer_of(c["preferred_output"][0]["content"])
        for n, c in zip(noisy.dev, clean.dev, strict=True)
    ]
    assert sum(wrong) == noisy.info["noisy_dev_demonstrations"] == round(0.3 * len(noisy.dev))


def test_chat_judge_per_token_divides_by_the_reply_tokens() -> None:
    evaluate = _experiments_module("evaluate")

    class Judge:  # a reply's log-prob: -1 per token under its own context, -2 under any other
        def scores(self, items):
            return [
                (-(1.0 if ctx[0]["content"] == "own" else 2.0) * len(r.split()), len(r.split()))
                for ctx, r in items
            ]

    heldout = [
        {
            "messages": [{"role": "user", "content": "own"}],
            "contrast_contexts": [[{"role": "user", "content": "x"}]] * 2,
        }
    ]
    short, long = (evaluate.relevance(Judge(), heldout, [reply])[0] for reply in ("a b", "a b c d e f"))
    assert (short["relevance"], long["relevance"]) == (2.0, 6.0)  # the sum grows with length ...
    assert short["relevance_per_token"] == long["relevance_per_token"] == 1.0  # ... per token it does not
    assert evaluate.win_key("chat", per_token=True) == "relevance_per_token"
    assert evaluate.binomial_se(0.3, 200) == pytest.approx(0.0324, abs=1e-4)


def test_issue23_verdicts_are_paired_by_seed() -> None:
    report23 = _experiments_module("report23")

    def run(cell: str, seed: int, acc: float, loss: float) -> dict:
        return {
            "method": cell,
            "seed": seed,
            "job": {"status": "succeeded"},
            "eval": {"accuracy": acc},
            "selection": {"eval_loss": loss},
        }

    # the seeds' starting points differ a lot; the method adds 0.02 +- 0.005 on each: paired, it helps
    base = [0.10, 0.30, 0.20, 0.40, 0.25]
    bump = [0.02, 0.025, 0.015, 0.02, 0.022]
    data = {
        "runs": {
            "arith": {
                "sft_more": [run("sft_more", s, a, 1.0) for s, a in enumerate(base)],
                "spin_anchor": [
                    run("spin_anchor", s, a + b, 1.1) for s, (a, b) in enumerate(zip(base, bump, strict=True))
                ],
                "irft_anchor": [run("irft_anchor", s, a + (-1) ** s * 0.01, 1.0) for s, a in enumerate(base)],
            }
        },
        "base": {},
        "reference": {},
    }
    diffs = [d for _, d in report23.paired(data, "arith", "spin_anchor", report23.primary)]
    assert diffs == pytest.approx(bump)
    assert report23.verdict(diffs) == "**helps**"
    losses = [d for _, d in report23.paired(data, "arith", "spin_anchor", report23.dev_loss)]
    assert report23.verdict(losses, higher_is_better=False) == "**hurts**"  # a higher dev loss
    mixed = [d for _, d in report23.paired(data, "arith", "irft_anchor", report23.primary)]
    assert report23.verdict(mixed) == "no detectable difference at 95%"
    assert report23.verdict(diffs[:1]) == "too few paired seeds"
    table = report23.verdict_table(data, "arith")
    assert "| → SPIN + NLL | 5 |" in table and "**helps**" in table


def test_issue23_never_writes_into_issue9s_results(tmp_path: Path) -> None:
    run_grid23 = _experiments_module("run_grid23")
    with pytest.raises(SystemExit):
        run_grid23.check_results_folder(EXPERIMENTS / "results")
    (tmp_path / "EXPERIMENT").write_text("issue9\n")
    with pytest.raises(SystemExit):
        run_grid23.check_results_folder(tmp_path)
    run_grid23.check_results_folder(tmp_path / "new")
    assert (tmp_path / "new" / "EXPERIMENT").read_text() == "issue23\n"


def test_issue23_a_job_no_worker_takes_is_cancelled_not_awaited_for_ever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker whose broker connection died leaves `juice up` running and the grid's job queued: the
    harness cancels it after QUEUED_LIMIT_S and fails the call (the queue retries with a fresh Juice)."""
    import argparse

    run_grid23 = _experiments_module("run_grid23")
    monkeypatch.setattr(run_grid23, "QUEUED_LIMIT_S", {"smoke": 0.5, "full": 0.5})
    monkeypatch.setattr(run_grid23.time, "sleep", lambda _s: None)

    class Api:
        def __init__(self) -> None:
            self.cancelled: list[str] = []

        def job(self, job_id: str) -> dict:
            return {"id": job_id, "status": "queued"}

        def cancel(self, job_id: str) -> dict:
            self.cancelled.append(job_id)
            return {"id": job_id, "status": "cancelled"}

    api = Api()
    grid = run_grid23.Grid23(
        argparse.Namespace(smoke=True, results=Path("unused")), api, Path("unused"), None, {}
    )
    with pytest.raises(run_grid23.WorkerStalled):
        grid.wait({"id": "ftjob-1", "status": "queued"})
    assert api.cancelled == ["ftjob-1"]
