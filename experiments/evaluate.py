"""Judging a downloaded checkpoint (a Hugging Face folder) on a task's held-out prompts, with plain
transformers, as any user of the tuned model would: nothing here imports Juice.

- Generation: the chat template with the generation prompt, greedy decoding, left-padded batches.
- ``logp(model, context, response)``: the summed log-probability of the response tokens as the chat
  template renders the assistant turn (through its end-of-turn token, without the trailing newline):
  the same definition as Juice's ``eval/logp_gap``, so the harness can give the base model's gap (the
  step-0 point of every curve) and cross-check a job's final gap against the one the job recorded.
- Arithmetic (``arith``, ``arith_noisy``): a generation is correct when its first ``Answer: N`` equals
  the true result. Nothing any method trains on sees this check.
- Chat: the judge is the FROZEN base model used as a relevance scorer, none of the methods' rewards:
  ``relevance(c, r) = log p_base(r | c) - mean_j log p_base(r | c_j)`` over ``CHAT_CONTRAST`` other
  held-out conversations c_j: how much better the reply fits its own conversation than unrelated ones
  (a contrastive, pointwise-mutual-information score, as in maximum-mutual-information decoding for
  dialogue). It ignores how likely the reply is in general, so it does not reward the bland, generic
  replies that a plain likelihood judge favours (and that the base model's own greedy replies are).
  Its known blind spot: parroting the user's last message fits that conversation well; the harness
  records each reply's copy of the context (``copies_context``) so that can be seen. The judge is
  validated on the held-out pairs themselves: ``judge_pair_accuracy`` is how often it scores the real
  reply above the reply from another conversation.
- The chat judge per token (issue 23): the summed score grows with the reply's length (each token of
  a reply that fits its conversation adds to it), so the base model's long replies outscored the human
  references themselves (26.9 against 10.6) and a perfect imitator of the demonstrations would lose
  to the base model. ``relevance_per_token`` divides it by the reply's scored tokens (through the
  end-of-turn token): the mean pointwise mutual information per token, which does not grow with the
  reply's length. Issue 23's grid compares and reports it; the sum stays beside it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from tasks import answer_of, last_integer

MAX_NEW_TOKENS = 48
GEN_BATCH = 8
SCORE_BATCH = 8


class Model:
    """A causal LM and its tokenizer, float32, in eval mode."""

    def __init__(self, path: str | Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = str(path)
        self.tok = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32).eval()
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = [eos] if isinstance(eos, int) else list(eos or [self.tok.eos_token_id])
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.eos_ids[0]

    def prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        return _ids(self.tok.apply_chat_template(_plain(messages), add_generation_prompt=True, tokenize=True))

    def response_ids(self, messages: list[dict[str, Any]], response: str) -> tuple[list[int], list[int]]:
        """(prompt ids, response ids through the end-of-turn token), as Juice's pairs are scored."""
        prompt = self.prompt_ids(messages)
        full = _ids(
            self.tok.apply_chat_template(
                [*_plain(messages), {"role": "assistant", "content": response}], tokenize=True
            )
        )
        if full[: len(prompt)] != prompt:
            raise ValueError("the chat template renders the prompt differently with a reply after it")
        resp = full[len(prompt) :]
        ends = [i for i, t in enumerate(resp) if t in self.eos_ids]
        return prompt, resp[: ends[-1] + 1] if ends else resp

    @torch.no_grad()
    def generate(
        self, prompts: list[list[dict[str, Any]]], max_new_tokens: int = MAX_NEW_TOKENS
    ) -> list[str]:
        out: list[str] = []
        for start in range(0, len(prompts), GEN_BATCH):
            ids = [self.prompt_ids(m) for m in prompts[start : start + GEN_BATCH]]
            width = max(map(len, ids))
            input_ids = torch.tensor([[self.pad_id] * (width - len(i)) + i for i in ids])
            mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
            gen = self.model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=self.eos_ids,
                pad_token_id=self.pad_id,
            )
            for row in gen[:, width:].tolist():
                cut = next((k for k, t in enumerate(row) if t in self.eos_ids), len(row))
                out.append(self.tok.decode(row[:cut], skip_special_tokens=True).strip())
        return out

    def logps(self, items: list[tuple[list[dict[str, Any]], str]]) -> list[float]:
        """Summed log p(response | context) of each (context messages, response)."""
        return [total for total, _ in self.scores(items)]

    @torch.no_grad()
    def scores(self, items: list[tuple[list[dict[str, Any]], str]]) -> list[tuple[float, int]]:
        """(summed log p(response | context), response tokens scored) of each (context, response)."""
        out: list[tuple[float, int]] = []
        for start in range(0, len(items), SCORE_BATCH):
            pairs = [self.response_ids(c, r) for c, r in items[start : start + SCORE_BATCH]]
            rows = [p + r for p, r in pairs]
            width = max(map(len, rows))
            input_ids = torch.tensor([row + [self.pad_id] * (width - len(row)) for row in rows])
            mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
            logits = self.model(input_ids=input_ids, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            for k, (p, r) in enumerate(pairs):
                targets = torch.tensor(r)
                positions = torch.arange(len(p) - 1, len(p) - 1 + len(r))
                out.append((float(logp[k, positions, targets].sum()), len(r)))
        return out


def _plain(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _ids(encoded: Any) -> list[int]:
    """apply_chat_template(tokenize=True) gives a list, or a BatchEncoding in newer transformers."""
    if isinstance(encoded, dict) or hasattr(encoded, "input_ids"):
        encoded = encoded["input_ids"]
    return list(encoded)


def logp_gap(model: Model, validation: list[dict[str, Any]]) -> dict[str, float]:
    """Mean log pi(chosen) - log pi(rejected) over the validation pairs, how often it is > 0, and
    `chosen_nll`: the chosen responses' token-mean NLL pooled over every scored token (Juice's eval/loss
    of a preference file scores the same side; a check that the harness judged the checkpoint the job
    reported)."""
    items: list[tuple[list[dict[str, Any]], str]] = []
    for row in validation:
        ctx = row["input"]["messages"]
        items += [
            (ctx, row["preferred_output"][-1]["content"]),
            (ctx, row["non_preferred_output"][-1]["content"]),
        ]
    scores = model.scores(items)
    gaps = [scores[i][0] - scores[i + 1][0] for i in range(0, len(scores), 2)]
    chosen = scores[0::2]
    return {
        "logp_gap": sum(gaps) / len(gaps),
        "logp_gap_accuracy": sum(g > 0 for g in gaps) / len(gaps),
        "chosen_nll": -sum(t for t, _ in chosen) / sum(n for _, n in chosen),
    }


def eval_arith(model: Model, heldout: list[dict[str, Any]], max_new_tokens: int) -> list[dict[str, Any]]:
    texts = model.generate([h["messages"] for h in heldout], max_new_tokens)
    return eval_arith_answers(heldout, texts)


def _norm(text: str) -> str:
    return " ".join("".join(ch.lower() if ch.isalnum() else " " for ch in text).split())


def relevance(judge: Model, heldout: list[dict[str, Any]], replies: list[str]) -> list[dict[str, float]]:
    """The chat judge (module docstring): own-context log-prob minus the mean over contrast contexts,
    summed over the reply's tokens and per token."""
    items: list[tuple[list[dict[str, Any]], str]] = []
    for h, reply in zip(heldout, replies, strict=True):
        items.append((h["messages"], reply))
        items += [(c, reply) for c in h["contrast_contexts"]]
    scores = judge.scores(items)
    out, k = [], 0
    for h in heldout:
        n = len(h["contrast_contexts"])
        (own, tokens), others = scores[k], [total for total, _ in scores[k + 1 : k + 1 + n]]
        k += 1 + n
        rel = own - sum(others) / max(n, 1)
        # `tokens` >= 1: the end-of-turn token is scored even for an empty reply
        out.append(
            {"logp_own": own, "relevance": rel, "reply_tokens": tokens, "relevance_per_token": rel / tokens}
        )
    return out


def eval_arith_answers(heldout: list[dict[str, Any]], texts: list[str]) -> list[dict[str, Any]]:
    """Per-prompt rows of arithmetic answers `texts` (a model's generations, or the references)."""
    rows = []
    for h, text in zip(heldout, texts, strict=True):
        got = answer_of(text)
        lenient = last_integer(text)
        rows.append(
            {
                "prompt": h["messages"][-1]["content"],
                "answer": h["answer"],
                "generated": text,
                "parsed": got,
                "correct": got == h["answer"],
                "correct_lenient": lenient == h["answer"],
            }
        )
    return rows


def eval_chat(
    model: Model, judge: Model, heldout: list[dict[str, Any]], max_new_tokens: int
) -> list[dict[str, Any]]:
    replies = model.generate([h["messages"] for h in heldout], max_new_tokens)
    return chat_rows(judge, heldout, replies)


def chat_rows(judge: Model, heldout: list[dict[str, Any]], replies: list[str]) -> list[dict[str, Any]]:
    """Per-prompt rows of chat replies (a model's generations, or the human references): the judge's
    scores, length and whether the reply copies the user's last message."""
    scores = relevance(judge, heldout, replies)
    rows = []
    for h, reply, s in zip(heldout, replies, scores, strict=True):
        last = _norm(h["messages"][-1]["content"])
        mine = _norm(reply)
        rows.append(
            {
                "prompt": h["messages"][-1]["content"],
                "generated": reply,
                "words": len(reply.split()),
                "empty": not mine,
                "copies_context": bool(mine) and (mine in last or last in mine),
                **s,
            }
        )
    return rows


def judge_check(judge: Model, heldout: list[dict[str, Any]]) -> dict[str, float]:
    """The chat judge on the held-out pairs: how often the real reply outscores another conversation's."""
    real = relevance(judge, heldout, [h["reference"] for h in heldout])
    other = relevance(judge, heldout, [h["rejected"] for h in heldout])
    wins = [a["relevance"] > b["relevance"] for a, b in zip(real, other, strict=True)]
    wins_per_token = [
        a["relevance_per_token"] > b["relevance_per_token"] for a, b in zip(real, other, strict=True)
    ]
    return {
        "judge_pair_accuracy": sum(wins) / len(wins),
        "reference_relevance_mean": sum(r["relevance"] for r in real) / len(real),
        "judge_pair_accuracy_per_token": sum(wins_per_token) / len(wins_per_token),
        "reference_relevance_per_token_mean": sum(r["relevance_per_token"] for r in real) / len(real),
    }


def win_key(task: str, per_token: bool = False) -> str:
    """The per-prompt score the win rate compares: exactness on arith; on chat the relevance judge,
    summed (issue 9's grid) or per token (issue 23's)."""
    if task != "chat":
        return "correct"
    return "relevance_per_token" if per_token else "relevance"


def binomial_se(p: float, n: int) -> float:
    """Standard error of a proportion p measured on n independent prompts."""
    return math.sqrt(p * (1.0 - p) / n) if n else math.nan


def win_rate(mine: list[dict[str, Any]], base: list[dict[str, Any]], key: str) -> float:
    """Per-prompt comparison of `per_prompt` rows to the base model's by their score `key`: a win counts
    1, a tie 1/2, a loss 0. The same generated text is a tie whatever its two scores: the judge scores
    it in batches of different composition, which moves the same text's score by float noise (~1e-5)."""
    if not mine:
        return math.nan
    total = 0.0
    for a, b in zip(mine, base, strict=True):
        mine_score, base_score = float(a[key]), float(b[key])
        if a["generated"].strip() == b["generated"].strip() or mine_score == base_score:
            total += 0.5
        elif mine_score > base_score:
            total += 1.0
    return total / len(mine)
