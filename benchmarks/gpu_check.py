"""The GPU check of issue 12, one script: bf16 SFT and IRFT-pair steps on a ~0.5B-parameter Llama built
from a config, Juice next to TRL on the same model, tokens and order, with tokens/s, peak CUDA memory
and model FLOPs utilisation; then one epoch of SFT, IRFT T=1 and RFT (full fine-tuning, so RFT's frozen
reference sits beside the policy) for the method cost ratios on the GPU.

    .venv/bin/python benchmarks/gpu_check.py                 # a few minutes on an H100 / H200
    .venv/bin/python benchmarks/gpu_check.py --steps 8       # quicker
    .venv/bin/python benchmarks/gpu_check.py --json $OUT/gpu_check.json

Without a CUDA device it prints why and exits 0 (CI never has one). `--dry-run` runs every part on the
CPU with a ~1M-parameter model and a nominal 1 TFLOP/s peak, to check the script itself (a test does). Every run is its own process
(`sft_vs_trl.spawn`, `dpo_vs_trl.spawn`, `method_cost`), so each peak is that run's alone.

MFU = (6 N + 12 L H S) * input tokens/s / peak bf16 FLOP/s, with N the parameter count (all of them,
embeddings included: the LM head is a real matmul here), L layers, H hidden size, S the mean sequence
length (the attention term), and the peak from the device's name (H100/H200 SXM 989 TFLOP/s dense bf16,
A100 312; else --peak-tflops). Input tokens per trained token come from the data, as both trainers
push every input token through forward and backward.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}
SEED = 0

# ~0.5B parameters: 24 blocks of hidden 1024 (GQA 16/8 heads), MLP 4096, untied 49152-token embeddings.
CONFIG = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "vocab_size": 49152,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
}


DRY_RUN_CONFIG = {
    **CONFIG,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 4096,
}


def build_model(path: Path, shape: dict[str, Any]) -> tuple[Path, int]:
    """The Llama of `shape` over the test tokenizer (its ids are a prefix of the vocabulary), in bf16."""
    import torch

    from trainer.testing import make_llama_dir

    return make_llama_dir(path, seed=SEED, dtype=torch.bfloat16, **shape)


def chat_like_rows(n: int, kind: str, scale: float = 1.0) -> list[dict[str, Any]]:
    """Variable-length prompt/completion rows in the test tokenizer's words: half long prompts with short
    answers, half the other way round (as sft_vs_trl's chat data); `kind` "pairs" adds a rejected answer."""
    from sft_vs_trl import short_rows

    words = " ".join(r["prompt"] + " " + r["completion"] for r in short_rows(64)).split()
    rng = random.Random(SEED)

    def text(k: int) -> str:
        return " ".join(rng.choice(words) for _ in range(k))

    rows: list[dict[str, Any]] = []
    for i in range(n):
        prompt_len = max(1, int(rng.randint(200, 400) * scale))
        answer_len = max(1, int(rng.randint(10, 40) * scale))
        if i % 2:
            prompt_len, answer_len = answer_len, prompt_len
        row: dict[str, Any] = {"prompt": text(prompt_len), "completion": text(answer_len)}
        if kind == "pairs":
            row = {"prompt": row["prompt"], "chosen": row["completion"], "rejected": text(answer_len)}
        rows.append(row)
    return rows


def input_per_trained(path: Path, model: str, max_len: int) -> tuple[float, float]:
    """(input tokens per trained token, mean sequence length) of a prompt/completion file."""
    from trainer.demonstrations import load_examples
    from trainer.modeling import load_tokenizer

    class Quiet:
        def log_event(self, *a: Any, **k: Any) -> None:
            pass

    examples = load_examples(str(path), "training_file", load_tokenizer(model), max_len, Quiet())
    inputs = sum(len(e.input_ids) for e in examples)
    trained = sum(sum(1 for t in e.labels[1:] if t != -100) for e in examples)
    return inputs / max(trained, 1), inputs / len(examples)


def peak_flops(cli: argparse.Namespace) -> float:
    import torch

    if cli.dry_run:
        return 1e12
    if cli.peak_tflops:
        return cli.peak_tflops * 1e12
    name = torch.cuda.get_device_name()
    for key, tflops in PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    raise SystemExit(f"unknown peak bf16 FLOP/s for {name!r}: pass --peak-tflops")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=16, help="optimiser steps per SFT / pair run")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--examples", type=int, default=64, help="rows of the method-cost epoch")
    p.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, if not known by name")
    p.add_argument("--json", help="also write every figure here")
    p.add_argument("--dry-run", action="store_true", help="a tiny model on the CPU: checks the script")
    cli = p.parse_args()

    import torch

    scale = 0.05 if cli.dry_run else 1.0  # rows of ~10-20 words instead of ~200-400
    if cli.dry_run:
        cli.steps, cli.examples, cli.batch = min(cli.steps, 6), min(cli.examples, 4), min(cli.batch, 2)
    elif not torch.cuda.is_available():
        print("gpu_check: skipped, no CUDA device (it needs one; CI has none)")
        return 0
    import dpo_vs_trl
    import method_cost
    import sft_vs_trl

    peak = peak_flops(cli)
    shape = DRY_RUN_CONFIG if cli.dry_run else CONFIG
    device = "cpu (dry run)" if cli.dry_run else torch.cuda.get_device_name()
    figures: dict[str, Any] = {"device": device, "peak_tflops": peak / 1e12}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        started = time.perf_counter()
        model, n_params = build_model(tmp / "llama", shape)
        figures["parameters"] = n_params
        print(
            f"{device}: model of {n_params / 1e6:.0f}M parameters built in {time.perf_counter() - started:.0f} s"
        )

        # --- SFT: Juice vs TRL's defaults and padding-free --------------------------------------------
        n = cli.steps * cli.batch // 2  # two epochs
        sft_data = tmp / "sft.jsonl"
        sft_data.write_text("".join(json.dumps(r) + "\n" for r in chat_like_rows(n, "sft", scale)))
        ratio, mean_len = input_per_trained(sft_data, str(model), 1024)
        flops_per_token = 6 * n_params + 12 * shape["num_hidden_layers"] * shape["hidden_size"] * mean_len
        args = {
            "model": str(model),
            "data": str(sft_data),
            "epochs": 2,
            "batch": cli.batch,
            "lr": 1e-5,
            "max_len": 1024,
            "lora": False,
        }
        print("\n| SFT bf16 | s/step | trained tok/s | x TRL default | peak CUDA GiB | MFU |")
        print("| --- | --- | --- | --- | --- | --- |")
        sft: dict[str, dict[str, Any]] = {}
        for side in sft_vs_trl.SIDES:
            sft[side] = run = sft_vs_trl.spawn(side, args, None)
            run["mfu"] = run["tokens_per_s"] * ratio * flops_per_token / peak
        for side, run in sft.items():
            print(
                f"| {side} | {run['step_s']:.3f} | {run['tokens_per_s']:.0f} | "
                f"{run['tokens_per_s'] / sft['trl']['tokens_per_s']:.2f} | {(run['peak_cuda_mib'] or 0) / 1024:.1f} | "
                f"{run['mfu']:.1%} |"
            )
        figures["sft"] = sft

        # --- IRFT's pair step vs TRL's DPOTrainer -------------------------------------------------------
        pair_data = tmp / "pairs.jsonl"
        pair_data.write_text("".join(json.dumps(r) + "\n" for r in chat_like_rows(n, "pairs", scale)))
        pair_args = {**args, "data": str(pair_data), "lr": 1e-6}
        print("\n| pair step bf16 | s/step | pairs/s | x DPOTrainer | peak CUDA GiB |")
        print("| --- | --- | --- | --- | --- |")
        pairs = {side: dpo_vs_trl.spawn(side, pair_args) for side in dpo_vs_trl.SIDES}
        for side, run in pairs.items():
            print(
                f"| {side} | {run['step_s']:.3f} | {run['pairs_per_s']:.1f} | "
                f"{run['pairs_per_s'] / pairs['trl']['pairs_per_s']:.2f} | "
                f"{(run.get('peak_cuda_mib') or 0) / 1024:.1f} |"
            )
        figures["pairs"] = pairs

        # --- one epoch of each method (full fine-tuning) ------------------------------------------------
        epoch = method_cost.run_cases(
            str(model), cli.examples, batch_size=cli.batch, max_new_tokens=8 if cli.dry_run else 64
        )
        sft_s = epoch[0]["wall_s"]
        print("\n| one epoch, bf16 | wall s | x SFT | peak CUDA GiB |")
        print("| --- | --- | --- | --- |")
        for row in epoch:
            print(
                f"| {row['case']} | {row['wall_s']:.1f} | {row['wall_s'] / sft_s:.2f} | "
                f"{(row['peak_cuda_mib'] or 0) / 1024:.1f} |"
            )
        figures["method_cost"] = epoch
    figures["median_sft_mfu"] = statistics.median(r["mfu"] for r in sft.values())
    if cli.json:
        Path(cli.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
