"""Model answers scored by a grader (graders/): the reinforcement method's rewards and the graded
evaluation of a checkpoint on a validation file's prompts.

`grade` runs the grader over decoded answers (a python grader's batch in one sandboxed process,
graders/sandbox.py) and `Tally` adds up what the dashboard shows of them, summed over processes:

    <prefix>/reward               mean grader reward
    <prefix>/reward_std           their standard deviation over the samples (not within a prompt)
    <prefix>/pass_rate            share of samples at or above the pass threshold (`pass_threshold`)
    <prefix>/sub_reward/<name>    a multi grader's sub-graders' mean rewards
    <prefix>/grader_error_rate    share of samples the grader could not score (reward 0, graders/run.py)
    <prefix>/grader_seconds       wall seconds spent grading (latency: per step, or per evaluation)
    <prefix>/generation_length    mean answer length in tokens
    <prefix>/unfinished           share of answers cut at max_new_tokens without their end-of-turn token

`GradedValidation.evaluate` answers every validation prompt (`samples` answers each: greedy for one, else
sampled at the run's temperature, seeded) and grades them: eval/reward, eval/pass_rate and the rest, at
each evaluation of every method whose job gave a grader (`loop.validate`) and, once, for the starting
model (step 0, `loop.open_run`), so a user sees what training bought.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from graders.run import Outcome, grade_batch
from graders.sandbox import Limits
from trainer.config import GenerationSettings
from trainer.data import detect_format, ensure_chat_template, read_jsonl
from trainer.errors import DataError
from trainer.generation import finished, generate_responses
from trainer.pairs import prompt_and_response
from trainer.prompts import Task, prompt_ids
from trainer.runtime import shard
from trainer.spec.hyperparameters import AUTO_NEW_TOKENS_FACTOR


def pass_threshold(grader: Any) -> float:
    """A sample passes at or above the grader's own pass_threshold (text_similarity may give one), else
    at a full score of 1 (string_check's match; a python or multi grader's top score by convention)."""
    threshold = getattr(grader, "pass_threshold", None)
    return 1.0 if threshold is None else float(threshold)


def sub_grader_names(grader: Any) -> list[str]:
    return list(grader.graders) if grader.type == "multi" else []


@dataclass
class Graded:
    outcomes: list[Outcome]
    seconds: float


def grade(grader: Any, texts: list[str], items: list[dict[str, Any]], limits: Limits) -> Graded:
    start = time.perf_counter()
    outcomes = grade_batch(grader, texts, items, limits) if texts else []
    return Graded(outcomes, time.perf_counter() - start)


@dataclass
class Tally:
    """Sums of one step's (or one evaluation's) graded samples, to be reduced over processes."""

    sub_names: list[str]
    values: dict[str, float] = field(default_factory=dict)

    KEYS = ("n", "reward", "reward_sq", "passed", "errors", "seconds", "tokens", "unfinished")

    def __post_init__(self) -> None:
        self.values = dict.fromkeys((*self.KEYS, *(f"sub/{n}" for n in self.sub_names)), 0.0)

    def add(
        self,
        graded: Graded,
        threshold: float,
        responses: Sequence[Sequence[int]],
        eos_ids: Sequence[int],
    ) -> None:
        v = self.values
        for o in graded.outcomes:
            v["n"] += 1
            v["reward"] += o.reward
            v["reward_sq"] += o.reward * o.reward
            v["passed"] += float(o.reward >= threshold and not o.failed)
            v["errors"] += float(o.failed)
            for name in self.sub_names:
                v[f"sub/{name}"] += o.sub_rewards.get(name, 0.0)
        v["seconds"] += graded.seconds
        v["tokens"] += float(sum(len(r) for r in responses))
        v["unfinished"] += float(sum(not finished(r, eos_ids) for r in responses))

    def reduce(self, accelerator: Any) -> Tally:
        """The sums over every process (a copy; this process's own are kept)."""
        keys = list(self.values)
        local = torch.tensor([self.values[k] for k in keys], dtype=torch.float64, device=accelerator.device)
        total = accelerator.reduce(local, reduction="sum").tolist()
        out = Tally(self.sub_names)
        out.values = dict(zip(keys, total, strict=True))
        return out

    @property
    def error_share(self) -> float:
        return self.values["errors"] / max(self.values["n"], 1.0)

    def metrics(self, prefix: str) -> dict[str, float]:
        v = self.values
        n = max(v["n"], 1.0)
        mean = v["reward"] / n
        out = {
            f"{prefix}/reward": mean,
            f"{prefix}/reward_std": max(v["reward_sq"] / n - mean * mean, 0.0) ** 0.5,
            f"{prefix}/pass_rate": v["passed"] / n,
            f"{prefix}/grader_error_rate": v["errors"] / n,
            f"{prefix}/grader_seconds": v["seconds"],
            f"{prefix}/generation_length": v["tokens"] / n,
            f"{prefix}/unfinished": v["unfinished"] / n,
        }
        out.update({f"{prefix}/sub_reward/{name}": v[f"sub/{name}"] / n for name in self.sub_names})
        return out


def decode_answers(tokenizer: Any, responses: Sequence[Sequence[int]]) -> list[str]:
    """The text a grader sees as sample.output_text: the answer without its end-of-turn token."""
    return [tokenizer.decode(r, skip_special_tokens=True) for r in responses]


@dataclass
class GradedValidation:
    """A job's validation prompts and grader: `evaluate` answers and grades them (eval/*).

    Its tasks come from the validation file (`graded_tasks`): a reinforcement line is a prompt and its
    item; a demonstration or preference line is its prompt, with the line plus `reference` (its own
    answer's text) as the item, so `{{item.reference}}` compares an answer with the one the file gives."""

    tasks: list[Task]
    grader: Any
    settings: Any  # GenerationSettings with max_new_tokens a number
    samples: int  # answers per prompt: 1 = greedy
    seed: int
    limits: Limits

    @torch.no_grad()
    def evaluate(
        self, model: Any, tokenizer: Any, accelerator: Any, eos_ids: Sequence[int]
    ) -> dict[str, float]:
        """eval/* of `model` (unwrapped): each process answers and grades its strided share."""
        mine = shard(list(range(len(self.tasks))), accelerator.process_index, accelerator.num_processes)
        decoding = (
            self.settings if self.samples > 1 else self.settings.model_copy(update={"temperature": 0.0})
        )
        responses = generate_responses(
            model,
            tokenizer,
            [self.tasks[i].prompt for i in mine],
            decoding,
            num_return_sequences=self.samples,
            seed=self.seed,
            keys=mine,
        )
        items = [self.tasks[i].item for i in mine for _ in range(self.samples)]
        graded = grade(self.grader, decode_answers(tokenizer, responses), items, self.limits)
        tally = Tally(sub_grader_names(self.grader))
        tally.add(graded, pass_threshold(self.grader), responses, eos_ids)
        return tally.reduce(accelerator).metrics("eval")


def graded_tasks(path: str, tokenizer: Any, max_prompt_len: int) -> tuple[list[Task], int]:
    """The validation file's prompts and items (see `GradedValidation`), and the longest reference answer
    in tokens (0 for a file of reinforcement lines), which sizes max_new_tokens "auto"."""
    try:
        rows = read_jsonl(path)
    except ValueError as exc:
        raise DataError("validation_file", f"validation_file: {exc}") from exc
    ensure_chat_template(tokenizer)
    tasks, longest = [], 0
    for lineno, row in rows:
        try:
            if detect_format(row) == "reinforcement":
                tasks.append(Task(lineno, prompt_ids(tokenizer, row["messages"], max_prompt_len), row))
                continue
            prompt, response = prompt_and_response(tokenizer, row)
        except ValueError as exc:
            raise DataError("validation_file", f"validation_file: line {lineno}: {exc}") from exc
        reference = tokenizer.decode(response, skip_special_tokens=True)
        tasks.append(Task(lineno, list(prompt[-max_prompt_len:]), {**row, "reference": reference}))
        longest = max(longest, len(response))
    return tasks, longest


def sandbox_limits(config: Any) -> Limits:
    """The limits python graders run under, on the run's grader interpreter (this one when unset)."""
    return Limits(python=config.grader_python) if config.grader_python else Limits()


def load_graded_validation(config: Any, tokenizer: Any, report: Any) -> GradedValidation | None:
    """The run's graded evaluation, when it has a grader and a validation file; else None."""
    if config.grader is None or not config.validation_file:
        return None
    hp = config.hyperparameters
    generation = getattr(hp, "generation", None) or GenerationSettings()
    tasks, longest = graded_tasks(config.validation_file, tokenizer, generation.max_prompt_len)
    if generation.max_new_tokens == "auto":  # from the references, as the reward-learning methods' samples
        tokens = max(1, min(AUTO_NEW_TOKENS_FACTOR * max(longest, 1), hp.max_seq_len))
        generation = generation.model_copy(update={"max_new_tokens": tokens})
    samples = getattr(hp, "eval_samples", 1)
    report.log_event(
        f"Graded evaluation: {len(tasks)} validation prompts, {samples} answer(s) each, "
        f"by a {config.grader.type} grader",
        data={"prompts": len(tasks), "samples": samples, "max_new_tokens": generation.max_new_tokens},
    )
    return GradedValidation(tasks, config.grader, generation, samples, config.seed, sandbox_limits(config))
