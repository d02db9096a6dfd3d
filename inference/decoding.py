"""Chat completions from a trained (or base) model: the sampling loop inference/server.py serves.

`ChatModel.complete` yields the reply piece by piece as it is decoded, so one loop serves OpenAI's
plain and streaming responses alike. The loop is written out (one forward pass per token, KV cache
on) rather than wrapped around `generate`, because a stream must be an iterator the caller can stop:
a client that disconnects stops the decoding at the next token, with no thread left running.

Sampling follows OpenAI's parameters: `temperature` 0 is greedy decoding, otherwise multinomial
sampling over the `top_p` nucleus of the softmax at that temperature. `seed` makes a reply
reproducible (its own generator; the process's RNG is untouched). `stop` strings end the reply
before the stop string, which is not returned, as on OpenAI.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from trainer.generation import eos_token_ids
from trainer.modeling import load_tokenizer

FinishReason = Literal["stop", "length"]
# End-of-turn tokens of common chat templates (ChatML, Llama 3, Phi-3, Gemma), used when the template has one.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class Piece:
    """Text decoded since the previous piece; `finish_reason` is set on the last piece only."""

    text: str
    finish_reason: FinishReason | None = None
    completion_tokens: int = 0


@dataclass
class _Decoder:
    """Turns the growing list of generated token ids into text deltas, holding back what may still
    change: a partial UTF-8 character (decoded as U+FFFD) and any tail that could begin a stop string."""

    tokenizer: object
    stop: Sequence[str]
    ids: list[int] = field(default_factory=list)
    sent: int = 0  # characters of the decoded text already handed out

    def text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)  # type: ignore[attr-defined]

    def push(self, token: int) -> tuple[str, bool]:
        """Add one token; return (safe new text, whether a stop string was reached)."""
        self.ids.append(token)
        text = self.text()
        found = [at for s in self.stop if (at := text.find(s, max(0, self.sent - len(s) + 1))) != -1]
        if found:  # the earliest stop string ends the reply, whichever the list names first
            return self._take(text[: min(found)]), True
        safe = len(text)
        if text.endswith("\ufffd"):
            return "", False
        for s in self.stop:  # hold back a suffix of the text that is a prefix of a stop string
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if s.startswith(text[-k:]):
                    safe = min(safe, len(text) - k)
                    break
        return self._take(text[:safe]), False

    def flush(self) -> str:
        return self._take(self.text())

    def _take(self, upto: str) -> str:
        if len(upto) <= self.sent:
            return ""
        out, self.sent = upto[self.sent :], len(upto)
        return out


def _pick(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> int:
    """The next token from one row of logits (V,)."""
    if sampling.temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if not bool(torch.isfinite(probs).all()):  # a temperature so near 0 that logits / T overflow: its limit
        return int(torch.argmax(logits))
    if sampling.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the top token always stays)
        outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= sampling.top_p
        outside[0] = False  # even where top_p is below float32's smallest (a tiny top_p becomes 0)
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


class ChatModel:
    """A causal LM and its tokenizer, loaded once and kept for many requests."""

    def __init__(self, path: str | Path, device: str | None = None, local_files_only: bool = False) -> None:
        from transformers import AutoModelForCausalLM

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # float32 on CPU (bf16 matmuls are slow there); the checkpoint's own dtype on a GPU
        dtype = "auto" if self.device.type == "cuda" else torch.float32
        self.tokenizer = load_tokenizer(path, local_files_only=local_files_only)
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype, local_files_only=local_files_only
        )
        self.model = model.to(self.device).eval()  # type: ignore[arg-type]  # transformers' stub of .to
        self.eos_ids = set(eos_token_ids(self.model, self.tokenizer)) | self._end_of_turn_ids()
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 2048))

    def _end_of_turn_ids(self) -> set[int]:
        """A chat template's end-of-turn token ends a reply too: a ChatML model fine-tuned from a base whose
        EOS is another token (Qwen2.5 base: <|endoftext|>) closes its turns with <|im_end|>."""
        special = set(getattr(self.tokenizer, "all_special_tokens", []))
        special |= {str(t) for t in getattr(self.tokenizer, "added_tokens_decoder", {}).values()}
        template = str(getattr(self.tokenizer, "chat_template", "") or "")
        ids = set()
        for token in END_OF_TURN_TOKENS:
            if token in special and token in template:
                ids.add(int(self.tokenizer.convert_tokens_to_ids(token)))
        return ids

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The chat rendered by the model's own chat template, ending where the assistant reply starts.
        ValueError when the model has no template or its template refuses these messages."""
        from jinja2 import TemplateError

        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("this model has no chat template, so it cannot take chat messages")
        try:
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        except TemplateError as exc:  # e.g. a template that allows no system message, or two user turns
            raise ValueError(f"its chat template refuses these messages: {exc}") from exc
        if hasattr(ids, "input_ids"):  # newer transformers return a BatchEncoding
            ids = ids["input_ids"]
        return [int(i) for i in ids]

    @torch.no_grad()
    def complete(self, prompt: list[int], sampling: Sampling) -> Generator[Piece]:
        """Decode a reply to `prompt`; every piece but the last has `finish_reason` None."""
        budget = min(sampling.max_tokens, self.context_length - len(prompt))
        if budget <= 0:
            raise ValueError(
                f"the prompt is {len(prompt)} tokens; this model's context is {self.context_length}"
            )
        generator = torch.Generator(device=self.device)
        if sampling.seed is not None:
            generator.manual_seed(sampling.seed)
        else:
            generator.seed()
        decoder = _Decoder(self.tokenizer, sampling.stop)
        input_ids = torch.tensor([prompt], device=self.device)  # (1, P)
        cache = None
        for n in range(1, budget + 1):
            out = self.model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=1)
            cache = out.cache
            token = _pick(out.logits[0, -1], sampling, generator)
            if token in self.eos_ids:  # generated, so counted, as OpenAI and vLLM count it
                yield Piece(decoder.flush(), "stop", n)
                return
            text, stopped = decoder.push(token)
            if stopped:
                yield Piece(text, "stop", n)
                return
            if n == budget:
                yield Piece(text + decoder.flush(), "length", n)
                return
            if text:
                yield Piece(text)
            input_ids = torch.tensor([[token]], device=self.device)
