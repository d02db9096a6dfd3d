"""Continuations of training prompts by the current policy: IRFT's negatives, RFT's samples
(docs/methods.md §1.5).

`generate_responses` decodes batches of `settings.batch_size` prompts (with all their samples) of
similar length (sorted by length, answers returned in the caller's order), LEFT padded so every prompt
ends where generation starts, with its own loop (`decode`): one prefill per prompt (its cache then
repeated for the prompt's samples, so RFT's k samples pay for their prompt once), then one forward per
token with the KV cache, and a row that has emitted EOS leaves the batch (its cache rows are dropped),
so the other rows stop paying for it (HF `generate` computes finished rows until the longest one ends).
Decoding is greedy when `settings.temperature == 0` (the reference code's HF default), else sampling
from softmax(logits / temperature) cut to the `top_p` nucleus, with no top-k cut (docs/methods.md §1.5
on both). Of the model's generation_config only its EOS ids are used, not its sampling settings.

Each response is cut after its first EOS, which it keeps, so it is exactly the tokens a trainer
should score. A response that never emits EOS is the `max_new_tokens` tokens generated, with no EOS
appended: the model did not stop, and training should see that.

Sampling is reproducible and does not depend on how prompts are batched: every (prompt, sample) row
draws from its own RNG stream, seeded by (`seed`, the prompt's key, the sample's number), through the
Gumbel-max trick (argmax of the temperature- and top-p-processed logits plus Gumbel noise is a draw
from their softmax). A prompt's samples are therefore the same whichever batch, process or resumed
run generates them (up to the float noise of padding), which is what lets multi-process runs shard
generation and still match a one-process run. The caller's global RNG stream is left untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from trainer.config import GenerationSettings
from trainer.spec.hyperparameters import AUTO_NEW_TOKENS_FACTOR


def resolve_max_new_tokens(
    settings: GenerationSettings, responses: Sequence[Sequence[int]], max_seq_len: int, report=None
) -> GenerationSettings:
    """`settings` with max_new_tokens "auto" made a number: AUTO_NEW_TOKENS_FACTOR times the longest of
    the demonstrations' `responses`, at most max_seq_len, said in an event on `report` (a Sink). A number
    is kept as it is."""
    if settings.max_new_tokens != "auto":
        return settings
    longest = max((len(r) for r in responses), default=1)
    tokens = max(1, min(AUTO_NEW_TOKENS_FACTOR * longest, max_seq_len))
    if report is not None:
        report.log_event(
            f"generation.max_new_tokens auto: {tokens} tokens "
            f"({AUTO_NEW_TOKENS_FACTOR} × the longest demonstration response)",
            data={"max_new_tokens": tokens},
        )
    return settings.model_copy(update={"max_new_tokens": tokens})


def finished(response: Sequence[int], eos_ids: Sequence[int]) -> bool:
    """Whether a generated response stopped by itself: it ends with an EOS (`decode` keeps the EOS and
    cuts there); one that ran to max_new_tokens does not."""
    return bool(response) and response[-1] in eos_ids


def eos_token_ids(model, tokenizer) -> list[int]:
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if not ids:
        raise ValueError("generation needs an EOS token: the tokenizer and the model define none")
    return sorted(ids)


def row_seed(seed: int, key: int, sample: int) -> int:
    """The RNG seed of one (prompt, sample) row: distinct for distinct (seed, key, sample)."""
    return (seed * 1_000_003 + key * 10_007 + sample * 101 + 17) % (2**62)


class RowGumbelNoise:
    """Adds Gumbel(0, 1) noise drawn from each row's own generator, so that the argmax of the result
    samples each row from softmax(scores) independently of the rows beside it (the Gumbel-max trick)."""

    def __init__(self, generators: list[torch.Generator]) -> None:
        self.generators = generators

    def __call__(self, scores: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
        """scores: (n, V) of the batch rows `rows` (indices into the generators)."""
        vocab = scores.shape[-1]
        uniform = torch.stack(
            [torch.rand(vocab, generator=self.generators[r], device=self.generators[r].device) for r in rows]
        ).to(scores.device)  # (n, V)
        tiny = torch.finfo(uniform.dtype).tiny
        gumbel = -torch.log(-torch.log(uniform.clamp(min=tiny, max=1.0 - 1e-7)))
        return scores.float() + gumbel  # -inf (top-p cut) stays -inf


def warp(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Scores whose softmax is the sampling distribution: logits / temperature, with the tokens outside
    the top-p nucleus (the most likely tokens whose mass first reaches top_p) set to -inf."""
    scores = logits.float() / temperature  # (n, V)
    if top_p < 1.0:
        ordered, order = scores.sort(dim=-1, descending=True)
        probs = ordered.softmax(-1)
        outside = probs.cumsum(-1) - probs >= top_p  # the mass before this token already reaches top_p
        scores = scores.scatter(-1, order, ordered.masked_fill(outside, float("-inf")))
    return scores


def greedy(logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return logits.argmax(-1)


@dataclass
class Sampler:
    """Samples each row from warp(logits) with its own RNG stream (RowGumbelNoise)."""

    temperature: float
    top_p: float
    noise: RowGumbelNoise

    def __call__(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.noise(warp(logits, self.temperature, self.top_p), rows.tolist()).argmax(-1)


@torch.no_grad()
def decode(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    pick,
    eos_ids,
    *,
    samples: int = 1,
):
    """Batched decoding with the KV cache, each row stopped at its own EOS: a finished row leaves the
    batch (its cache rows are dropped), so the rest no longer pay for it. Returns each row's new tokens
    (the EOS kept), `samples` rows per prompt, prompt-major. `input_ids`, `attention_mask`: (b, P), LEFT
    padded, one row per prompt: the prefill runs once per prompt and its cache is repeated for the
    prompt's samples (RFT's k samples share a prompt; on long prompts the prefill is most of the work).
    `pick(logits (n, V), rows (n,))` chooses the next token of the live `rows` (their indices among the
    b * samples rows)."""
    from transformers import DynamicCache

    device = input_ids.device
    eos = torch.tensor(sorted(eos_ids), device=device)
    positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (b, P): left padding skipped
    cache = DynamicCache()
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    logits = out.logits[:, -1].float()  # (b, V)
    mask, position = attention_mask, positions[:, -1]  # (n, P + t), (n,)
    if samples > 1:
        cache.batch_repeat_interleave(samples)
        logits, mask, position = (x.repeat_interleave(samples, dim=0) for x in (logits, mask, position))
    rows = torch.arange(logits.shape[0], device=device)  # original row of each live row
    new: list[list[int]] = [[] for _ in range(logits.shape[0])]
    for step in range(max_new_tokens):
        tokens = pick(logits, rows)  # (n,)
        for row, token in zip(rows.tolist(), tokens.tolist(), strict=True):
            new[row].append(token)
        live = ~torch.isin(tokens, eos)
        if step == max_new_tokens - 1 or not bool(live.any()):
            break
        if not bool(live.all()):
            keep = live.nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            rows, mask, position, tokens = rows[keep], mask[keep], position[keep], tokens[keep]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
        position = position + 1
        out = model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=position[:, None],
            cache=cache,
            use_cache=True,
        )
        logits = out.logits[:, -1].float()
    return new


@torch.no_grad()
def generate_responses(
    model,
    tokenizer,
    prompts: list[list[int]],
    settings: GenerationSettings,
    *,
    num_return_sequences: int = 1,
    seed: int | None = None,
    keys: Sequence[int] | None = None,
) -> list[list[int]]:
    """Generate `num_return_sequences` continuations of every prompt (token-id lists).

    Returns a list of len(prompts) * num_return_sequences responses, prompt-major: all samples of
    prompt 0, then those of prompt 1, and so on. Prompts are used as given (truncate them first).
    `keys` name the prompts for the sampling streams (their positions by default; a caller that
    shards prompts passes their global indices); `seed` None draws one from the global RNG.
    `model` may be a plain causal LM or a PEFT model; it is put in eval mode (no dropout) while
    generating and restored to its previous mode afterwards.
    """
    if not prompts:
        return []
    if not isinstance(settings.max_new_tokens, int):
        raise ValueError("generate_responses: resolve max_new_tokens 'auto' first (resolve_max_new_tokens)")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("generate_responses: every prompt needs at least one token")
    keys = list(range(len(prompts))) if keys is None else list(keys)
    if len(keys) != len(prompts):
        raise ValueError(f"generate_responses: expected {len(prompts)} keys, got {len(keys)}")
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    sample = settings.temperature > 0
    n = num_return_sequences if sample else 1  # greedy samples are identical: decode once, copy
    if sample and seed is None:
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
    device = next(model.parameters()).device
    # Batches of similar prompt lengths, so little of each is left padding; answers go back in the
    # caller's order.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    per_row: dict[tuple[int, int], list[int]] = {}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), settings.batch_size):
            chunk_of = order[start : start + settings.batch_size]
            batch = [(i, m) for i in chunk_of for m in range(n)]  # (prompt, sample), prompt-major
            chunk = [prompts[i] for i in chunk_of]
            width = max(len(p) for p in chunk)
            input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)  # (b, P)
            attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)  # (b, P)
            for r, p in enumerate(chunk):  # left padding
                input_ids[r, width - len(p) :] = torch.tensor(p, dtype=torch.long)
                attention_mask[r, width - len(p) :] = 1
            pick: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = greedy
            if sample:
                assert seed is not None
                generators = [
                    torch.Generator(device=device).manual_seed(row_seed(seed, keys[i], m)) for i, m in batch
                ]
                pick = Sampler(settings.temperature, settings.top_p, RowGumbelNoise(generators))
            generated = decode(
                model,
                input_ids.to(device),
                attention_mask.to(device),
                settings.max_new_tokens,
                pick,
                eos_ids,
                samples=n,
            )
            for row, tokens in zip(batch, generated, strict=True):
                per_row[row] = tokens
    finally:
        model.train(was_training)
    return [
        per_row[(i, m if sample else 0)] for i in range(len(prompts)) for m in range(num_return_sequences)
    ]
