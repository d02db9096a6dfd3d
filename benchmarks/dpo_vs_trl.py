"""The pairwise step (IRFT's, and DPO's: `trainer/pair_training.py`) against TRL's `DPOTrainer` on the same pairs.

    .venv/bin/python benchmarks/dpo_vs_trl.py                        # SmolLM2-135M-Instruct, LoRA and full
    .venv/bin/python benchmarks/dpo_vs_trl.py --models tiny --steps 40 --repeats 3

IRFT's step and DPO's are one code path (a (prompt, first, second) pair, a cached pi_ref, the logistic
loss); only where the second response comes from differs, so this times it as Juice's `dpo` method on
pre-made pairs, where TRL has a trainer for the same work. Each run is its own process. Both sides get
the same tokens: the pairs are read with Juice's loader (`evaluation.load_preference_pairs`) and handed
to TRL as `prompt_ids` / `chosen_ids` / `rejected_ids` (its tokenising step bypassed), in Juice's
seeded order with TRL's sampler made sequential; same beta (0.1, sigmoid loss), learning rate, linear
schedule, batch of pairs and step count, fp32 on CPU (bf16 on CUDA). TRL runs its default (a
reference forward every step: a frozen copy for full fine-tuning, the adapter-disabled model for LoRA)
and `precompute_ref_log_probs=True` (reference log-probs computed once before training, as Juice does).

Figures: median seconds per optimiser step after the first WARMUP steps, pairs/s, peak RSS (CUDA peak
on a GPU), the reference pass time where it is separate, and the per-step loss series (TRL's `loss`
against Juice's `train/loss`; full fine-tuning starts from the same weights, so they should agree).
Pairs: chitchat-dataset contexts, chosen = the real next message, rejected = another conversation's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from sft_vs_trl import WARMUP, chat_rows, make_tiny_model, smollm2_dir, spread, timed_juice_run  # noqa: E402

SIDES = ("juice", "trl", "trl_precomputed")
MODELS = ("tiny", "smollm2-lora", "smollm2-full")
SEED = 0
BETA = 0.1


def preference_rows(n: int) -> list[dict[str, Any]]:
    """OpenAI-format preference rows: a chat's context, its real reply and another chat's reply."""
    chats = chat_rows(n)
    rows = []
    for i, chat in enumerate(chats):
        other = chats[(i + 1) % n]["messages"][-1]
        rows.append(
            {
                "input": {"messages": chat["messages"][:-1]},
                "preferred_output": [chat["messages"][-1]],
                "non_preferred_output": [other],
            }
        )
    return rows


def _hp(args: dict[str, Any]) -> dict[str, Any]:
    return {
        "n_epochs": args["epochs"],
        "batch_size": args["batch"],
        "learning_rate": args["lr"],
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "max_seq_len": args["max_len"],
        "beta": BETA,
        # Dropout off on both sides (TRL's DPOTrainer turns it off by default).
        "lora": {
            "enabled": args["lora"],
            "r": 8,
            "alpha": 16,
            "dropout": 0.0,
            "target_modules": "all-linear",
        },
        "logging_interval": 1,
        "checkpoint_interval": 0,
    }


def juice_pairs(args: dict[str, Any]) -> list[tuple[list[int], list[int], list[int]]]:
    """Juice's (prompt, chosen, rejected) ids in the order its batches visit them."""
    from trainer.config import TrainConfig
    from trainer.evaluation import load_preference_pairs
    from trainer.modeling import load_tokenizer
    from trainer.runtime import epoch_order

    hp = TrainConfig.from_dict(
        {"model": "m", "training_file": "t", "output_dir": "o", "method": "dpo", "hyperparameters": _hp(args)}
    ).hyperparameters
    triples = load_preference_pairs(
        args["data"], load_tokenizer(args["model"]), hp.max_seq_len, hp.max_prompt_len
    )
    assert triples
    order = [i for epoch in range(args["epochs"]) for i in epoch_order(len(triples), SEED, epoch)]
    return [triples[i] for i in order]


def run_juice(args: dict[str, Any], out: Path) -> dict[str, Any]:
    return timed_juice_run(args["model"], args["data"], out, "dpo", _hp(args))


def run_trl(args: dict[str, Any], out: Path, precompute: bool) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from trainer.modeling import load_tokenizer

    pairs = juice_pairs(args)
    dataset = Dataset.from_dict(
        {
            "prompt_ids": [p for p, _, _ in pairs],
            "chosen_ids": [c for _, c, _ in pairs],
            "rejected_ids": [r for _, _, r in pairs],
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

    class SameData(DPOTrainer):
        def _prepare_dataset(self, dataset, *a, **k):  # already Juice's token ids: nothing to tokenise
            return dataset

        def _get_train_sampler(self, *a, **k):  # Juice's order, already laid out in the dataset
            return SequentialSampler(self.train_dataset)

    cuda = torch.cuda.is_available()
    hp = _hp(args)
    cfg = DPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=args["batch"],
        gradient_accumulation_steps=1,
        num_train_epochs=1,  # the dataset already holds every epoch, in order
        learning_rate=args["lr"],
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=BETA,
        loss_type=["sigmoid"],
        max_length=None,  # Juice's loader already cut every pair
        precompute_ref_log_probs=precompute,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=SEED,
        bf16=cuda,
        use_cpu=not cuda,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    peft_config = None
    if args["lora"]:
        from peft import LoraConfig

        lora = hp["lora"]
        peft_config = LoraConfig(
            r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=0.0, target_modules="all-linear"
        )
    model = AutoModelForCausalLM.from_pretrained(args["model"], dtype=torch.float32)
    started = time.perf_counter()
    trainer = SameData(
        model=model,
        args=cfg,
        train_dataset=dataset,
        processing_class=load_tokenizer(args["model"]),
        peft_config=peft_config,
        callbacks=[Timing()],
    )
    trainer.train()
    return {"ends": ends, "losses": losses, "started": started}


def child(side: str, args: dict[str, Any]) -> None:
    import resource

    import torch

    with tempfile.TemporaryDirectory() as out:
        if side == "juice":
            result = run_juice(args, Path(out))
        else:
            result = run_trl(args, Path(out), precompute=side == "trl_precomputed")
    ends = result["ends"]
    step_s = [b - a for a, b in zip(ends[WARMUP:], ends[WARMUP + 1 :], strict=False)]
    print(
        json.dumps(
            {
                "side": side,
                "steps": len(ends),
                "step_s": statistics.median(step_s),
                "pairs_per_s": args["batch"] * len(step_s) / (ends[-1] - ends[WARMUP]),
                # set-up to the first step's end: model copies and, where precomputed, the reference pass
                "to_first_step_s": ends[0] - result["started"],
                "losses": result["losses"],
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20
                if torch.cuda.is_available()
                else None,
            }
        )
    )


def spawn(side: str, args: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}
    out = subprocess.run(
        [sys.executable, __file__, "--child", side, json.dumps(args)], capture_output=True, text=True, env=env
    )
    if out.returncode != 0:
        print(out.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"{side} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=MODELS, default=["smollm2-lora", "smollm2-full"])
    p.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--steps", type=int, help="optimiser steps (default 40 tiny, 12 SmolLM2)")
    p.add_argument("--batch", type=int, default=4, help="pairs per step")
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
            tiny = model == "tiny"
            path = str(make_tiny_model(Path(tmp) / "tiny")) if tiny else smollm2_dir(cli.smollm2)
            steps = cli.steps or (40 if tiny else 12)
            n = steps * cli.batch // 2
            data = Path(tmp) / f"pairs-{n}.jsonl"
            data.write_text("".join(json.dumps(r) + "\n" for r in preference_rows(n)))
            args = {
                "model": path,
                "data": str(data),
                "epochs": 2,
                "batch": cli.batch,
                "lr": 5e-6 if model == "smollm2-full" else 5e-5,
                "max_len": 128 if tiny else 512,
                "lora": model == "smollm2-lora",
            }
            runs: dict[str, list[dict[str, Any]]] = {s: [] for s in cli.sides}
            for _ in range(cli.repeats):  # interleaved, so drift on a shared machine hits every side
                for side in cli.sides:
                    runs[side].append(spawn(side, args))
            results.append({"model": model, "args": args, "runs": runs})
            report(model, args, runs)
    if cli.json:
        Path(cli.json).write_text(json.dumps(results, indent=1) + "\n")


def report(model: str, args: dict[str, Any], runs: dict[str, list[dict[str, Any]]]) -> None:
    first = next(iter(runs.values()))
    print(
        f"\n{model}: {args['batch']} pairs per step, max_len {args['max_len']}, {first[0]['steps']} steps, "
        f"median [min-max] of {len(first)} runs"
    )
    print(
        "| side | s/step | pairs/s | x TRL default | x TRL precomputed | set-up to step 1 s | peak RSS MiB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    med = {s: statistics.median(r["pairs_per_s"] for r in rs) for s, rs in runs.items()}
    for side, rs in runs.items():
        ratio = {b: f"{med[side] / med[b]:.2f}" if b in med else "-" for b in ("trl", "trl_precomputed")}
        print(
            f"| {side} | {spread([r['step_s'] for r in rs])} | {spread([r['pairs_per_s'] for r in rs])} "
            f"| {ratio['trl']} | {ratio['trl_precomputed']} | {spread([r['to_first_step_s'] for r in rs])} "
            f"| {spread([r['peak_rss_mib'] for r in rs])} |"
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
