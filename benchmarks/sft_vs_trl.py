"""Juice's SFT trainer against TRL's `SFTTrainer` on the same model, tokens, batches, order and masking.

    .venv/bin/python benchmarks/sft_vs_trl.py                       # the whole matrix (docs/benchmarks.md)
    .venv/bin/python benchmarks/sft_vs_trl.py --models tiny --data short --repeats 3
    .venv/bin/python benchmarks/sft_vs_trl.py --models smollm2-lora --data chat --steps 12

Each run trains in its own process: Juice through `trainer.run` (as a worker runs it), TRL through
`SFTTrainer` in two configurations, its defaults (padded batches) and its fastest correct one here
(`padding_free=True`: rows flattened with position ids; TRL's `packing` would merge rows into fixed-
length blocks, which changes the batches and so is not the same work). Both sides see the same data:
the rows are tokenised once with Juice's loader (`trainer.demonstrations.load_examples`, labels on the
assistant / completion tokens only), handed to TRL pre-tokenised as `input_ids` + `completion_mask`,
in Juice's seeded batch order with TRL's sampler made sequential; same learning rate, linear schedule,
no warm-up, AdamW, max grad norm, fp32 on CPU (bf16 on CUDA), one optimiser step per batch.

Figures per run: the median seconds per optimiser step after the first `WARMUP` steps (timed from
each side's own end-of-step hook), trained tokens/s (label tokens of those steps / their time), peak
memory of the process (RSS; CUDA peak on a GPU), and the per-step loss series. The summary gives the
median and spread (min-max) over repeats, Juice's throughput as a multiple of each TRL
configuration's, and the largest per-step loss difference between Juice and TRL's defaults (full
fine-tuning starts from the same weights and so should agree to float noise; LoRA's adapters are
initialised from each side's own random stream, so only the first step is exactly comparable).

Models: `tiny` is a ~4M-parameter Llama built from a config with the test tokenizer; `smollm2` is
SmolLM2-135M-Instruct from ~/.juice/models (or --smollm2), LoRA (r 8, all linear layers) or full.
Data: `short`, uniform prompt/completion rows of ~30 tokens; `chat`, chitchat-dataset conversations
through the chat template, half with a long context and a one-message reply, half with one message
and a long multi-message reply, so padding and prompt share vary from row to row.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIDES = ("juice", "trl", "trl_padding_free")
MODELS = ("tiny", "smollm2-lora", "smollm2-full")
DATA = ("short", "chat")
WARMUP = 3  # steps left out of the timing: allocator and kernel warm-up
SEED = 0


# ---------------------------------------------------------------------------------------------------
# Data and models


def short_rows(n: int) -> list[dict[str, str]]:
    """Uniform short prompt/completion rows (~30 tokens each) in the test tokenizer's words."""
    rng = random.Random(SEED)
    words = [
        "the",
        "cat",
        "dog",
        "sat",
        "on",
        "a",
        "mat",
        "and",
        "ran",
        "to",
        "big",
        "red",
        "house",
        "blue",
        "sky",
    ]
    rows = []
    for _ in range(n):
        prompt = " ".join(rng.choice(words) for _ in range(12))
        completion = " ".join(rng.choice(words) for _ in range(14))
        rows.append({"prompt": prompt, "completion": completion})
    return rows


def chat_rows(n: int) -> list[dict[str, Any]]:
    """Variable-length chats from chitchat-dataset (MIT): long context + short reply, and the reverse."""
    sys.path.insert(0, str(REPO / "experiments"))
    from tasks import chitchat_path

    data = json.loads(chitchat_path().read_text())
    rng = random.Random(SEED)
    keys = sorted(data)
    rng.shuffle(keys)
    rows: list[dict[str, Any]] = []
    for key in keys:
        msgs = [" ".join(" ".join(u["text"] for u in m).split()) for m in data[key]["messages"]]
        msgs = [m for m in msgs if m][:12]
        if len(msgs) < 6:
            continue
        if len(rows) % 2 == 0:  # long prompt (up to 9 turns of context), one-message reply
            cut = min(len(msgs) - 1, 9)
            cut -= 1 - cut % 2  # odd: the context starts and ends with a user turn
            context, reply = msgs[:cut], msgs[cut]
        else:  # one-message prompt, a reply made of the next 3-5 messages
            context, reply = msgs[:1], " ".join(msgs[1 : 1 + rng.randint(3, 5)])
        roles = ["user" if j % 2 == 0 else "assistant" for j in range(len(context))]
        messages = [{"role": r, "content": t} for r, t in zip(roles, context, strict=True)]
        rows.append({"messages": [*messages, {"role": "assistant", "content": reply}]})
        if len(rows) == n:
            return rows
    raise SystemExit(f"chitchat-dataset has fewer than {n} usable conversations")


def make_tiny_model(path: Path) -> Path:
    """~4M-parameter Llama (hidden 256, 4 layers) over the test tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainer.testing import make_tiny_tokenizer

    tokenizer = make_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    import torch

    torch.manual_seed(SEED)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# ---------------------------------------------------------------------------------------------------
# One run, in its own process


def _hyperparameters(args: dict[str, Any]) -> dict[str, Any]:
    return {
        "n_epochs": args["epochs"],
        "batch_size": args["batch"],
        "learning_rate": args["lr"],
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "max_seq_len": args["max_len"],
        "lora": {
            "enabled": args["lora"],
            "r": 8,
            "alpha": 16,
            "dropout": 0.05,
            "target_modules": "all-linear",
        },
        "logging_interval": 1,
        "checkpoint_interval": 0,
    }


def _peaks() -> dict[str, float | None]:
    import resource

    import torch

    cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_cuda_mib": cuda}


def run_juice(args: dict[str, Any], out: Path) -> dict[str, Any]:
    return timed_juice_run(args["model"], args["data"], out, "sft", _hyperparameters(args))


def timed_juice_run(model: str, data: str, out: Path, method: str, hp: dict[str, Any]) -> dict[str, Any]:
    """Train with `trainer.run`; the end time and loss of every logged step (logging_interval 1), and
    the start time (also used by dpo_vs_trl.py)."""
    import torch

    from trainer import TrainConfig, run
    from trainer.callbacks import NullSink

    ends: list[float] = []
    losses: list[float] = []

    class Timing(NullSink):
        def log_metrics(self, step, values):
            if "train/loss" in values:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                ends.append(time.perf_counter())
                losses.append(float(values["train/loss"]))

    config = TrainConfig.from_dict(
        {
            "model": model,
            "training_file": data,
            "output_dir": str(out),
            "method": method,
            "seed": SEED,
            "hyperparameters": hp,
        }
    )
    started = time.perf_counter()
    run(config, Timing())
    return {"ends": ends, "losses": losses, "started": started}


def juice_order(args: dict[str, Any]) -> list[tuple[list[int], list[int]]]:
    """Juice's tokenised rows in the order its batches visit them (epoch by epoch)."""
    from trainer.demonstrations import load_examples
    from trainer.modeling import load_tokenizer
    from trainer.runtime import epoch_order

    class Quiet:
        def log_event(self, *a, **k):
            pass

    tokenizer = load_tokenizer(args["model"])
    examples = load_examples(args["data"], "training_file", tokenizer, args["max_len"], Quiet())
    order = [i for epoch in range(args["epochs"]) for i in epoch_order(len(examples), SEED, epoch)]
    return [(examples[i].input_ids, examples[i].labels) for i in order]


def run_trl(args: dict[str, Any], out: Path, padding_free: bool) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from trainer.modeling import load_tokenizer

    rows = juice_order(args)
    dataset = Dataset.from_dict(
        {
            "input_ids": [ids for ids, _ in rows],
            "completion_mask": [[int(label != -100) for label in labels] for _, labels in rows],
        }
    )
    ends: list[float] = []
    losses: list[float] = []

    class Timing(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            ends.append(time.perf_counter())

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    class InOrder(SFTTrainer):
        def _get_train_sampler(self, *a, **k):  # Juice's order, already laid out in the dataset
            return SequentialSampler(self.train_dataset)

    cuda = torch.cuda.is_available()
    hp = _hyperparameters(args)
    cfg = SFTConfig(
        output_dir=str(out),
        per_device_train_batch_size=args["batch"],
        gradient_accumulation_steps=1,
        num_train_epochs=1,  # the dataset already holds every epoch, in order
        learning_rate=args["lr"],
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=SEED,
        bf16=cuda,
        use_cpu=not cuda,
        gradient_checkpointing=False,
        completion_only_loss=True,
        padding_free=padding_free,
        max_length=None if padding_free else args["max_len"],  # rows are already cut to max_len
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    peft_config = None
    if args["lora"]:
        from peft import LoraConfig

        lora = hp["lora"]
        peft_config = LoraConfig(
            r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"], target_modules="all-linear"
        )
    model = AutoModelForCausalLM.from_pretrained(args["model"], dtype=torch.float32)
    trainer = InOrder(
        model=model,
        args=cfg,
        train_dataset=dataset,
        processing_class=load_tokenizer(args["model"]),
        peft_config=peft_config,
        callbacks=[Timing()],
    )
    trainer.train()
    return {"ends": ends, "losses": losses}


def child(side: str, args: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as out:
        if side == "juice":
            result = run_juice(args, Path(out))
        else:
            result = run_trl(args, Path(out), padding_free=side == "trl_padding_free")
    rows = juice_order(args)
    trained = [sum(1 for t in labels[1:] if t != -100) for _, labels in rows]
    per_step = [sum(trained[s * args["batch"] : (s + 1) * args["batch"]]) for s in range(len(result["ends"]))]
    ends = result["ends"]
    step_s = [b - a for a, b in zip(ends[WARMUP:], ends[WARMUP + 1 :], strict=False)]
    timed_tokens = sum(per_step[WARMUP + 1 :])
    print(
        json.dumps(
            {
                "side": side,
                "steps": len(ends),
                "step_s": statistics.median(step_s),
                "tokens_per_s": timed_tokens / (ends[-1] - ends[WARMUP]),
                "losses": result["losses"],
                **_peaks(),
            }
        )
    )


# ---------------------------------------------------------------------------------------------------
# The matrix


def spawn(side: str, args: dict[str, Any], threads: int | None) -> dict[str, Any]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, __file__, "--child", side, json.dumps(args)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        print(out.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"{side} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def smollm2_dir(given: str | None) -> str:
    path = Path(given) if given else Path.home() / ".juice" / "models" / "SmolLM2-135M-Instruct"
    if not (path / "config.json").is_file():
        raise SystemExit(f"no SmolLM2-135M-Instruct at {path} (run scripts/run.sh once, or pass --smollm2)")
    return str(path)


def case_args(model: str, data: str, tmp: Path, cli: argparse.Namespace) -> dict[str, Any]:
    tiny = model == "tiny"
    if tiny:
        model_dir = tmp / "tiny-4m"
        if not model_dir.exists():
            make_tiny_model(model_dir)
        path = str(model_dir)
    else:
        path = smollm2_dir(cli.smollm2)
    batch = cli.batch or (8 if tiny else 4)
    steps = cli.steps or (200 if tiny else 24)
    epochs = 2
    n = steps * batch // epochs
    rows = short_rows(n) if data == "short" else chat_rows(n)
    file = tmp / f"{data}-{n}.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {
        "model": path,
        "data": str(file),
        "epochs": epochs,
        "batch": batch,
        "lr": 1e-4 if model == "smollm2-full" else 3e-4,
        "max_len": 128 if tiny else 512,
        "lora": model == "smollm2-lora",
    }


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.4g} [{min(values):.4g}-{max(values):.4g}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--data", nargs="+", choices=DATA, default=list(DATA))
    p.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, help="optimiser steps (default 200 tiny, 24 SmolLM2)")
    p.add_argument("--batch", type=int, help="batch size (default 8 tiny, 4 SmolLM2)")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS for every run")
    p.add_argument("--smollm2", help="SmolLM2-135M-Instruct directory")
    p.add_argument("--json", help="also write every run's figures here")
    p.add_argument("--child", nargs=2, metavar=("SIDE", "ARGS"), help=argparse.SUPPRESS)
    cli = p.parse_args()
    if cli.child:
        child(cli.child[0], json.loads(cli.child[1]))
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in cli.models:
            for data in cli.data:
                args = case_args(model, data, Path(tmp), cli)
                runs: dict[str, list[dict[str, Any]]] = {s: [] for s in cli.sides}
                for _ in range(cli.repeats):  # interleaved, so drift on a shared machine hits every side
                    for side in cli.sides:
                        runs[side].append(spawn(side, args, cli.threads))
                results.append({"model": model, "data": data, "args": args, "runs": runs})
                report(results[-1])
    if cli.json:
        Path(cli.json).write_text(json.dumps(results, indent=1) + "\n")


def report(case: dict[str, Any]) -> None:
    runs, args = case["runs"], case["args"]
    print(
        f"\n{case['model']} / {case['data']}: batch {args['batch']}, max_len {args['max_len']}, "
        f"{runs[next(iter(runs))][0]['steps']} steps, median [min-max] of {len(runs[next(iter(runs))])} runs"
    )
    print(
        "| side | s/step | trained tok/s | x TRL default | x TRL padding-free | peak RSS MiB | peak CUDA MiB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    med = {s: statistics.median(r["tokens_per_s"] for r in rs) for s, rs in runs.items()}
    for side, rs in runs.items():
        ratio = {b: f"{med[side] / med[b]:.2f}" if b in med else "-" for b in ("trl", "trl_padding_free")}
        cuda = [r["peak_cuda_mib"] for r in rs if r["peak_cuda_mib"] is not None]
        print(
            f"| {side} | {spread([r['step_s'] for r in rs])} | {spread([r['tokens_per_s'] for r in rs])} "
            f"| {ratio['trl']} | {ratio['trl_padding_free']} | {spread([r['peak_rss_mib'] for r in rs])} "
            f"| {spread(cuda) if cuda else '-'} |"
        )
    if "juice" in runs and "trl" in runs:
        a, b = runs["juice"][0]["losses"], runs["trl"][0]["losses"]
        diffs = [abs(x - y) for x, y in zip(a, b, strict=False)]
        print(
            f"loss: Juice {a[0]:.4f} -> {a[-1]:.4f}, TRL {b[0]:.4f} -> {b[-1]:.4f}; step 1 differs by "
            f"{diffs[0]:.2e}, max per-step difference {max(diffs):.3g} over {len(diffs)} steps"
        )


if __name__ == "__main__":
    main()
