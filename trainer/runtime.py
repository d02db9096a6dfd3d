"""Devices, precision, processes and the order in which examples are visited."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TypeVar

import torch

from trainer.config import TrainConfig
from trainer.data import IGNORE_INDEX, TokenizedExample

T = TypeVar("T")


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


COLLECTIVE_TIMEOUT_S = 6 * 3600


def make_accelerator(config: TrainConfig):
    """An Accelerator for this run.

    Gradient accumulation is done by the training loop itself (Accelerator keeps its default of 1):
    the token-mean loss must be divided by the token count of the whole window, and Accelerator's
    `backward` would divide by the number of micro-batches on top of that.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import InitProcessGroupKwargs

    device = resolve_device(config.device)
    precision = resolve_mixed_precision(config.mixed_precision, device)
    # Accelerate keeps precision in a process-wide singleton and refuses a second, different one.
    # A single-process worker runs several jobs in one process, so forget the previous job's
    # choice. Under `accelerate launch` (several processes) there is one run per process anyway.
    if PartialState._shared_state and PartialState().num_processes == 1:
        AcceleratorState._reset_state()
    # Ranks wait at barriers while rank 0 writes (and, under the worker, uploads) a checkpoint or
    # decodes a longer share: torch's default collective timeout (10 min on NCCL) would abort them.
    timeout = InitProcessGroupKwargs(timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    return Accelerator(cpu=device == "cpu", mixed_precision=precision, kwargs_handlers=[timeout])


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


def shard(items: Sequence[T], rank: int, world: int) -> list[T]:
    """This process's strided share of `items` (items rank, rank + world, ...)."""
    return list(items[rank::world])


def gather_shards(local: list[T], accelerator) -> list[T]:
    """The inverse of `shard` on every process: all processes' shares interleaved back into the order
    of the sequence that was sharded (item j came from process j % world, at position j // world)."""
    world = accelerator.num_processes
    if world == 1:
        return list(local)
    from accelerate.utils import gather_object

    return interleave(gather_object([local]))  # one list per process, in rank order


def interleave(parts: Sequence[Sequence[T]]) -> list[T]:
    """The sequence whose `shard`s over len(parts) processes are `parts`:

    >>> interleave([shard(range(7), rank, 3) for rank in range(3)])
    [0, 1, 2, 3, 4, 5, 6]
    """
    world, total = len(parts), sum(len(part) for part in parts)
    return [parts[j % world][j // world] for j in range(total)]


GRADIENT_BUCKET = 2**24  # elements per all-reduce (64 MiB of float32): bounds the extra memory


def sum_gradients(parameters: Sequence[torch.nn.Parameter], accelerator) -> None:
    """Sum the gradients of `parameters` over all processes, in place, in flat buckets of at most
    GRADIENT_BUCKET elements: for a model trained outside DDP (RFT's reward model, whose scoring calls
    its trunk and head directly, so DDP's forward hooks never run). Each process's loss must carry its
    share's weight of the global mean."""
    if accelerator.num_processes == 1:
        return
    import torch.distributed as dist

    grads = []
    for p in parameters:
        if p.requires_grad:
            if p.grad is None:  # unused this pass: another process may still have a gradient for it
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
    bucket: list[torch.Tensor] = []
    for i, g in enumerate(grads):
        bucket.append(g)
        if i == len(grads) - 1 or sum(b.numel() for b in bucket) + grads[i + 1].numel() > GRADIENT_BUCKET:
            flat = torch.cat([b.reshape(-1) for b in bucket])
            dist.all_reduce(flat)  # sum, in place
            offset = 0
            for b in bucket:
                b.copy_(flat[offset : offset + b.numel()].view_as(b))
                offset += b.numel()
            bucket = []
