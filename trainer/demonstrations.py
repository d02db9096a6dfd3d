"""Reading a training or validation file into what a method trains on, with the data event it reports.

- `load_examples`: token ids and labels of every row (SFT's examples; `data.py` does the tokenising).
- `load_demonstrations`: (prompt, response) token ids of every row, the response being the last
  assistant turn (`pairs.prompt_and_response`), truncated as docs/methods.md §1.3 says (IRFT and RFT).

Both give the tokenizer the ChatML default template when a row needs one and the tokenizer has none,
and say so in a warning event; errors are `DataError`s naming the file's parameter and the line.
"""

from __future__ import annotations

from typing import Any

from trainer.callbacks import Sink
from trainer.data import TokenizedExample, detect_format, ensure_chat_template, load_sft_dataset, read_jsonl
from trainer.errors import DataError
from trainer.pairs import prompt_and_response, truncate_pair

DEFAULT_TEMPLATE_WARNING = "The tokenizer has no chat template; using the ChatML default"


def load_examples(
    path: str, param: str, tokenizer: Any, max_seq_len: int, report: Sink
) -> list[TokenizedExample]:
    """Tokenised examples of `path` (rows left with no trained token are dropped and counted)."""
    try:
        examples, stats = load_sft_dataset(path, tokenizer, max_seq_len)
    except ValueError as exc:  # the message carries the line number
        raise DataError(param, f"{param}: {exc}") from exc
    if stats.used_default_chat_template:
        report.log_event(DEFAULT_TEMPLATE_WARNING, level="warning")
    split = "training" if param == "training_file" else "validation"
    report.log_event(
        f"Loaded {stats.n_examples} {split} examples from {stats.n_rows} rows "
        f"({stats.n_truncated} truncated, {stats.n_dropped} dropped with no trained token)",
        level="warning" if stats.n_dropped else "info",
        data={
            "split": split,
            "rows": stats.n_rows,
            "examples": stats.n_examples,
            "truncated": stats.n_truncated,
            "dropped": stats.n_dropped,
            "trained_tokens_per_epoch": stats.n_trained_tokens,
            "formats": stats.formats,
        },
    )
    if param == "training_file" and not examples:
        raise DataError(param, f"{param}: expected at least one example with a trained token, got none")
    return examples


def load_demonstrations(
    path: str, tokenizer: Any, max_seq_len: int, max_prompt_len: int, report: Sink
) -> list[tuple[list[int], list[int]]]:
    """(prompt, response) token ids of every row of the training file: the prompt keeps its last
    max_prompt_len tokens and the response the rest of max_seq_len."""
    try:
        rows = read_jsonl(path)  # every row checked by the upload validator's rules, line numbers included
    except ValueError as exc:
        raise DataError("training_file", f"training_file: {exc}") from exc
    kinds = [detect_format(row) for _, row in rows]
    if any(kind != "prompt_completion" for kind in kinds) and ensure_chat_template(tokenizer):
        report.log_event(DEFAULT_TEMPLATE_WARNING, level="warning")
    demos = []
    for lineno, row in rows:
        try:
            prompt, response = prompt_and_response(tokenizer, row)
        except ValueError as exc:
            raise DataError("training_file", f"training_file: line {lineno}: {exc}") from exc
        prompt, (response,) = truncate_pair(prompt, [response], max_seq_len, max_prompt_len)
        demos.append((prompt, response))
    if not demos:
        raise DataError("training_file", "training_file: expected at least one example, got none")
    report.log_event(
        f"Loaded {len(demos)} demonstrations",
        data={
            "split": "training",
            "rows": len(rows),
            "examples": len(demos),
            "trained_tokens_per_epoch": sum(len(r) for _, r in demos),
        },
    )
    return demos
