"""Juice trainer: data -> tokens -> losses -> training loop -> checkpoints. A pure library.

It imports nothing from the service (api, worker, juice) and no web, database or queue package;
`tests/trainer/test_import_boundaries.py` enforces this. One entry point:

    from trainer import TrainConfig, run
    result = run(TrainConfig(model="path/or/hub-id", training_file="train.jsonl", output_dir="out"))

`run` dispatches on `config.method` through the plain dict `METHODS`.

Where things are:

    spec/             torch-free: hyperparameters, data formats, step plan (the API imports only this)
    config.py         TrainConfig / SFTHyperparameters / LoraSettings, load_config (YAML + key=value)
    data.py           JSONL (chat, prompt/completion, preference) -> TokenizedExample(input_ids, labels)
    collators.py      CompletionCollator; the -100 label convention
    logprobs.py       per_token_logps, sequence_logps, token_logps (pure)
    packing.py        padding-free / shared-prompt batches, label_logits: the LM head on labels only
    losses.py         every method's loss, pure: sft_nll, irft_loss, td_regularised_nll, rloo_* ...
    optim.py          AdamW groups, HF scheduler, warmup arithmetic
    runtime.py        device, mixed precision, Accelerator, per-epoch data order and sharding
    modeling.py       load_model_and_tokenizer (+ LoRA), import_gguf
    checkpointing.py  atomic checkpoints (layout in its docstring), find_latest_complete, verify_checkpoint
    callbacks.py      Sink protocol, NullSink, PrintSink, metric names
    loop.py           what every method's loop shares: open_run (policy + resume), restore_position,
                      due (log/eval/checkpoint rule), MetricAccumulator, optimizer_step, save
    demonstrations.py training/validation file -> examples or (prompt, response) pairs, with data events
    evaluation.py     every method's validation metrics: eval/loss, eval/logp_gap on preference files
    pairs.py          prompt/response split, truncation, pair_rows, pair_logps; generation.py sampling
    token_training.py the loop on demonstrations with a per-token loss: SFT's and IQL's
    methods/sft.py    SFT: the token-mean NLL in that loop
    methods/iql.py    IQL: TD-regularised MLE (inverse soft-Q learning), the NLL plus a TD regulariser
    pair_training.py       the loop on (prompt, first, second) pairs vs cached pi_ref: IRFT's and DPO's
    methods/irft.py   IRFT (Algorithm 2; SPIN = 1 outer iteration)
    methods/dpo.py    DPO on a preference file (OpenAI's dpo method)
    methods/rft.py    RFT (Algorithm 1): reward model + RLOO policy update; reward_model.py its scorer
    methods/reinforcement.py  OpenAI's reinforcement: a grader's reward, GRPO/RLOO with KL to the start;
                      prompts.py its data, grading.py its rewards and graded evaluation
    cli.py            python -m trainer --config run.yaml [key=value ...] | import-gguf FILE DEST
    testing.py        make_tiny_model_dir(path, seed=0) for tests elsewhere
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainer.callbacks import NullSink, PrintSink, Sink
    from trainer.config import LoraSettings, SFTHyperparameters, TrainConfig, load_config
    from trainer.result import RunResult

__all__ = [
    "METHODS",
    "LoraSettings",
    "NullSink",
    "PrintSink",
    "RunResult",
    "SFTHyperparameters",
    "Sink",
    "TrainConfig",
    "load_config",
    "run",
]

# Names resolved on first use (PEP 562), so that `import trainer.spec` (the API does) never loads torch.
_LAZY = {
    "NullSink": "trainer.callbacks",
    "PrintSink": "trainer.callbacks",
    "Sink": "trainer.callbacks",
    "LoraSettings": "trainer.config",
    "SFTHyperparameters": "trainer.config",
    "TrainConfig": "trainer.config",
    "load_config": "trainer.config",
    "RunResult": "trainer.result",
    "sft": "trainer.methods.sft",
    "irft": "trainer.methods.irft",
    "rft": "trainer.methods.rft",
    "dpo": "trainer.methods.dpo",
    "iql": "trainer.methods.iql",
    "reinforcement": "trainer.methods.reinforcement",
}


def __getattr__(name: str) -> Any:
    if name == "METHODS":
        from trainer.methods import dpo, iql, irft, reinforcement, rft, sft

        return {
            "sft": sft.train,
            "rft": rft.train,
            "irft": irft.train,
            "dpo": dpo.train,
            "iql": iql.train,
            "reinforcement": reinforcement.train,
        }
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return module if _LAZY[name].startswith("trainer.methods.") else getattr(module, name)
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_LAZY})


def run(config: TrainConfig, sink: Sink | None = None) -> RunResult:
    """Train with the method named by `config.method`, reporting to `sink` (default: NullSink)."""
    from trainer.callbacks import NullSink

    methods = __getattr__("METHODS")
    if config.method not in methods:
        raise ValueError(f"method: expected one of {', '.join(methods)}, got {config.method!r}")
    return methods[config.method](config, sink or NullSink())
