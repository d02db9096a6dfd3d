"""The experiment tasks of issues 9 and 23, generated offline with a fixed seed (same seed, same bytes).

Every task gives four JSONL files (five with a dev split), in the formats Juice's upload accepts:

- ``train.jsonl``: demonstrations, chat rows ``{"messages": [user..., assistant]}`` (SFT, SPIN, IRFT, RFT);
- ``train_pref.jsonl``: preference pairs on the training prompts, built as the validation pairs are
  (DPO's training file: an upper reference that sees labelled rejections the other methods never see);
- ``validation.jsonl``: preference pairs on the held-out prompts (OpenAI's ``input`` /
  ``preferred_output`` / ``non_preferred_output``), which Juice scores as ``eval/logp_gap``;
- ``heldout.jsonl``: the held-out prompts with what the harness needs to judge a generated answer
  (the exact answer for arithmetic, the real reply and the other conversations' contexts for chat);
- ``dev.jsonl`` (issue 23, ``Sizes.n_dev > 0``): preference pairs on a third set of prompts, disjoint
  from the training and held-out ones, built as the validation pairs are. It is every job's
  ``validation_file``: Juice reports ``eval/loss`` (the chosen side's NLL) and ``eval/logp_gap`` on it
  and ``select_checkpoint: best_eval_loss`` picks by it, so neither the held-out prompts the harness
  judges nor their pairs ever steer a run. It is a held-out part of the user's demonstrations, so on
  ``arith_noisy`` its chosen side is as noisy as the training set (the user has nothing cleaner).

Issue 9's sizes (``FULL``, ``SMOKE``: no dev split) give exactly the data issue 9's grid ran on. Issue
23's (``sizes23``) draw more prompts from the same streams: its 168 training rows are issue 9's, its
held-out prompts start with issue 9's 40, and the dev prompts come after them.

Tasks:

``arith``
    Two-step integer arithmetic, "Compute 17 + 26 - 9." with the worked answer
    "17 + 26 = 43. 43 - 9 = 34. Answer: 34". Exactly checkable: the first ``Answer: N`` of a
    generation must equal the true result. A rejected answer has the same form with one step wrong
    (off by 1..9) and the rest carried through consistently, so it differs only in correctness.
``arith_noisy``
    ``arith`` with 30% of the training demonstrations replaced by such wrong answers (the paper's
    motivation: SFT copies low-quality demonstrations). Held-out prompts and pairs are ``arith``'s;
    DPO's training pairs stay clean (chosen = correct), since they are built as the validation pairs.
``chat``
    Chit-chat from the MIT-licensed ``chitchat-dataset`` PyPI package (BYU PCC lab's Chit-Chat
    Challenge, 7,168 English conversations shipped as a JSON file inside the wheel; no network). A
    demonstration is up to ``CHAT_CONTEXT`` consecutive messages of one conversation as alternating
    user/assistant turns ending with a user turn, then the real next message as the assistant reply
    (earlier assistant turns are context: weight 0). A held-out pair's rejected reply is the real reply
    of *another* held-out conversation: human-written, same style and length distribution, so the pair
    isolates whether a reply fits its conversation (the base model's own greedy reply would instead
    contrast human vs model style, and would make the pair depend on the model under test).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEED = 20240917  # fixed: the data never changes between runs
TASKS = ("arith", "chat", "arith_noisy")
NOISE_FRACTION = 0.3
CHAT_CONTEXT = 3  # messages of context before the reply
CHAT_MAX_CHARS = 200  # longest context message or reply kept (characters)
CHAT_MIN_REPLY_CHARS = 8
CHAT_MAX_TOTAL_CHARS = (
    600  # context + reply: about 200 SmolLM2 tokens with the template, under max_seq_len 256
)
CHAT_CONTRAST = 4  # other held-out contexts each chat reply is judged against (see evaluate.py)

ANSWER = re.compile(r"Answer:\s*(-?\d+)")


@dataclass(frozen=True)
class Sizes:
    n_train: int
    n_heldout: int
    n_dev: int = 0  # 0: no dev split (issue 9's data, byte for byte)


# 168 = 21 optimiser steps per epoch at batch 8, and 3 stagewise slices of 56 (7 steps each), so SFT,
# SPIN, IRFT T=3, RFT and DPO all take exactly the same number of optimiser steps (see run_grid.py).
FULL = Sizes(n_train=168, n_heldout=40)
SMOKE = Sizes(n_train=12, n_heldout=6)

# Issue 23: the same 168 training rows; 200 held-out arithmetic prompts (exact accuracy's standard
# error ~0.03 at p = 0.3, against ~0.07 with 40); chat's held-out set doubled to 80, not more, because
# its judge scores every reply under 5 contexts and a chat evaluation already costs ~10 minutes of the
# two CPU cores (issue 9's eval_seconds) at 40; 40 dev prompts per task.
FULL23 = {
    "arith": Sizes(n_train=168, n_heldout=200, n_dev=40),
    "arith_noisy": Sizes(n_train=168, n_heldout=200, n_dev=40),
    "chat": Sizes(n_train=168, n_heldout=80, n_dev=40),
}
SMOKE23 = Sizes(n_train=12, n_heldout=6, n_dev=4)


def sizes23(task: str, smoke: bool = False) -> Sizes:
    """Issue 23's sizes of a task (one size for every task in the smoke run)."""
    return SMOKE23 if smoke else FULL23[task]


@dataclass
class TaskData:
    name: str
    train: list[dict[str, Any]]
    train_pref: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)
    dev: list[dict[str, Any]] = field(default_factory=list)  # preference pairs; empty: no dev split

    def write(self, folder: Path) -> dict[str, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name in ("train", "train_pref", "validation", "heldout", *(("dev",) if self.dev else ())):
            path = folder / f"{name}.jsonl"
            rows = getattr(self, name)
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            paths[name] = path
        (folder / "info.json").write_text(json.dumps(self.info, indent=2) + "\n")
        return paths


# ---------------------------------------------------------------------------------------------------
# Arithmetic


@dataclass(frozen=True)
class Problem:
    a: int
    op1: str
    b: int
    op2: str
    c: int

    @property
    def question(self) -> str:
        return f"Compute {self.a} {self.op1} {self.b} {self.op2} {self.c}."

    @property
    def first(self) -> int:
        return self.a + self.b if self.op1 == "+" else self.a - self.b

    @property
    def result(self) -> int:
        return self.first + self.c if self.op2 == "+" else self.first - self.c


def worked(p: Problem, error: tuple[int, int] | None = None) -> str:
    """The worked answer; `error=(step, delta)` makes step 1 or 2 wrong by delta, carried through."""
    first = p.first + (error[1] if error and error[0] == 1 else 0)
    second = (first + p.c if p.op2 == "+" else first - p.c) + (error[1] if error and error[0] == 2 else 0)
    return f"{p.a} {p.op1} {p.b} = {first}. {first} {p.op2} {p.c} = {second}. Answer: {second}"


def wrong(p: Problem, rng: random.Random) -> str:
    delta = rng.choice([d for d in range(-9, 10) if d != 0])
    return worked(p, (rng.choice([1, 2]), delta))


def wrong_except(p: Problem, rng: random.Random, other: str) -> str:
    """A wrong answer that is not `other` (a noisy demonstration's rejected side must differ from it)."""
    while (text := wrong(p, rng)) == other:
        pass
    return text


INTEGER = re.compile(r"-?\d+")


def last_integer(text: str) -> int | None:
    """The last integer of a generation: a lenient reading that ignores the ``Answer:`` format."""
    found = INTEGER.findall(text)
    return int(found[-1]) if found else None


def answer_of(text: str) -> int | None:
    """The first ``Answer: N`` of a generation, or None."""
    m = ANSWER.search(text)
    return int(m.group(1)) if m else None


def _problems(rng: random.Random, n: int) -> list[Problem]:
    seen: set[Problem] = set()
    out = []
    while len(out) < n:
        a, b = rng.randint(2, 49), rng.randint(2, 49)
        op1, op2 = rng.choice("+-"), rng.choice("+-")
        if op1 == "-" and b > a:
            a, b = b, a
        c = rng.randint(2, 29)
        p = Problem(a, op1, b, op2, c)
        if p.result < 0 or p in seen:
            continue
        seen.add(p)
        out.append(p)
    return out


def _chat(question: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def _pair(context: list[dict[str, str]], chosen: str, rejected: str) -> dict[str, Any]:
    return {
        "input": {"messages": context},
        "preferred_output": [{"role": "assistant", "content": chosen}],
        "non_preferred_output": [{"role": "assistant", "content": rejected}],
    }


def make_arith(sizes: Sizes, noisy: bool = False) -> TaskData:
    rng = random.Random(SEED)
    # One stream of distinct problems: training, then held-out, then dev (so a larger held-out or dev
    # split never changes the training rows, and the three are disjoint by construction).
    problems = _problems(rng, sizes.n_train + sizes.n_heldout + sizes.n_dev)
    train_p = problems[: sizes.n_train]
    held_p = problems[sizes.n_train : sizes.n_train + sizes.n_heldout]
    dev_p = problems[sizes.n_train + sizes.n_heldout :]
    pair_rng = random.Random(SEED + 1)
    train_pref = [
        _pair([{"role": "user", "content": p.question}], worked(p), wrong(p, pair_rng)) for p in train_p
    ]
    validation = [
        _pair([{"role": "user", "content": p.question}], worked(p), wrong(p, pair_rng)) for p in held_p
    ]
    answers = [worked(p) for p in train_p]
    noisy_idx: list[int] = []
    if noisy:
        noise_rng = random.Random(SEED + 2)
        noisy_idx = sorted(noise_rng.sample(range(len(train_p)), round(NOISE_FRACTION * len(train_p))))
        for i in noisy_idx:
            answers[i] = wrong(train_p[i], noise_rng)
    train = [_chat(p.question, a) for p, a in zip(train_p, answers, strict=True)]
    heldout = [
        {"messages": [{"role": "user", "content": p.question}], "answer": p.result, "reference": worked(p)}
        for p in held_p
    ]
    info = {
        "task": "arith_noisy" if noisy else "arith",
        "seed": SEED,
        "n_train": len(train),
        "n_heldout": len(heldout),
        "noisy_demonstrations": len(noisy_idx),
        "noise_fraction": NOISE_FRACTION if noisy else 0.0,
    }
    dev = _arith_dev(dev_p, noisy)
    if dev_p:  # issue 9's info (no dev split) stays as it was
        info.update(n_dev=len(dev), noisy_dev_demonstrations=sum(not r["clean"] for r in dev))
    return TaskData(info["task"], train, train_pref, validation, heldout, info, [r["pair"] for r in dev])


def _arith_dev(problems: list[Problem], noisy: bool) -> list[dict[str, Any]]:
    """Dev pairs {"pair", "clean"}: chosen = the demonstration (on arith_noisy a wrong one for
    NOISE_FRACTION of the rows, as in training), rejected = a wrong answer that differs from it. Own
    random streams, so the training, held-out and validation rows are those of issue 9."""
    rng, noise_rng = random.Random(SEED + 4), random.Random(SEED + 5)
    wrong_rows = set(noise_rng.sample(range(len(problems)), round(NOISE_FRACTION * len(problems))))
    out = []
    for i, p in enumerate(problems):
        chosen = wrong(p, noise_rng) if noisy and i in wrong_rows else worked(p)
        pair = _pair([{"role": "user", "content": p.question}], chosen, wrong_except(p, rng, chosen))
        out.append({"pair": pair, "clean": chosen == worked(p)})
    return out


# ---------------------------------------------------------------------------------------------------
# Chat


def chitchat_path() -> Path:
    """The dataset file inside the installed package (found, not imported: nothing else is needed)."""
    import importlib.util

    spec = importlib.util.find_spec("chitchat_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("chat task: `pip install chitchat-dataset` (MIT, ships its data; no network)")
    return Path(next(iter(spec.submodule_search_locations))) / "dataset.json"


def _clean(text: str) -> str:
    return " ".join(text.split())


def _chat_example(conv: dict[str, Any], rng: random.Random) -> tuple[list[dict[str, str]], str] | None:
    """(context messages ending with a user turn, real reply) from one conversation, or None."""
    msgs = [_clean(" ".join(u["text"] for u in m)) for m in conv["messages"]]
    positions = [
        i
        for i in range(1, len(msgs))
        if CHAT_MIN_REPLY_CHARS <= len(msgs[i]) <= CHAT_MAX_CHARS
        and all(0 < len(m) <= CHAT_MAX_CHARS for m in msgs[max(0, i - CHAT_CONTEXT) : i])
    ]
    if not positions:
        return None
    rng.shuffle(positions)
    for i in positions:
        n = min(CHAT_CONTEXT, i)
        n -= 1 - n % 2  # an odd number of messages, so the context starts (and ends) with a user turn
        context_texts = msgs[i - n : i]
        if sum(map(len, context_texts)) + len(msgs[i]) <= CHAT_MAX_TOTAL_CHARS:
            break
    else:
        return None
    context = [
        {"role": "user" if (n - 1 - j) % 2 == 0 else "assistant", "content": t}
        for j, t in enumerate(context_texts)
    ]
    return context, msgs[i]


def _demonstration(context: list[dict[str, str]], reply: str) -> dict[str, Any]:
    # Only the reply is a demonstration: earlier assistant turns are context (weight 0).
    messages: list[dict[str, Any]] = [
        {**m, "weight": 0} if m["role"] == "assistant" else dict(m) for m in context
    ]
    return {"messages": [*messages, {"role": "assistant", "content": reply}]}


def _derangement(n: int, rng: random.Random) -> list[int]:
    """A permutation with no fixed point (n >= 2): j = perm[i] != i."""
    order = list(range(n))
    rng.shuffle(order)
    perm = [0] * n
    for k in range(n):
        perm[order[k]] = order[(k + 1) % n]
    return perm


def make_chat(sizes: Sizes) -> TaskData:
    data = json.loads(chitchat_path().read_text())
    rng = random.Random(SEED)
    keys = sorted(data)
    rng.shuffle(keys)
    examples: list[tuple[list[dict[str, str]], str]] = []
    contexts: set[str] = set()
    for key in keys:
        ex = _chat_example(data[key], rng)
        if ex is None:
            continue
        # Generic openers ("Hello?") start many conversations, so two splits can share a prompt; the
        # dev split skips any prompt already in training or held-out (the earlier splits are issue
        # 9's as they were: skipping draws nothing from the random stream)
        context = json.dumps(ex[0])
        if len(examples) >= sizes.n_train + sizes.n_heldout and context in contexts:
            continue
        contexts.add(context)
        examples.append(ex)
        if len(examples) == sizes.n_train + sizes.n_heldout + sizes.n_dev:
            break
    train_ex = examples[: sizes.n_train]
    held_ex = examples[sizes.n_train : sizes.n_train + sizes.n_heldout]
    dev_ex = examples[sizes.n_train + sizes.n_heldout :]
    # training pairs (DPO): rejected = another training conversation's reply
    perm_t = _derangement(len(train_ex), random.Random(SEED + 1))
    perm_h = _derangement(len(held_ex), random.Random(SEED + 2))
    train_pref = [_pair(c, r, train_ex[perm_t[i]][1]) for i, (c, r) in enumerate(train_ex)]
    validation = [_pair(c, r, held_ex[perm_h[i]][1]) for i, (c, r) in enumerate(held_ex)]
    contrast_rng = random.Random(SEED + 3)
    heldout = []
    for i, (c, r) in enumerate(held_ex):
        others = [j for j in range(len(held_ex)) if j != i]
        picks = contrast_rng.sample(others, min(CHAT_CONTRAST, len(others)))
        heldout.append(
            {
                "messages": c,
                "reference": r,
                "rejected": held_ex[perm_h[i]][1],
                "contrast_contexts": [held_ex[j][0] for j in picks],
            }
        )
    info = {
        "task": "chat",
        "seed": SEED,
        "source": "chitchat-dataset (PyPI, MIT): chitchat_dataset/dataset.json",
        "n_train": len(train_ex),
        "n_heldout": len(held_ex),
        "context_messages": CHAT_CONTEXT,
        "max_chars": CHAT_MAX_CHARS,
    }
    dev: list[dict[str, Any]] = []
    if dev_ex:  # rejected = another dev conversation's real reply, as the validation pairs
        perm_d = _derangement(len(dev_ex), random.Random(SEED + 4))
        dev = [_pair(c, r, dev_ex[perm_d[i]][1]) for i, (c, r) in enumerate(dev_ex)]
        info["n_dev"] = len(dev)
    return TaskData(
        "chat", [_demonstration(c, r) for c, r in train_ex], train_pref, validation, heldout, info, dev
    )


def make_task(name: str, sizes: Sizes = FULL) -> TaskData:
    if name == "arith":
        return make_arith(sizes)
    if name == "arith_noisy":
        return make_arith(sizes, noisy=True)
    if name == "chat":
        return make_chat(sizes)
    raise ValueError(f"unknown task {name!r} (known: {', '.join(TASKS)})")


if __name__ == "__main__":  # print a few rows of each task
    for task in TASKS:
        t = make_task(task)
        print(f"== {task}: {t.info}")
        print(json.dumps(t.train[0], ensure_ascii=False))
        print(json.dumps(t.validation[0], ensure_ascii=False))
