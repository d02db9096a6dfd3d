"""JSONL examples -> token ids and labels for completion-only training.

Every row is held to the rules the upload validator applies to it, the same code: `trainer.spec.formats`
(which format a row is in, which top-level keys it may and must have) and `trainer.spec.rules` (what a
good row of that format is: roles and their order, content, weights, preference outputs, ...).
`read_jsonl` runs them on every row it reads, so a row that upload refuses is refused here too, at the
same line with the same reason (`"{path}: line {n}: {reason}"`), and a row with nothing to train on (no
assistant message, every weight 0) is an error, not a silently dropped row. (Only upload's whole-file
rules are not applied here: one format per file, a minimum of examples, a longest line.) In short:

- chat: `{"messages": [{"role": "system"|"user"|"assistant", "content": str | text parts, "weight": 0|1},
  ...]}`: an optional system message first, a user message next, an assistant message last; `weight`
  only on assistant messages (default 1).
- prompt/completion: `{"prompt": str, "completion": str}` (the completion not empty).
- preference (used for evaluation; SFT trains on the preferred side):
  `{"prompt": str | messages, "chosen": str | [assistant message], "rejected": ...}` or OpenAI's
  `{"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]}`.

The rules also accept OpenAI's tool calls (`tool_calls`/`function_call` on assistant messages, `tool`
and `function` messages); the trainer cannot render them yet and refuses such a row (`_messages`).
`read_jsonl` reads lines as the validator does: split at `\\n`, UTF-8, one BOM at the start of the file
ignored, `NaN`/`Infinity` and unpaired `\\u` surrogates refused, so both number lines alike and refuse
the same bytes.

Labels follow the convention in `collators.py`: the token id where the model is trained, -100
elsewhere. Trained tokens are the assistant messages with weight 1 (for prompt/completion: the
completion), each including the end-of-turn/EOS token that closes it, so the model learns to stop.

How assistant spans are found: render `messages[:i]` with the generation prompt and
`messages[:i+1]` without it; the characters between the two are message i as the template writes
it. Anything after the last EOS in that stretch (ChatML's trailing newline) is template glue that the
model never generates, so it stays masked. The whole conversation is tokenised once and a token is
trained when its first character falls in a trained span, so the ids are exactly what the model sees
when the full conversation is tokenised. This needs every rendered prefix to be a prefix of the
full rendering; templates that rewrite history (e.g. drop earlier reasoning) are rejected with an error.

Prompt/completion rows go through the chat template as a user/assistant pair when the tokenizer has
one, so that the tuned model is prompted the same way at inference as chat-tuned models are. Without a
template they are plain text: `[bos] prompt completion [eos]` (base-model continuation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.spec import formats as format_rule
from trainer.spec import rules as example_rules
from trainer.spec.lines import LineError, decode_line

IGNORE_INDEX = -100

# ChatML, used when a tokenizer has no chat template. If the tokenizer's EOS is not `<|im_end|>`,
# assistant turns also end with EOS, so that generation stops at the tokenizer's EOS.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' }}"
    "{% if message['role'] == 'assistant' and eos_token is defined and eos_token"
    " and eos_token != '<|im_end|>' %}"
    "{{ eos_token }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # same length; IGNORE_INDEX where not trained

    @property
    def num_trained_tokens(self) -> int:
        # Position 0 is never scored: logits at t predict the token at t + 1.
        return sum(1 for label in self.labels[1:] if label != IGNORE_INDEX)


@dataclass
class DataStats:
    n_rows: int = 0
    n_examples: int = 0  # kept after dropping
    n_truncated: int = 0  # longer than max_seq_len, cut at the end
    n_dropped: int = 0  # no trained token left after truncation
    n_trained_tokens: int = 0  # per epoch
    used_default_chat_template: bool = False
    formats: dict[str, int] = field(default_factory=dict)


def read_jsonl(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """Parse a JSONL file into (1-based line number, object) pairs, skipping blank lines, and check every
    row by the upload validator's rules (`check_row`).

    Lines are split at `\\n` only (a `\\r` before it is whitespace), as the upload validator splits them;
    a UTF-8 BOM is ignored at the start of the file only. ValueError names the line of a bad one.
    """
    rows = []
    file_format = None  # the first row's, as the validator's: what a row with only `prompt` lacks
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                row = decode_line(raw.removesuffix(b"\n"), lineno)
            except LineError as e:
                raise ValueError(f"{path}: line {lineno}: {e.reason}") from None
            if row is None:  # blank
                continue
            try:
                row_format = check_row(row, file_format)
            except ValueError as e:
                raise ValueError(f"{path}: line {lineno}: {e}") from None
            file_format = file_format or row_format
            rows.append((lineno, row))
    return rows


def check_row(row: dict[str, Any], file_format: format_rule.Format | None = None) -> format_rule.Format:
    """The format of a row the upload validator would accept, by its rules (`trainer.spec.formats`, then
    `trainer.spec.rules`); else ValueError with the validator's reason, prefixed "unrecognised row: " when
    the top-level keys make no single format. `file_format` (the format of the file's first row) decides
    only what a row with just `prompt` is an incomplete example of."""
    try:
        return example_rules.check_row(row, prefer=file_format)
    except format_rule.FormatError as e:
        raise ValueError(f"unrecognised row: {e.reason}") from None
    except example_rules.RowError as e:
        raise ValueError(e.reason) from None


def detect_format(row: dict[str, Any]) -> str:
    """'chat', 'prompt_completion', 'preference' or 'reinforcement': the format of a row the rules accept (`check_row`);
    ValueError with the validator's reason for any other row."""
    return check_row(row).value


def _text(content: str | list[dict[str, Any]]) -> str:
    """A content the rules accepted: a string, or OpenAI-style text parts `[{"type": "text", "text": ...}]`."""
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content)


_UNRENDERED_ROLES = frozenset({"tool", "function"})


def _messages(messages: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Messages the rules accepted, as the tokeniser takes them: role, content as one string, weight
    (default 1). A tool or function call or result is refused: the templates get only role and content,
    so the trainer cannot render them yet."""
    out = []
    for j, m in enumerate(messages):
        role = m["role"]
        if role in _UNRENDERED_ROLES or m.get("tool_calls") is not None or m.get("function_call") is not None:
            what = f"a {role} message" if role in _UNRENDERED_ROLES else "an assistant message with a call"
            raise ValueError(
                f"{where}[{j}] is {what}: the trainer cannot train tool or function calls yet "
                "(it renders only the role and content of system, user and assistant messages)"
            )
        out.append({"role": role, "content": _text(m["content"]), "weight": m.get("weight", 1)})
    return out


def ensure_chat_template(tokenizer) -> bool:
    """Give `tokenizer` the ChatML default when it has no chat template. Returns True if it did."""
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = CHATML_TEMPLATE
    return True


def _render(tokenizer, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]  # templates never see "weight"
    return tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=add_generation_prompt)


def chat_trained_spans(tokenizer, messages: list[dict[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
    """Render `messages` and return (text, [(start, end) character spans to train on])."""
    full = _render(tokenizer, messages, add_generation_prompt=False)
    eos = tokenizer.eos_token
    spans: list[tuple[int, int]] = []
    prev_end = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not (upto.startswith(before) and full.startswith(upto) and len(before) >= prev_end):
            raise ValueError(
                "the chat template does not render conversations prefix-consistently (message "
                f"{i}: rendering messages[:{i}] with the generation prompt is not a prefix of rendering "
                f"messages[:{i + 1}], or that is not a prefix of the whole conversation); assistant "
                "tokens cannot be located. Use a template that does not rewrite earlier turns."
            )
        start, end = len(before), len(upto)
        if eos:
            cut = upto.rfind(eos, start, end)
            if cut >= 0:
                end = cut + len(eos)  # keep EOS, drop the glue after it
        prev_end = len(upto)
        if message.get("weight", 1) and end > start:
            spans.append((start, end))
    return full, spans


def _tokenize_with_spans(tokenizer, text: str, spans: list[tuple[int, int]]) -> TokenizedExample:
    """Tokenise `text` once; label a token when its first character lies inside a trained span."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    labels = []
    for token_id, (start, _end) in zip(ids, enc["offset_mapping"], strict=True):
        trained = any(s <= start < e for s, e in spans)
        labels.append(token_id if trained else IGNORE_INDEX)
    return TokenizedExample(ids, labels)


def tokenize_chat(tokenizer, messages: list[dict[str, Any]]) -> TokenizedExample:
    """Token ids of the rendered conversation; labels only on trained assistant messages."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("a fast tokenizer (with offset mapping) is required to locate assistant tokens")
    text, spans = chat_trained_spans(tokenizer, messages)
    return _tokenize_with_spans(tokenizer, text, spans)


def tokenize_prompt_completion(tokenizer, prompt: str, completion: str) -> TokenizedExample:
    """Through the chat template when there is one; else `[bos] prompt completion [eos]`."""
    if getattr(tokenizer, "chat_template", None):
        return tokenize_chat(
            tokenizer,
            [
                {"role": "user", "content": prompt, "weight": 1},
                {"role": "assistant", "content": completion, "weight": 1},
            ],
        )
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    prompt_ids = bos + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return TokenizedExample(prompt_ids + completion_ids, [IGNORE_INDEX] * len(prompt_ids) + completion_ids)


def row_to_example(tokenizer, row: dict[str, Any]) -> TokenizedExample:
    """Tokenise one row of any accepted format (preference rows: the preferred response)."""
    kind = detect_format(row)
    if kind == "reinforcement":
        raise ValueError(
            "a reinforcement line (messages ending in the prompt) has no response to train on: it is for "
            "the reinforcement method, which samples and grades its answers"
        )
    if kind == "chat":
        return tokenize_chat(tokenizer, _messages(row["messages"], "messages"))
    if kind == "prompt_completion":
        return tokenize_prompt_completion(tokenizer, row["prompt"], row["completion"])
    # Preference, as the rules have it: TRL's prompt/chosen are both strings or both message lists (chosen
    # one assistant message); OpenAI's are input.messages and a one-message preferred_output.
    if "input" in row:
        prompt = _messages(row["input"]["messages"], "input.messages")
        chosen = _messages(row["preferred_output"], "preferred_output")
    elif isinstance(row["prompt"], str):
        return tokenize_prompt_completion(tokenizer, row["prompt"], row["chosen"])
    else:
        prompt, chosen = _messages(row["prompt"], "prompt"), _messages(row["chosen"], "chosen")
    # Only the preferred response is trained, even if the prompt contains assistant turns.
    return tokenize_chat(tokenizer, [{**m, "weight": 0} for m in prompt] + chosen)


def truncate(example: TokenizedExample, max_seq_len: int) -> TokenizedExample:
    """Keep the first `max_seq_len` tokens (the prompt context; the response end may be lost)."""
    return TokenizedExample(example.input_ids[:max_seq_len], example.labels[:max_seq_len])


def load_sft_dataset(
    path: str | Path, tokenizer, max_seq_len: int
) -> tuple[list[TokenizedExample], DataStats]:
    """Read and tokenise a JSONL file. Sets the ChatML default template if chat rows need one.

    Returns the kept examples (in file order) and counts of what was truncated or dropped. A row that
    breaks the upload validator's rules is a ValueError naming its line (`read_jsonl`); a row is dropped
    only when truncation leaves it no trained token.
    """
    rows = read_jsonl(path)  # every row checked by the upload validator's rules
    stats = DataStats(n_rows=len(rows))
    kinds = [detect_format(row) for _, row in rows]
    for kind in kinds:
        stats.formats[kind] = stats.formats.get(kind, 0) + 1
    if any(k != "prompt_completion" for k in kinds):
        stats.used_default_chat_template = ensure_chat_template(tokenizer)

    examples = []
    for lineno, row in rows:
        try:
            example = row_to_example(tokenizer, row)
        except ValueError as e:
            raise ValueError(f"{path}: line {lineno}: {e}") from None
        if len(example.input_ids) > max_seq_len:
            stats.n_truncated += 1
            example = truncate(example, max_seq_len)
        if example.num_trained_tokens == 0:
            stats.n_dropped += 1
            continue
        examples.append(example)
    stats.n_examples = len(examples)
    stats.n_trained_tokens = sum(e.num_trained_tokens for e in examples)
    return examples, stats
