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

Pairs (IRFT/SPIN/DPO's step, their reference scoring, the validation log-prob gap) share the prompt:
`pack_pairs` lays out [prompt, response a, response b] per pair and a 4D attention mask lets b attend
to the prompt but not to a, with b's positions continuing the prompt's. The prompt's forward and
backward then run once instead of twice, which on chat data (long contexts, short replies) is most of a
pair step. The mask is given to SDPA and eager attention in their own formats; other implementations,
and any model where the check below fails, get the pairs as two plain rows.

Rows of similar lengths (uniform prompt/completion data) are cheaper padded than packed, since a
pack's mask is dense: `label_logits` estimates both costs per batch (`_padding_is_cheaper`) and pads
such rows, still with the LM head on the scored positions only (`logits_to_keep` = their union).

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
from typing import Any

import torch

from trainer.data import IGNORE_INDEX, TokenizedExample
from trainer.logprobs import token_logps

PACK_TOKENS = 4096
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackedBatch:
    """Rows of one forward, flattened. N = tokens in the sequence, L = scored positions, R = rows.

    input_ids, position_ids: (1, N); logit_positions: (L,) flat index of each scored position (two
    targets may share one, after a shared prompt); targets: (L,) the label scored there;
    row_of_target: (L,) which row each target belongs to; in_row_position: (L,) the scored position
    within its own row. Targets are in row-major order (row 0's in order, then row 1's ...), as a
    padded batch lists them. rows: the rows themselves, for the fallback forwards.

    Shared prompts (`pack_pairs`): group and branch, (1, N), say which pair a token belongs to and
    whether it is the shared prompt (0) or response 1 or 2; token q attends to an earlier token k of
    its own group whose branch is 0 or q's own. None for plain packs (rows only see themselves).
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    logit_positions: torch.Tensor
    targets: torch.Tensor
    row_of_target: torch.Tensor
    in_row_position: torch.Tensor
    rows: tuple[TokenizedExample, ...]
    group: torch.Tensor | None = None
    branch: torch.Tensor | None = None

    @property
    def n_rows(self) -> int:
        return len(self.rows)

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def n_targets(self) -> int:
        return int(self.targets.shape[0])

    def to(self, device: torch.device | str) -> PackedBatch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return PackedBatch(
            self.input_ids.to(device),
            self.position_ids.to(device),
            self.logit_positions.to(device),
            self.targets.to(device),
            self.row_of_target.to(device),
            self.in_row_position.to(device),
            self.rows,
            move(self.group),
            move(self.branch),
        )

    def padded(self, pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rows right-padded: (input_ids, attention_mask) (R, T), and for each target the (R*T)-flat
        index of its logit position, (L,). For the fallback forward."""
        width = max(len(r.input_ids) for r in self.rows)
        device = self.input_ids.device
        ids = torch.full((self.n_rows, width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((self.n_rows, width), dtype=torch.long)
        for r, row in enumerate(self.rows):
            ids[r, : len(row.input_ids)] = torch.tensor(row.input_ids, dtype=torch.long)
            mask[r, : len(row.input_ids)] = 1
        return ids.to(device), mask.to(device), self.row_of_target * width + self.in_row_position

    def attention_mask_4d(self, implementation: str, dtype: torch.dtype) -> torch.Tensor:
        """The (1, 1, N, N) mask of a shared-prompt pack: bool (True = attend) for SDPA, additive
        (0 / dtype min) for eager attention."""
        assert self.group is not None and self.branch is not None
        g, br = self.group[0], self.branch[0]
        n = g.shape[0]
        causal = torch.ones((n, n), dtype=torch.bool, device=g.device).tril()
        allow = causal & (g[:, None] == g[None, :]) & ((br[None, :] == 0) | (br[:, None] == br[None, :]))
        if implementation == "sdpa":
            return allow[None, None]
        zero = torch.zeros((), dtype=dtype, device=g.device)
        return torch.where(allow, zero, torch.finfo(dtype).min)[None, None]


def _targets_of(row: TokenizedExample) -> list[tuple[int, int]]:
    """(scored position, label) of a row: position t scores the label at t + 1."""
    return [(t - 1, row.labels[t]) for t in range(1, len(row.labels)) if row.labels[t] != IGNORE_INDEX]


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
    scored: list[tuple[int, int, int, int]] = []  # flat position, target, row, in-row position
    for r, row in enumerate(rows):
        if len(row.input_ids) != len(row.labels):
            raise ValueError(f"row {r}: {len(row.input_ids)} input_ids but {len(row.labels)} labels")
        start = len(ids)
        ids.extend(row.input_ids)
        positions.extend(range(len(row.input_ids)))
        scored += [(start + t, label, r, t) for t, label in _targets_of(row)]
    return _batch(ids, positions, scored, tuple(rows))


def pair_rows(
    triples: Sequence[tuple[Sequence[int], Sequence[int], Sequence[int]]],
) -> list[TokenizedExample]:
    """The 2B rows [prompt + a; prompt + b] of (prompt, a, b) triples, labelled on the responses only.

    Their per-row log-prob sums are log pi(a | prompt) and log pi(b | prompt) as the first and second
    halves (docs/methods.md §1.2 step 5); `pair_logps` computes them with the prompt shared. An empty
    response gives a row with no label, whose summed log-prob is 0.

        >>> [(r.input_ids, r.labels) for r in pair_rows([([5, 6], [8, 3], [3])])]
        [([5, 6, 8, 3], [-100, -100, 8, 3]), ([5, 6, 3], [-100, -100, 3])]
    """
    if not triples:
        raise ValueError("cannot collate an empty batch")
    halves = [(p, a) for p, a, _ in triples] + [(p, b) for p, _, b in triples]  # [first; second]
    return [TokenizedExample([*p, *r], [IGNORE_INDEX] * len(p) + list(r)) for p, r in halves]


def pack_pairs(triples: Sequence[tuple[Sequence[int], Sequence[int], Sequence[int]]]) -> PackedBatch:
    """(prompt, a, b) triples packed as [prompt a b] per pair, the prompt computed ONCE for both
    responses: b's tokens attend to the prompt and to b only, and continue the prompt's positions.
    The rows are `pair_rows(triples)`' ([prompt + a; prompt + b]), with the same log-probs: a
    response's hidden states depend only on the prompt and itself, whichever way they are laid out.

    Example: prompt [5, 6], a = [7], b = [8, 9]:

        >>> b = pack_pairs([([5, 6], [7], [8, 9])])
        >>> b.input_ids, b.position_ids, b.branch
        (tensor([[5, 6, 7, 8, 9]]), tensor([[0, 1, 2, 2, 3]]), tensor([[0, 0, 1, 2, 2]]))
        >>> b.logit_positions, b.targets, b.row_of_target   # the prompt's last token scores 7 and 8
        (tensor([1, 1, 3]), tensor([7, 8, 9]), tensor([0, 1, 1]))
    """
    if not triples:
        raise ValueError("cannot pack an empty batch")
    ids: list[int] = []
    positions: list[int] = []
    group: list[int] = []
    branch: list[int] = []
    first: list[tuple[int, int, int, int]] = []
    second: list[tuple[int, int, int, int]] = []
    n = len(triples)
    for i, (prompt, a, b) in enumerate(triples):
        start, p = len(ids), len(prompt)
        ids += [*prompt, *a, *b]
        positions += [*range(p), *range(p, p + len(a)), *range(p, p + len(b))]
        group += [i] * (p + len(a) + len(b))
        branch += [0] * p + [1] * len(a) + [2] * len(b)
        # response token j is scored at the token before it: the prompt's last, then the response's own
        for j, token in enumerate(a):
            if p + j > 0:
                first.append((start + p + j - 1, token, i, p + j - 1))
        for j, token in enumerate(b):
            if p + j > 0:
                flat = start + p - 1 if j == 0 else start + p + len(a) + j - 1
                second.append((flat, token, n + i, p + j - 1))

    batch = _batch(ids, positions, first + second, tuple(pair_rows(triples)))
    return PackedBatch(**{**batch.__dict__, "group": torch.tensor([group]), "branch": torch.tensor([branch])})


def _batch(
    ids: list[int], positions: list[int], scored: list[tuple[int, int, int, int]], rows: tuple
) -> PackedBatch:
    def column(k: int) -> torch.Tensor:
        return torch.tensor([s[k] for s in scored], dtype=torch.long)

    return PackedBatch(
        torch.tensor([ids], dtype=torch.long),
        torch.tensor([positions], dtype=torch.long),
        column(0),
        column(1),
        column(2),
        column(3),
        rows,
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
_SHARES: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


def label_logits(
    model: torch.nn.Module, batch: PackedBatch, warn: Callable[[str], None] | None = None
) -> torch.Tensor:
    """(L, V) logits at `batch`'s scored positions: one packed forward when the model supports it
    (checked once per model and kind of pack: plain, or with shared prompts), else the next best (a
    shared-prompt pack as a plain one, a plain one padded). `warn(message)` is told once if a check
    fails (the run reports it as an event); without it the message is logged."""
    lm = _causal_lm(model)
    if batch.branch is not None:
        shares = _SHARES.get(lm)
        if shares is None and batch.n_targets:
            implementation = getattr(lm.config, "_attn_implementation", None)
            shares = _SHARES[lm] = implementation in MASKS_4D and _check(model, batch, warn, SHARED_OFF)
        if shares:
            return _packed(model, batch)
        batch = pack_one(batch.rows).to(batch.input_ids.device)  # the same targets, in the same order
    if _padding_is_cheaper(batch, getattr(lm.config, "hidden_size", None)):
        return _padded(model, batch)
    packs = _PACKS.get(lm)
    if packs is None and batch.n_rows > 1 and batch.n_targets:
        packs = _PACKS[lm] = _check(model, batch, warn, PACKING_OFF)
    if packs is False:
        return _padded(model, batch)
    return _packed(model, batch)


def _padding_is_cheaper(batch: PackedBatch, hidden_size: int | None) -> bool:
    """Whether the rows cost less padded than packed. Per layer a token costs ~12 d^2 multiply-adds
    in the linear maps and a pair of tokens that attend ~4 d in attention, so a forward of n-token
    sequences costs ~ tokens + (sum of n^2) / (3 d). A pack is one n = N sequence whose mask is dense
    (SDPA/eager compute all N^2 scores); padding makes every row max(n) long but keeps each row's
    attention to itself. Rows of similar lengths are therefore cheaper padded, rows of varied lengths
    (chats) packed; either way the LM head runs on the scored positions only."""
    if not hidden_size or batch.n_rows < 2:
        return False
    lengths = [len(r.input_ids) for r in batch.rows]
    n, width, rows = sum(lengths), max(lengths), len(lengths)
    attention = 3.0 * hidden_size
    return rows * width + rows * width * width / attention < n + n * n / attention


# The attention implementations a custom 4D mask is given to as is (masking_utils), in the format each
# expects (`PackedBatch.attention_mask_4d`); flash kernels take no arbitrary mask.
MASKS_4D = ("sdpa", "eager")
PACKING_OFF = (
    "Padding-free batches are off for this model: its packed forward differs from the padded one by up "
    "to {worst:.3g} nats per token (its attention mask ignores position ids); training continues with "
    "padded batches, which is slower"
)
SHARED_OFF = (
    "Shared-prompt pair batches are off for this model: its forward with a custom attention mask differs "
    "from the padded one by up to {worst:.3g} nats per token; pairs are packed as two rows instead"
)


def _packed(model: torch.nn.Module, batch: PackedBatch) -> torch.Tensor:
    lm = _causal_lm(model)
    keeps = _KEEPS_LOGITS.get(lm)
    if keeps is None:
        keeps = _KEEPS_LOGITS[lm] = "logits_to_keep" in inspect.signature(lm.forward).parameters
    kwargs: dict[str, Any] = {
        "input_ids": batch.input_ids,
        "position_ids": batch.position_ids,
        "use_cache": False,
    }
    if batch.branch is not None:
        dtype = next(lm.parameters()).dtype
        implementation = str(getattr(lm.config, "_attn_implementation", ""))
        kwargs["attention_mask"] = batch.attention_mask_4d(implementation, dtype)
    if not keeps:
        return model(**kwargs).logits[0, batch.logit_positions]
    return model(**kwargs, logits_to_keep=batch.logit_positions).logits[0]  # (L, V)


def _padded(model: torch.nn.Module, batch: PackedBatch) -> torch.Tensor:
    """The rows right-padded, the LM head on the union of their scored positions only."""
    lm = _causal_lm(model)
    pad = getattr(lm.config, "pad_token_id", None)
    ids, full_mask, _ = batch.padded(pad if isinstance(pad, int) else 0)
    # Equal lengths: no mask, so attention takes its plain causal kernel.
    mask = None if bool(full_mask.all()) else full_mask
    keep = torch.unique(batch.in_row_position)  # sorted: the positions some row scores
    if _KEEPS_LOGITS.get(lm) is None:
        _KEEPS_LOGITS[lm] = "logits_to_keep" in inspect.signature(lm.forward).parameters
    if not _KEEPS_LOGITS[lm] or keep.numel() == 0:
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits  # (R, T, V)
        return logits[batch.row_of_target, batch.in_row_position]
    logits = model(
        input_ids=ids, attention_mask=mask, logits_to_keep=keep, use_cache=False
    ).logits  # (R, K, V)
    return logits[batch.row_of_target, torch.searchsorted(keep, batch.in_row_position)]  # (L, V)


@torch.no_grad()
def _check(
    model: torch.nn.Module, batch: PackedBatch, warn: Callable[[str], None] | None, message: str
) -> bool:
    """Whether the packed forward of `batch` gives the padded forward's log-probs."""
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
    (warn or logger.warning)(message.format(worst=(packed - padded).abs().max().item()))
    return False
