"""(prompt, real response, generated response) triples for IRFT / RFT, and their rows.

Prompt and response (`prompt_and_response`): the response is the LAST assistant message of a chat row,
as the chat template renders it, ending with the template's end-of-turn/EOS token; the prompt is every
message before it rendered with the generation prompt, i.e. exactly what the model is given when it
generates a continuation. Earlier assistant turns are context. (The reference code,
docs/methods.md §1.3, keeps only the first user and first assistant turn; taking the last turn uses
the whole conversation and reduces to the same thing on single-turn rows.) Prompt/completion rows go
through the template as a user/assistant pair (plain `[bos] prompt` / `completion [eos]` without a
template); preference rows use the preferred response. The token ids are those of `data.py`, which
tokenises the conversation once and labels the trained span, so the prompt + response here are the
ids SFT would train on.

Truncation (`truncate_pair`, docs/methods.md §1.3 with one simplification): the prompt keeps its LAST
`max_prompt_len` tokens (always, so that the prompt a continuation was generated from is the prompt
it is trained with), then every response is cut to `max_seq_len - len(prompt)` tokens. A response
cut this way loses its EOS. The reference also appends a second EOS to every response
(docs/methods.md §1.3); we do not: the template's EOS is already there and generated responses keep
the EOS they emitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from trainer.collators import CompletionCollator
from trainer.data import (
    IGNORE_INDEX,
    TokenizedExample,
    _messages,
    detect_format,
    row_to_example,
    tokenize_chat,
    tokenize_prompt_completion,
)
from trainer.logprobs import token_logps
from trainer.packing import label_logits, pack_pairs, pair_rows, row_sums


def _last_turn_example(tokenizer, row: dict[str, Any]) -> TokenizedExample:
    kind = detect_format(row)  # the upload validator's rules: a chat ends with an assistant message
    if kind == "reinforcement":
        raise ValueError("a reinforcement line is a prompt without a response (the reinforcement method's)")
    if kind == "chat":
        messages = _messages(row["messages"], "messages")
        # Train (= label) only the last (assistant) message; the earlier turns are context.
        last = len(messages) - 1
        return tokenize_chat(tokenizer, [{**m, "weight": int(i == last)} for i, m in enumerate(messages)])
    if kind == "prompt_completion":
        return tokenize_prompt_completion(tokenizer, row["prompt"], row["completion"])
    return row_to_example(tokenizer, row)  # preference: the preferred response is labelled


def prompt_and_response(tokenizer, row: dict[str, Any]) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) of one JSONL row; see the module docstring for what each is.

    Raises ValueError for rows with no assistant/completion tokens.
    """
    example = _last_turn_example(tokenizer, row)
    trained = [i for i, label in enumerate(example.labels) if label != IGNORE_INDEX]
    if not trained or trained[0] == 0:
        raise ValueError("row: expected a non-empty prompt followed by a non-empty response")
    first, last = trained[0], trained[-1]
    # Tokens after the response (ChatML's trailing newline) are template glue the model never generates.
    return example.input_ids[:first], example.input_ids[first : last + 1]


def truncate_pair(
    prompt: Sequence[int], responses: Sequence[Sequence[int]], max_seq_len: int, max_prompt_len: int
) -> tuple[list[int], list[list[int]]]:
    """Keep the prompt's last `max_prompt_len` tokens (at most max_seq_len - 1, so every response keeps
    a token), then cut each response to `max_seq_len - len(prompt)` tokens (docs/methods.md §1.3)."""
    keep = min(max_prompt_len, max_seq_len - 1)
    prompt = list(prompt[-keep:]) if len(prompt) > keep else list(prompt)
    budget = max_seq_len - len(prompt)
    return prompt, [list(r[:budget]) for r in responses]


@dataclass
class PairCollator:
    """`pair_rows` right-padded into one (2B, T) batch: the padded form, which tests use as the
    reference for the packed forwards. With `pad_token_id=0`, prompts [5, 6] and [7], real [8, 3] and
    [9, 9, 3], generated [3] and [4, 3]:

        >>> batch = PairCollator(0)([([5, 6], [8, 3], [3]), ([7], [9, 9, 3], [4, 3])])
        >>> batch["input_ids"]
        tensor([[5, 6, 8, 3],
                [7, 9, 9, 3],
                [5, 6, 3, 0],
                [7, 4, 3, 0]])
        >>> batch["labels"]
        tensor([[-100, -100,    8,    3],
                [-100,    9,    9,    3],
                [-100, -100,    3, -100],
                [-100,    4,    3, -100]])
    """

    pad_token_id: int

    def __call__(
        self, triples: Sequence[tuple[Sequence[int], Sequence[int], Sequence[int]]]
    ) -> dict[str, torch.Tensor]:
        return CompletionCollator(self.pad_token_id)(pair_rows(triples))


def pair_logps(model, triples, warn=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(log pi(a | prompt), log pi(b | prompt)), each (B,), of (prompt, a, b) triples: one packed forward
    on the model's device with each prompt computed once for both responses (`packing.pack_pairs`),
    with the autograd graph when grad mode is on. One forward, not several packs, so that under DDP
    every rank runs one forward per micro-batch (packing.py)."""
    batch = pack_pairs(triples).to(next(model.parameters()).device)
    sums = row_sums(token_logps(label_logits(model, batch, warn), batch.targets), batch)  # (2B,)
    first, second = sums.chunk(2)
    return first, second


@torch.no_grad()
def score_pairs(model, triples) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs of both responses of each (prompt, a, b) triple, without grad:
    (log pi(a | prompt), log pi(b | prompt)), each (B,). The caller sets the mode."""
    return pair_logps(model, triples)
