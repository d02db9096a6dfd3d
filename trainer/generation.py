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

Sampling is reproducible: with `seed` set, generation draws from a forked RNG seeded with it, so the
same seed gives the same samples and the caller's global RNG stream is left exactly as it was (a
resumed run's data order and dropout do not depend on whether generation happened in this process).
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


@torch.no_grad()
def generate_responses(
    model,
    tokenizer,
    prompts: list[list[int]],
    settings: GenerationSettings,
    *,
    num_return_sequences: int = 1,
    seed: int | None = None,
) -> list[list[int]]:
    """Generate `num_return_sequences` continuations of every prompt (token-id lists).

    Returns a list of len(prompts) * num_return_sequences responses, prompt-major: all samples of
    prompt 0, then those of prompt 1, and so on. Prompts are used as given (truncate them first).
    `model` may be a plain causal LM or a PEFT model; it is put in eval mode (no dropout) while
    generating and restored to its previous mode afterwards.
    """
    from transformers import GenerationConfig

    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("generate_responses: every prompt needs at least one token")
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    sample = settings.temperature > 0
    gen_config = GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        do_sample=sample,
        temperature=settings.temperature if sample else None,
        top_p=settings.top_p if sample else None,
        top_k=0 if sample else None,
        # Greedy decoding gives identical copies; HF refuses num_return_sequences > 1 there.
        num_return_sequences=num_return_sequences if sample else 1,
        eos_token_id=eos_ids,
        pad_token_id=pad_id,
        use_cache=True,
    )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    fork = seed is not None
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices, enabled=fork):
            if fork:
                torch.manual_seed(seed)
            # Batches of similar prompt lengths, so little of each is left padding; answers go back in
            # the caller's order. (HF's generate stops a batch when all its rows have emitted EOS.)
            by_length = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
            per_prompt: dict[int, list[list[int]]] = {}
            for start in range(0, len(prompts), settings.batch_size):
                rows = by_length[start : start + settings.batch_size]
                chunk = [prompts[i] for i in rows]
                width = max(len(p) for p in chunk)
                input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)  # (b, P)
                attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)  # (b, P)
                for i, p in enumerate(chunk):  # left padding
                    input_ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
                    attention_mask[i, width - len(p) :] = 1
                generated = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    generation_config=gen_config,
                )  # (b * n, P + new), rows grouped by prompt
                responses = [cut_at_eos(row, eos_ids) for row in generated[:, width:].tolist()]
                n = num_return_sequences if sample else 1
                for j, i in enumerate(rows):
                    per_prompt[i] = responses[j * n : (j + 1) * n] * (1 if sample else num_return_sequences)
    finally:
        model.train(was_training)
    return [response for i in range(len(prompts)) for response in per_prompt[i]]
