"""A reinforcement file's prompts and their grader items (OpenAI's RFT lines, trainer/spec/formats.py).

Each line is `messages` ending in the prompt (a message that is not the assistant's), optional `tools`,
and any further keys: the grader reads the whole line as `item` (`{{item.answer}}`). The prompt is the
messages rendered by the chat template with its generation prompt, exactly what the policy is given when
it samples, keeping its last `max_prompt_len` tokens (docs/methods.md §1.3, as IRFT's and RFT's prompts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainer.callbacks import Sink
from trainer.data import _messages, _render, detect_format, ensure_chat_template, read_jsonl
from trainer.demonstrations import DEFAULT_TEMPLATE_WARNING
from trainer.errors import DataError


@dataclass(frozen=True)
class Task:
    """One prompt to answer and what its grader reads."""

    line: int  # 1-based line of the file
    prompt: list[int]  # token ids, generation prompt included
    item: dict[str, Any]  # the whole line


def prompt_ids(tokenizer: Any, messages: list[dict[str, Any]], max_prompt_len: int) -> list[int]:
    """The messages as the policy sees them before it answers, its last max_prompt_len tokens."""
    text = _render(tokenizer, _messages(messages, "messages"), add_generation_prompt=True)
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return ids[-max_prompt_len:]


def load_tasks(path: str, param: str, tokenizer: Any, max_prompt_len: int, report: Sink) -> list[Task]:
    """Every line of a reinforcement file as a Task; `DataError` naming `param` and the line for a line
    that is not a reinforcement example (a chat example with its answer, say) or cannot be rendered."""
    try:
        rows = read_jsonl(path)  # every row checked by the upload validator's rules
    except ValueError as exc:
        raise DataError(param, f"{param}: {exc}") from exc
    if ensure_chat_template(tokenizer):
        report.log_event(DEFAULT_TEMPLATE_WARNING, level="warning")
    tasks = []
    for lineno, row in rows:
        kind = detect_format(row)
        if kind != "reinforcement":
            raise DataError(
                param,
                f"{param}: line {lineno}: expected a reinforcement example (messages ending in the prompt, "
                f"a user message, plus the keys its grader reads), got a {kind} example",
            )
        try:
            tasks.append(Task(lineno, prompt_ids(tokenizer, row["messages"], max_prompt_len), row))
        except ValueError as exc:
            raise DataError(param, f"{param}: line {lineno}: {exc}") from exc
    if not tasks:
        raise DataError(param, f"{param}: expected at least one prompt, got none")
    report.log_event(
        f"Loaded {len(tasks)} prompts",
        data={"split": "training" if param == "training_file" else "validation", "prompts": len(tasks)},
    )
    return tasks
