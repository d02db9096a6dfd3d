"""SFT vs IRFT vs RFT on the README's demo data, through Juice's API, and the README's dashboard shots.

    .venv/bin/python experiments/demo_compare.py [--screenshots docs/images] [--home /tmp/juice-demo]

Starts `juice up` (as `run_grid.py` does), uploads `examples/demo_train.jsonl` and
`examples/demo_validation.jsonl`, runs LoRA SFT, IRFT (T=2) and RFT (k=2) of SmolLM2-135M-Instruct with
the same shared hyperparameters, and scores the base model's held-out gap with the trainer's own
`eval/logp_gap` code, so each job's curve can be read against it. Writes
`experiments/results/demo/compare.json` and prints one table; exits 1 when a job did not succeed or
ended with a gap below the base model's (issue 9's bar). `--smoke` runs the same on the tiny test model
and fails only on a failed job.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

import run_grid  # noqa: E402  # the harness's `juice up` and API client

SHARED = {
    "n_epochs": 2,
    "batch_size": 4,
    "learning_rate": 3e-4,
    "max_seq_len": 256,
    "lora": {"enabled": True, "r": 16, "alpha": 32},
    "eval_interval": 2,
    "checkpoint_interval": 1_000_000,
    "logging_interval": 1,
}
GENERATION = {"max_new_tokens": 24}
METHODS: dict[str, dict[str, Any]] = {
    "sft": {"type": "sft", "sft": {"hyperparameters": SHARED}},
    "irft": {
        "type": "irft",
        "irft": {"hyperparameters": {**SHARED, "outer_iterations": 2, "generation": GENERATION}},
    },
    "rft": {
        "type": "rft",
        "rft": {"hyperparameters": {**SHARED, "samples_per_prompt": 2, "generation": GENERATION}},
    },
}


def base_gap(model_dir: Path, validation: Path) -> float:
    """The untrained model's `eval/logp_gap` on the validation pairs, by the trainer's own code."""
    from trainer.evaluation import load_preference_pairs, logp_gap
    from trainer.methods.sft import PAIR_MAX_PROMPT_LEN
    from trainer.modeling import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(model_dir))
    pairs = load_preference_pairs(str(validation), tokenizer, SHARED["max_seq_len"], PAIR_MAX_PROMPT_LEN)
    if not pairs:
        raise SystemExit(f"{validation}: not a preference file")
    return logp_gap(model, tokenizer, pairs, batch_size=SHARED["batch_size"])["eval/logp_gap"]


def gap_curve(api: run_grid.Api, job_id: str) -> list[tuple[int, float]]:
    series = api.series(job_id)["series"].get("eval/logp_gap") or {"step": [], "value": []}
    return list(zip(series["step"], series["value"], strict=True))


def run(api: run_grid.Api, model: str, files: dict[str, str]) -> dict[str, dict[str, Any]]:
    jobs = {
        name: api.create_job(
            {
                "model": model,
                "training_file": files["train"],
                "validation_file": files["validation"],
                "suffix": f"demo-{name}",
                "seed": 0,
                "method": body,
            }
        )
        for name, body in METHODS.items()
    }
    out: dict[str, dict[str, Any]] = {}
    for name, job in jobs.items():  # one worker: they run in turn
        while job["status"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(5)
            job = api.job(job["id"])
        run_grid.log(f"demo/{name}: {job['status']} ({job['id']})")
        out[name] = {
            "job_id": job["id"],
            "status": job["status"],
            "error": job.get("error"),
            # started -> finished: the jobs queue behind each other on the one worker
            "wall_time_s": run_grid._diff(job.get("finished_at"), job.get("started_at")),
            "logp_gap": gap_curve(api, job["id"]),
            "warnings": [e["message"] for e in api.events(job["id"]) if e["level"] == "warn"],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", type=Path, help="JUICE_HOME of the `juice up` this starts (default: temp)")
    p.add_argument("--screenshots", type=Path, help="also capture the README's dashboard shots here")
    p.add_argument("--out", type=Path, default=HERE / "results" / "demo" / "compare.json")
    p.add_argument("--smoke", action="store_true", help="the tiny test model: seconds")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, run_grid._exit_on_signal)  # so `finally` stops the `juice up`
    home = args.home or Path(tempfile.mkdtemp(prefix="juice-demo-"))
    juice = run_grid.JuiceUp(home.resolve(), smoke=args.smoke, source=REPO)
    model_dir = juice.prepare_model()
    train, validation = REPO / "examples" / "demo_train.jsonl", REPO / "examples" / "demo_validation.jsonl"
    base = base_gap(model_dir, validation)
    try:
        key = juice.start()
        api = run_grid.Api(juice.url, key)
        files = {"train": api.upload(train), "validation": api.upload(validation)}
        results = run(api, model_dir.name, files)
        record = {"model": model_dir.name, "base_logp_gap": base, "method": METHODS, "jobs": results}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")  # before the shots, which may fail
        if args.screenshots:
            subprocess.run(
                [
                    sys.executable,
                    str(REPO / "scripts" / "dashboard_screenshots.py"),
                    *("--url", juice.url.removesuffix("/v1"), "--key", key),
                    *("--job", results["irft"]["job_id"], "--metric", "eval/logp_gap"),
                    *("--compare", ",".join(r["job_id"] for r in results.values())),
                    *("--out", str(args.screenshots)),
                ],
                check=True,
            )
    finally:
        juice.stop()
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)
    print(f"| method | status | eval/logp_gap first -> last | base model {base:.2f} | wall s |")
    print("|---|---|---|---|---|")
    bad = []
    for name, r in results.items():
        curve = r["logp_gap"]
        first, last = (curve[0][1], curve[-1][1]) if curve else (float("nan"), float("nan"))
        verdict = "above" if last >= base else "BELOW"
        print(f"| {name} | {r['status']} | {first:.2f} -> {last:.2f} | {verdict} | {r['wall_time_s']} |")
        if r["status"] != "succeeded" or not last >= base:
            bad.append(name)
    if bad:
        print(f"not met (failed, or a final gap below the base model's): {', '.join(bad)}")
    # The tiny smoke model checks the pipeline, not the methods: only a failed job fails it.
    if args.smoke:
        return 1 if any(r["status"] != "succeeded" for r in results.values()) else 0
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
