"""Wall time and peak memory of one epoch of SFT, IRFT (T=1 = SPIN, T=3) and RFT, measured in one run.

Each method trains in its own subprocess on the same model and data, so peak RSS (and peak CUDA
memory on a GPU) belongs to that method alone. Ratios are against SFT measured in the same run.

    .venv/bin/python benchmarks/method_cost.py                     # tiny model built locally, CPU
    .venv/bin/python benchmarks/method_cost.py --model ~/.juice/models/SmolLM2-135M-Instruct --examples 32
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CASES = {
    "sft": ("sft", {}),
    "irft_T1": ("irft", {"outer_iterations": 1}),
    "irft_T3": ("irft", {"outer_iterations": 3, "schedule": "stagewise"}),
    "rft": ("rft", {"samples_per_prompt": 2}),
}


def write_data(path: Path, n: int) -> None:
    from tests.helpers import chat_jsonl

    path.write_bytes(chat_jsonl(n))


def child(case: str, model: str, data: str, out: str, max_new_tokens: int, batch_size: int) -> None:
    import resource

    import torch

    from trainer import TrainConfig, run

    method, extra = CASES[case]
    hp = {"n_epochs": 1, "batch_size": batch_size, "learning_rate": 1e-4, "max_seq_len": 256, **extra}
    if method != "sft":
        # Decoding batches are the default's (generation.batch_size prompts), as a user's job has them.
        hp["generation"] = {"max_new_tokens": max_new_tokens, "temperature": 1.0 if method == "rft" else 0.0}
    config = TrainConfig.from_dict(
        {
            "model": model,
            "training_file": data,
            "output_dir": out,
            "method": method,
            "seed": 0,
            "hyperparameters": hp,
        }
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = run(config)
    wall = time.perf_counter() - start
    peak_cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    print(
        json.dumps(
            {
                "case": case,
                "wall_s": wall,
                "steps": result.global_step,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "peak_cuda_mib": peak_cuda,
            }
        )
    )


def run_cases(
    model: str | None, examples: int, *, batch_size: int, max_new_tokens: int, repeats: int = 1
) -> list[dict]:
    """One epoch of every case in its own process, SFT first, `repeats` rounds of all cases (interleaved,
    so drift in the machine's speed hits every case alike); each case's row has the median wall time
    and the list of all of them. `model` None builds the tiny test model."""
    with tempfile.TemporaryDirectory() as tmp:
        if model is None:
            from trainer.testing import make_tiny_model_dir

            model = str(make_tiny_model_dir(Path(tmp) / "tiny"))
        data = Path(tmp) / "train.jsonl"
        write_data(data, examples)
        runs: dict[str, list[dict]] = {case: [] for case in CASES}
        for case in [c for _ in range(repeats) for c in CASES]:  # round after round of all cases
            cmd = [
                sys.executable,
                __file__,
                "--child",
                case,
                model,
                str(data),
                "--max-new-tokens",
                str(max_new_tokens),
                "--batch-size",
                str(batch_size),
            ]
            out = subprocess.run(
                cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
            )
            if out.returncode != 0:
                print(out.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{case} failed")
            runs[case].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = []
    for done in runs.values():
        done.sort(key=lambda r: r["wall_s"])
        middle = done[(len(done) - 1) // 2]  # the median; of an even count, the lower one
        walls = [r["wall_s"] for r in done]
        rows.append({**middle, "walls_s": walls, "peak_rss_mib": max(r["peak_rss_mib"] for r in done)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model directory; default: the tiny test model built in a temp dir")
    p.add_argument("--examples", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=1, help="rounds of all cases; the median is reported")
    p.add_argument("--child", nargs=3, metavar=("CASE", "MODEL", "DATA"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as out:
            child(*args.child, out, args.max_new_tokens, args.batch_size)
        return
    rows = run_cases(
        args.model,
        args.examples,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        repeats=args.repeats,
    )
    base = rows[0]
    print(
        f"model={args.model or 'tiny-llama (2 layers, hidden 32)'} examples={args.examples} "
        f"batch={args.batch_size} max_new_tokens={args.max_new_tokens} epochs=1 repeats={args.repeats}"
    )
    print(
        f"{'method':<10}{'steps':>7}{'median s':>10}{'x SFT':>8}{'range s':>16}{'peak RSS MiB':>15}"
        f"{'x SFT':>8}{'peak CUDA MiB':>15}"
    )
    for r in rows:
        cuda = f"{r['peak_cuda_mib']:.0f}" if r["peak_cuda_mib"] is not None else "-"
        spread = f"{r['walls_s'][0]:.1f}-{r['walls_s'][-1]:.1f}"
        print(
            f"{r['case']:<10}{r['steps']:>7}{r['wall_s']:>10.2f}{r['wall_s'] / base['wall_s']:>8.2f}{spread:>16}"
            f"{r['peak_rss_mib']:>15.0f}{r['peak_rss_mib'] / base['peak_rss_mib']:>8.2f}{cuda:>15}"
        )


if __name__ == "__main__":
    main()
