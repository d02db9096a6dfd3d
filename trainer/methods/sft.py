"""Supervised fine-tuning: token-level NLL on the trained response tokens (docs/methods.md §2).

The algorithm as shipped:

1. Load the base model (with a fresh LoRA adapter when enabled) and its tokenizer; tokenise the
   training file (`data.py`: labels only on assistant / completion tokens).
2. Each epoch visits the examples in a permutation seeded by `seed + epoch`. A micro-batch is
   `batch_size` examples per process; `gradient_accumulation_steps` micro-batches make one optimiser
   step, so a step sees batch_size * gradient_accumulation_steps * num_processes examples.
3. Loss = sum of token NLL over the window / number of trained tokens in the window across all
   processes: TRL's `num_items_in_batch` reduction, a token-level mean (docs/methods.md §2.2, §6.5).
4. Clip the gradient norm to max_grad_norm, AdamW step, HF scheduler step (linear warmup of
   warmup_steps or ceil(warmup_ratio * total_steps) steps).
5. Between optimiser steps (`loop.due`): log every logging_interval steps and at the end of each
   epoch (means since the last log),
   evaluate on the validation file (`evaluation.py`: eval/loss, and eval/logp_gap on a preference
   file, as every method does), checkpoint, and poll `sink.should_stop()`.

Steps 1, 2 and 4-5 are the loop every token-level method shares (`trainer/token_training.py`, IQL's
too); this file is SFT's loss in it, step 3.

Choices and deviations:

- Padding-free micro-batches (`packing.py`): the rows are concatenated with per-row position ids and
  the LM head and loss run on the trained positions only; examples longer than max_seq_len keep
  their start. The rows are not regrouped by length, so the batch order is the seeded permutation.
- Weights train in float32; mixed precision (bf16 by default on CUDA) only autocasts the forward.
- Checkpoints store weights in the base model's dtype. A full fine-tune of a bf16 base that is
  resumed therefore restarts from bf16-rounded weights (optimiser state is exact); resume is exact
  for float32 bases and for LoRA, whose adapter is saved in float32.
- Multi-process runs use DDP through Accelerate; FSDP / DeepSpeed sharded checkpoints are not
  supported yet (the main process saves the full state dict).
"""

from __future__ import annotations

import torch

from trainer.callbacks import Sink
from trainer.config import TrainConfig
from trainer.logprobs import token_logps
from trainer.losses import sft_nll
from trainer.packing import PackedBatch
from trainer.result import RunResult
from trainer.token_training import PAIR_MAX_PROMPT_LEN, TokenObjective, train_tokens

__all__ = ["OBJECTIVE", "PAIR_MAX_PROMPT_LEN", "train"]


def nll(
    logits: torch.Tensor, batch: PackedBatch, num_items: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """This pack's share of the window's token-mean NLL; no further metric sums."""
    return sft_nll(token_logps(logits, batch.targets), num_items=num_items), logits.new_zeros(0)


OBJECTIVE = TokenObjective("sft", nll)


def train(config: TrainConfig, sink: Sink) -> RunResult:
    """Run SFT as configured, reporting to `sink`; resume from `config.resume_from` when set."""
    return train_tokens(config, sink, OBJECTIVE)
