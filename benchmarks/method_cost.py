"""Wall time and peak memory of one epoch of SFT, IRFT (T=1 = SPIN, T=3), RFT and IQL, measured in one run.

Each method trains in its own subprocess on the same model and data, so peak RSS (and peak CUDA
memory on a GPU) belongs to that method alone. Ratios are against SFT measured in the same run.

    .venv/bin/python benchmarks/method_cost.py                     # tiny model built locally, CPU
    .venv/bin/python benchmarks/method_cost.py --model ~/.juice/models/SmolLM2-135M-Instruct --examples 32

`--step-ratio` times one optimiser window's forward and backward instead (`token_training.train_step`,
no optimiser step, so every call sees the same weights) for IQL's loss against SFT's, in ONE process on
the SAME packed batches, the two methods' steps interleaved (and their order alternated) so that a
machine's changing load falls on both alike; it prints each method's median seconds per round and the
ratio. `--shape smollm2-135m` builds a randomly initialised model of SmolLM2-135M's shape (49k
vocabulary, 30 layers; nothing downloaded), where the LM head and its logsumexp weigh as in real use:

    nice -n 15 .venv/bin/python benchmarks/method_cost.py --step-ratio --shape smollm2-135m
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
    "iql": ("iql", {}),
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
    if method in ("irft", "rft"):
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


SHAPES = {  # LlamaConfig fields of SmolLM2-135M(-Instruct)
    "smollm2-135m": {
        "vocab_size": 49152,
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
    }
}


def step_ratio(model_dir: str | None, shape: str | None, examples: int, batch_size: int, rounds: int) -> None:
    """IQL's window step against SFT's on the same batches, interleaved, in this process (module docstring)."""
    import statistics

    import torch

    from trainer.callbacks import NullSink
    from trainer.config import TrainConfig
    from trainer.demonstrations import load_examples
    from trainer.methods import iql, sft
    from trainer.modeling import load_model_and_tokenizer
    from trainer.runtime import make_accelerator
    from trainer.testing import make_tiny_model, make_tiny_tokenizer
    from trainer.token_training import train_step

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.jsonl"
        write_data(data, examples)
        if model_dir is not None:
            model, tokenizer = load_model_and_tokenizer(model_dir)
        else:
            tokenizer = make_tiny_tokenizer()
            if shape is None:
                model = make_tiny_model(len(tokenizer))
            else:
                from transformers import LlamaConfig, LlamaForCausalLM

                torch.manual_seed(0)
                model = LlamaForCausalLM(LlamaConfig(**SHAPES[shape])).float()
        config = TrainConfig.from_dict(
            {"model": "m", "training_file": str(data), "output_dir": tmp, "method": "iql", "seed": 0}
        )
        rows = load_examples(str(data), "training_file", tokenizer, 256, NullSink())
        accelerator = make_accelerator(config)
        model = accelerator.prepare(model.to(accelerator.device))
        batches = [
            [rows[i : i + batch_size]] for i in range(0, len(rows), batch_size)
        ]  # one micro-batch each
        objectives = {"sft": sft.OBJECTIVE, "iql": iql.objective(config)}
        seconds: dict[str, list[float]] = {name: [] for name in objectives}

        def timed(name: str, window: list) -> float:
            if accelerator.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            train_step(model, accelerator, window, print, objectives[name])
            if accelerator.device.type == "cuda":
                torch.cuda.synchronize()
            model.zero_grad(set_to_none=True)
            return time.perf_counter() - start

        for name in objectives:  # warm-up: allocator, the packing check, kernels
            timed(name, batches[0])
        pairs: list[float] = []  # IQL / SFT of each window, the two timed back to back
        for r in range(rounds):
            totals = dict.fromkeys(objectives, 0.0)
            for b, window in enumerate(batches):
                order = list(objectives) if (r + b) % 2 == 0 else list(reversed(objectives))
                took = {name: timed(name, window) for name in order}
                pairs.append(took["iql"] / took["sft"])
                for name, t in took.items():
                    totals[name] += t
            for name, total in totals.items():
                seconds[name].append(total)
    tokens = sum(len(row.input_ids) for row in rows)
    trained = sum(row.num_trained_tokens for row in rows)
    print(
        f"model={model_dir or shape or 'tiny-llama (2 layers, hidden 32)'} examples={len(rows)} "
        f"({tokens} tokens, {trained} trained) batch={batch_size} windows/round={len(batches)} "
        f"rounds={rounds} device={accelerator.device} td_weight={config.hyperparameters.td_weight}"
    )
    for name, values in seconds.items():
        print(
            f"  {name:<4} median {statistics.median(values):.3f} s/round  rounds: "
            f"{', '.join(f'{v:.3f}' for v in values)}"
        )
    quartiles = statistics.quantiles(pairs, n=4)
    print(
        f"IQL / SFT step time: {statistics.median(pairs):.3f}x (median over {len(pairs)} windows, each "
        f"timed back to back; quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f}; ratio of total time "
        f"{sum(seconds['iql']) / sum(seconds['sft']):.3f}x)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model directory; default: the tiny test model built in a temp dir")
    p.add_argument("--examples", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=1, help="rounds of all cases; the median is reported")
    p.add_argument("--step-ratio", action="store_true", help="IQL's window step against SFT's, interleaved")
    p.add_argument("--rounds", type=int, default=5, help="--step-ratio: rounds over all batches")
    p.add_argument("--shape", choices=sorted(SHAPES), help="--step-ratio: a random model of this shape")
    p.add_argument("--child", nargs=3, metavar=("CASE", "MODEL", "DATA"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.step_ratio:
        step_ratio(args.model, args.shape, args.examples, args.batch_size, args.rounds)
        return
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
