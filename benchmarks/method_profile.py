"""Where one epoch of RFT, IRFT or SFT spends its time: seconds per phase, from timers around the
trainer's own functions (model loading, generation, reward scoring, reward step, reference pass,
policy forward/backward, optimiser step, validation, checkpoint writes), in one run.

    .venv/bin/python benchmarks/method_profile.py --method rft
    .venv/bin/python benchmarks/method_profile.py --method irft --model ~/.juice/models/SmolLM2-135M-Instruct

Same data and settings as benchmarks/method_cost.py (its chats, batch 4, full fine-tuning, 32 new
tokens, RFT k=2, the default decoding batch). The timers wrap module functions, so nested phases (the reward step calls the reward
scorer) are reported both ways: "reward step" includes its "reward scoring" share.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

SECONDS: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def timed(owner: Any, name: str, label: str) -> None:
    """Replace owner.name by a wrapper adding its wall time to SECONDS[label]."""
    fn: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SECONDS[label] += time.perf_counter() - start
            CALLS[label] += 1

    setattr(owner, name, wrapper)


def instrument(method: str) -> None:
    from trainer import evaluation, loop, pair_training, token_training
    from trainer.methods import irft, rft

    timed(loop, "optimizer_step", "optimiser step")
    timed(loop, "save", "checkpoint writes")
    loading = "model loading (policy, reference, reward)"
    for owner, name in (
        (loop, "load_model_and_tokenizer"),
        (rft, "load_model_and_tokenizer"),
        (rft, "load_reward_model"),
    ):
        timed(owner, name, loading)
    timed(loop, "evaluate", "validation")  # every method validates through loop.validate
    if method == "sft":
        timed(token_training, "train_step", "forward + backward")
    elif method == "rft":
        models = rft._Models
        timed(models, "sample", "generation")
        timed(models, "_scores", "reward scoring")
        timed(models, "reward_phase", "reward step (incl. its generation and scoring)")
        timed(models, "_ref_logps", "reference log-probs")
        timed(models, "_policy_logps", "policy log-probs for the KL term (no grad)")
        timed(models, "policy_step", "policy step (incl. generation, scoring, reference)")
    else:
        timed(irft, "generate_responses", "generation")
        timed(pair_training, "score_reference", "reference log-probs")
        timed(pair_training, "_train_step", "pair forward + backward")
    del evaluation


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=["rft", "irft", "sft"], default="rft")
    p.add_argument("--outer-iterations", type=int, default=1)
    p.add_argument("--model", help="model directory; default: the tiny test model")
    p.add_argument("--examples", type=int, default=24)
    args = p.parse_args()
    from method_cost import write_data

    from trainer import TrainConfig, run

    instrument(args.method)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from trainer.testing import make_tiny_model_dir

            model = str(make_tiny_model_dir(Path(tmp) / "tiny"))
        data = Path(tmp) / "train.jsonl"
        write_data(data, args.examples)
        hp: dict[str, Any] = {"n_epochs": 1, "batch_size": 4, "learning_rate": 1e-4, "max_seq_len": 256}
        if args.method != "sft":
            hp["outer_iterations"] = args.outer_iterations
            hp["generation"] = {"max_new_tokens": 32, "temperature": 1.0 if args.method == "rft" else 0.0}
        if args.method == "rft":
            hp["samples_per_prompt"] = 2
        config = TrainConfig.from_dict(
            {
                "model": model,
                "training_file": str(data),
                "output_dir": str(Path(tmp) / "out"),
                "method": args.method,
                "seed": 0,
                "hyperparameters": hp,
            }
        )
        start = time.perf_counter()
        run(config)
        wall = time.perf_counter() - start
    print(f"{args.method} T={args.outer_iterations} on {args.model or 'tiny-llama'}: {wall:.1f} s in all")
    for label, seconds in sorted(SECONDS.items(), key=lambda kv: -kv[1]):
        print(f"  {label:<52}{seconds:>8.1f} s {seconds / wall:>6.1%}  ({CALLS[label]} calls)")


if __name__ == "__main__":
    main()
