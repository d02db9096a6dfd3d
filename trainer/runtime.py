"""Devices, precision, processes and the order in which examples are visited."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trainer.config import TrainConfig
from trainer.data import IGNORE_INDEX, TokenizedExample


def resolve_device(device: str) -> str:
    """'cpu' or 'cuda' from the config's auto | cpu | cuda."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: expected an available CUDA device, got 'cuda' with none present")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_mixed_precision(mixed_precision: str, device: str) -> str:
    """'auto' is bf16 on a CUDA device that supports it and 'no' otherwise (CPU included)."""
    if mixed_precision == "auto":
        return "bf16" if device == "cuda" and torch.cuda.is_bf16_supported() else "no"
    if mixed_precision == "fp16" and device == "cpu":
        raise ValueError("mixed_precision: expected no or bf16 on CPU, got 'fp16'")
    return mixed_precision


def make_accelerator(config: TrainConfig):
    """An Accelerator for this run.

    Gradient accumulation is done by the training loop itself (Accelerator keeps its default of 1):
    the token-mean loss must be divided by the token count of the whole window, and Accelerator's
    `backward` would divide by the number of micro-batches on top of that.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    device = resolve_device(config.device)
    precision = resolve_mixed_precision(config.mixed_precision, device)
    # Accelerate keeps precision in a process-wide singleton and refuses a second, different one.
    # A single-process worker runs several jobs in one process, so forget the previous job's
    # choice. Under `accelerate launch` (several processes) there is one run per process anyway.
    if PartialState._shared_state and PartialState().num_processes == 1:
        AcceleratorState._reset_state()
    return Accelerator(cpu=device == "cpu", mixed_precision=precision)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """A permutation of range(n) that depends only on (seed, epoch), the same on every process,
    so a resumed run can skip exactly the batches it had already consumed."""
    generator = torch.Generator().manual_seed(seed + epoch)
    return torch.randperm(n, generator=generator).tolist()


def optimizer_windows(order: Sequence[int], micro_batch: int, accumulation: int) -> list[list[list[int]]]:
    """Split an epoch's order into optimiser steps, each a list of (global) micro-batches."""
    micro = [list(order[i : i + micro_batch]) for i in range(0, len(order), micro_batch)]
    return [micro[i : i + accumulation] for i in range(0, len(micro), accumulation)]


def local_examples(
    examples: Sequence[TokenizedExample], global_batch: Sequence[int], rank: int, world: int
) -> list[TokenizedExample]:
    """This process's share of a global micro-batch (strided). A process left with nothing (a last
    batch smaller than the number of processes) gets one fully masked example, so that every
    process runs the same number of forward/backward passes, which DDP requires; it adds no loss."""
    mine = [examples[i] for i in global_batch[rank::world]]
    if mine:
        return mine
    first = examples[global_batch[0]]
    return [TokenizedExample(first.input_ids, [IGNORE_INDEX] * len(first.labels))]
