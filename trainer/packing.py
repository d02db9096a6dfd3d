"""Padding-free batches: rows flattened into one sequence, logits computed only where a label is.

Every trained forward in `trainer/` (SFT's step, IRFT/SPIN/DPO's pair step, RFT's policy and reference
log-probs, validation) scores a list of rows, each a `TokenizedExample` (labels = IGNORE_INDEX where not
scored, collators.py). Padding them to a rectangle and projecting every position onto the vocabulary
wastes most of the work on chat data: prompts are often most of the tokens, and SmolLM2's LM head is a
576 x 49k matmul plus a 49k-wide log-softmax per position. So:

1. `pack` concatenates the rows into a (1, N) sequence with `position_ids` restarting at 0 for each
   row. Transformers' mask code (`masking_utils.find_packed_sequence_indices`, used when
   `attention_mask` is None, there is no cache and position ids are given) turns that into a
   block-diagonal causal mask, so no row attends to another; rotary positions restart per row too.
2. The forward passes `logits_to_keep` = the 1-D index of the positions t whose next token (t + 1 in
   the same row) is a label, so the LM head runs on those L positions only: (1, L, V) logits instead of
   (B, T, V). The model's own head code runs (logit soft-capping, scaling), and the call goes through
   the DDP wrapper, so gradient synchronisation is unchanged.
3. `logprobs.token_logps` normalises those L logits in float32 and picks the target: the same numbers as
   `logprobs.per_token_logps` on the padded batch, in label order; `row_sums` adds them up per row.

A pack holds at most `PACK_TOKENS` tokens (a longer row is a pack of its own; under DDP a micro-batch
is always one pack, so every rank runs the same number of forwards through the wrapper): with SDPA or eager
attention the block-diagonal mask is dense, N x N, so attention cost grows with N^2 rather than with
the sum of squared row lengths. 4096 keeps that mask at 16 MB and, for the micro-batches this service
runs, packs a micro-batch into one forward; flash-attention kernels take the same input as varlen.

Not every architecture builds its mask from position ids. `label_logits` therefore checks once per
model, on the first batch of two or more rows, that the packed forward gives the padded forward's
log-probs; if it does not, it falls back to padded batches (still with the loss on label positions
only) and says so in a warning event.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from trainer.data import IGNORE_INDEX, TokenizedExample
from trainer.logprobs import token_logps

PACK_TOKENS = 4096
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackedBatch:
    """Rows of one forward, flattened. N = total tokens, L = scored positions, R = rows.

    input_ids, position_ids: (1, N); logit_positions: (L,) flat index of each scored position;
    targets: (L,) the label at logit_positions + 1; row_of_target: (L,) which row each target is in;
    lengths: the R row lengths, in order (a row may have no target).
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    logit_positions: torch.Tensor
    targets: torch.Tensor
    row_of_target: torch.Tensor
    lengths: tuple[int, ...]

    @property
    def n_rows(self) -> int:
        return len(self.lengths)

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def n_targets(self) -> int:
        return int(self.targets.shape[0])

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(
            self.input_ids.to(device),
            self.position_ids.to(device),
            self.logit_positions.to(device),
            self.targets.to(device),
            self.row_of_target.to(device),
            self.lengths,
        )

    def padded(self, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The same rows right-padded: (input_ids, attention_mask) (R, T), and for each target the
        (R*T)-flat index of its logit position, (L,). For the fallback forward."""
        width = max(self.lengths) if self.lengths else 1
        starts = torch.tensor([0, *self.lengths], dtype=torch.long).cumsum(0)[:-1]  # (R,)
        ids = torch.full((self.n_rows, width), pad_token_id, dtype=torch.long, device=self.input_ids.device)
        mask = torch.zeros((self.n_rows, width), dtype=torch.long, device=self.input_ids.device)
        flat = self.input_ids[0]
        for r, (start, n) in enumerate(zip(starts.tolist(), self.lengths, strict=True)):
            ids[r, :n] = flat[start : start + n]
            mask[r, :n] = 1
        row = self.row_of_target
        offset = self.logit_positions - starts.to(row.device)[row]  # position within its row
        return ids, mask, row * width + offset


def pack_one(rows: Sequence[TokenizedExample]) -> PackedBatch:
    """All `rows` in one packed sequence (see the module docstring).

    Example: rows [5, 6, 7] (labels [-100, 6, 7]) and [8, 9] (labels [-100, 9]):

        >>> b = pack_one([TokenizedExample([5, 6, 7], [-100, 6, 7]), TokenizedExample([8, 9], [-100, 9])])
        >>> b.input_ids, b.position_ids
        (tensor([[5, 6, 7, 8, 9]]), tensor([[0, 1, 2, 0, 1]]))
        >>> b.logit_positions, b.targets, b.row_of_target
        (tensor([0, 1, 3]), tensor([6, 7, 9]), tensor([0, 0, 1]))
    """
    ids: list[int] = []
    positions: list[int] = []
    logit_positions: list[int] = []
    targets: list[int] = []
    row_of_target: list[int] = []
    for r, row in enumerate(rows):
        if len(row.input_ids) != len(row.labels):
            raise ValueError(f"row {r}: {len(row.input_ids)} input_ids but {len(row.labels)} labels")
        start = len(ids)
        ids.extend(row.input_ids)
        positions.extend(range(len(row.input_ids)))
        for t in range(1, len(row.labels)):  # the first token has nothing before it to predict it
            if row.labels[t] != IGNORE_INDEX:
                logit_positions.append(start + t - 1)
                targets.append(row.labels[t])
                row_of_target.append(r)
    return PackedBatch(
        torch.tensor([ids], dtype=torch.long),
        torch.tensor([positions], dtype=torch.long),
        torch.tensor(logit_positions, dtype=torch.long),
        torch.tensor(targets, dtype=torch.long),
        torch.tensor(row_of_target, dtype=torch.long),
        tuple(len(row.input_ids) for row in rows),
    )


def pack(
    rows: Sequence[TokenizedExample], max_tokens: int | None = PACK_TOKENS
) -> list[tuple[range, PackedBatch]]:
    """Consecutive runs of `rows`, each at most `max_tokens` long (a longer row alone; None = all in
    one), packed. Returns (the run's row indices, its batch) pairs, in order."""
    if not rows:
        raise ValueError("cannot pack an empty batch")
    out: list[tuple[range, PackedBatch]] = []
    start, used = 0, 0
    for i, row in enumerate(rows):
        if i > start and max_tokens is not None and used + len(row.input_ids) > max_tokens:
            out.append((range(start, i), pack_one(rows[start:i])))
            start, used = i, 0
        used += len(row.input_ids)
    out.append((range(start, len(rows)), pack_one(rows[start:])))
    return out


def row_sums(values: torch.Tensor, batch: PackedBatch) -> torch.Tensor:
    """Per-row sums of per-target `values` (L,) -> (R,); a row without targets sums to 0."""
    out = torch.zeros(batch.n_rows, dtype=values.dtype, device=values.device)
    return out.index_add(0, batch.row_of_target, values)


def _causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face causal LM under the DDP and PEFT wrappers."""
    inner = getattr(model, "module", model)  # DDP / accelerate wrapper
    get_base = getattr(inner, "get_base_model", None)  # PEFT
    return get_base() if callable(get_base) else inner


# Per model (the causal LM under any wrapper, so a LoRA policy and its adapter-disabled reference share
# one entry): whether packed forwards match padded ones, and whether its forward takes logits_to_keep.
_PACKS: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()
_KEEPS_LOGITS: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


def label_logits(
    model: torch.nn.Module, batch: PackedBatch, warn: Callable[[str], None] | None = None
) -> torch.Tensor:
    """(L, V) logits at `batch`'s scored positions: one packed forward when the model supports it
    (checked on its first batch of two or more rows), else a padded one. `warn(message)` is told once
    if the check fails (the run reports it as an event); without it the message is logged."""
    lm = _causal_lm(model)
    packs = _PACKS.get(lm)
    if packs is None and batch.n_rows > 1 and batch.n_targets:
        packs = _PACKS[lm] = _check(model, batch, warn)
    if packs is False:
        return _padded(model, batch)
    return _packed(model, batch)


def _packed(model: torch.nn.Module, batch: PackedBatch) -> torch.Tensor:
    lm = _causal_lm(model)
    keeps = _KEEPS_LOGITS.get(lm)
    if keeps is None:
        keeps = _KEEPS_LOGITS[lm] = "logits_to_keep" in inspect.signature(lm.forward).parameters
    if not keeps:
        logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits
        return logits[0, batch.logit_positions]
    out = model(
        input_ids=batch.input_ids,
        position_ids=batch.position_ids,
        logits_to_keep=batch.logit_positions,
        use_cache=False,
    )
    return out.logits[0]  # (L, V)


def _padded(model: torch.nn.Module, batch: PackedBatch) -> torch.Tensor:
    pad = getattr(_causal_lm(model).config, "pad_token_id", None)
    ids, mask, flat_index = batch.padded(pad if isinstance(pad, int) else 0)
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits  # (R, T, V)
    return logits.flatten(0, 1)[flat_index]  # (L, V)


@torch.no_grad()
def _check(model: torch.nn.Module, batch: PackedBatch, warn: Callable[[str], None] | None) -> bool:
    # Past the DDP wrapper: its forward may broadcast buffers, and only this rank runs these two.
    model = getattr(model, "module", model)
    was_training = model.training
    model.eval()  # no dropout, so the two forwards are comparable
    device_type = batch.input_ids.device.type
    try:  # in the weights' own precision: under autocast both sides would round differently
        with torch.autocast(device_type, enabled=False):
            packed = token_logps(_packed(model, batch), batch.targets)
            padded = token_logps(_padded(model, batch), batch.targets)
    finally:
        model.train(was_training)
    # float32 forwards agree to ~1e-5 nats per token; bf16/fp16 weights round by hundredths.
    exact = next(model.parameters()).dtype == torch.float32
    if torch.allclose(packed, padded, rtol=0.0 if exact else 0.02, atol=1e-3 if exact else 0.05):
        return True
    worst = (packed - padded).abs().max().item()
    message = (
        f"Padding-free batches are off for this model: its packed forward differs from the padded one "
        f"by up to {worst:.3g} nats per token (its attention mask ignores position ids); training "
        "continues with padded batches, which is slower"
    )
    (warn or logger.warning)(message)
    return False
