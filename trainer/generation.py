"""Continuations of training prompts by the current policy (IRFT §4.3, RFT §3.3).

`generate_responses` runs Hugging Face `generate` (KV cache on) over batches of `settings.batch_size`
prompts of similar length (sorted by length, answers returned in the caller's order), LEFT padded so
every prompt ends where generation starts; a batch stops when every row has emitted EOS. Decoding is greedy when
`settings.temperature == 0` (the reference code's HF default, methods.md §4.3), else multinomial
sampling with `temperature` and `top_p` and no top-k cut (HF's default top_k = 50 is switched off,
methods.md §12.1.5). The decoding settings are passed explicitly, so the model's own
generation_config (which may ask for sampling) does not change them.

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

from collections.abc import Sequence

import torch

from trainer.config import GenerationSettings


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


def cut_at_eos(tokens: Sequence[int], eos_ids: Sequence[int]) -> list[int]:
    """Tokens up to and including the first EOS; all of them when there is none."""
    for i, token in enumerate(tokens):
        if token in eos_ids:
            return list(tokens[: i + 1])
    return list(tokens)


def row_seed(seed: int, key: int, sample: int) -> int:
    """The RNG seed of one (prompt, sample) row: distinct for distinct (seed, key, sample)."""
    return (seed * 1_000_003 + key * 10_007 + sample * 101 + 17) % (2**62)


class RowGumbelNoise:
    """A logits processor that adds Gumbel(0, 1) noise drawn from each row's own generator, so that
    greedy decoding of the result samples each row from softmax(scores) independently of the batch."""

    def __init__(self, generators: list[torch.Generator]) -> None:
        self.generators = generators

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        vocab = scores.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=g, device=g.device) for g in self.generators]).to(
            scores.device
        )  # (b, V)
        tiny = torch.finfo(uniform.dtype).tiny
        gumbel = -torch.log(-torch.log(uniform.clamp(min=tiny, max=1.0 - 1e-7)))
        return scores.float() + gumbel  # -inf (top-p cut) stays -inf


@torch.no_grad()
def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, pick, eos_ids):
    """Batched decoding with the KV cache, each row stopped at its own EOS: a finished row leaves the
    batch (its cache rows are dropped), so the rest no longer pay for it. Returns each row's new tokens
    (the EOS kept). `input_ids`, `attention_mask`: (b, P), LEFT padded. `pick(logits (n, V), rows (n,))`
    chooses the next token of the live `rows` (their indices in the original batch)."""
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
    rows = torch.arange(input_ids.shape[0], device=device)  # original row of each live row
    mask, position = attention_mask, positions[:, -1]  # (n, P + t), (n,)
    new: list[list[int]] = [[] for _ in range(input_ids.shape[0])]
    for step in range(max_new_tokens):
        tokens = pick(out.logits[:, -1].float(), rows)  # (n,)
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
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

    if not prompts:
        return []
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
    warpers = LogitsProcessorList()
    if sample:
        warpers.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_p < 1.0:
            warpers.append(TopPLogitsWarper(settings.top_p))
    device = next(model.parameters()).device
    rows = [(i, m) for i in range(len(prompts)) for m in range(n)]  # (prompt, sample)
    # Batches of similar prompt lengths, so little of each is left padding; answers go back in the
    # caller's order.
    rows.sort(key=lambda row: len(prompts[row[0]]))
    per_row: dict[tuple[int, int], list[int]] = {}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(rows), settings.batch_size * n):
            batch = rows[start : start + settings.batch_size * n]
            chunk = [prompts[i] for i, _ in batch]
            width = max(len(p) for p in chunk)
            input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)  # (b, P)
            attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)  # (b, P)
            for r, p in enumerate(chunk):  # left padding
                input_ids[r, width - len(p) :] = torch.tensor(p, dtype=torch.long)
                attention_mask[r, width - len(p) :] = 1
            if sample:
                assert seed is not None
                noise = RowGumbelNoise(
                    [torch.Generator(device=device).manual_seed(row_seed(seed, keys[i], m)) for i, m in batch]
                )

                def pick(logits: torch.Tensor, live: torch.Tensor, noise=noise) -> torch.Tensor:
                    scores = warpers(None, logits)
                    return RowGumbelNoise([noise.generators[j] for j in live.tolist()])(None, scores).argmax(-1)

            else:

                def pick(logits: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
                    return logits.argmax(-1)

            generated = decode(
                model, input_ids.to(device), attention_mask.to(device), settings.max_new_tokens, pick, eos_ids
            )
            for row, tokens in zip(batch, generated, strict=True):
                per_row[row] = tokens
    finally:
        model.train(was_training)
    return [per_row[(i, m if sample else 0)] for i in range(len(prompts)) for m in range(num_return_sequences)]
