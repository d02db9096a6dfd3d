"""The one rule that says which format a JSONL row is in: chat, prompt/completion, preference or
reinforcement.

The upload validator (`api.validation`) and the trainer (`trainer.data.detect_format`, and through it
SFT, RFT, IRFT and the evaluation) both ask this module, so a row the API accepts at upload is read as
the same format by the trainer, and a row whose keys the API refuses is refused by the trainer too.

Five row shapes make four formats (`Format`):

    shape               format              required keys
    chat                chat                messages (optional: tools, parallel_tool_calls, functions)
    prompt_completion   prompt_completion   prompt, completion
    trl_preference      preference          prompt, chosen, rejected (TRL's)
    openai_preference   preference          input, preferred_output, non_preferred_output (OpenAI's DPO)
    reinforcement       reinforcement       messages ending in a message that is not the assistant's
                                            (optional: tools, ...; any other key is the grader's item)

The rule, in two steps:

1. Which shape (`identify`). Every shape has identifying keys, the required keys no other shape has:
   `messages` (chat), `completion` (prompt_completion), `chosen`/`rejected` (trl_preference),
   `input`/`preferred_output`/`non_preferred_output` (openai_preference). A row with identifying keys of
   exactly one shape is that shape, whatever else it carries. A row with identifying keys of several
   shapes is `ambiguous_format`. A row with none is `unknown_format`, except that a row with the shared
   key `prompt` (prompt_completion and trl_preference both require it) is taken as an incomplete row of
   the caller's file format when that is one of the two (`prefer`), else of prompt_completion.
2. Whether its top-level keys are right (`check_keys`): no key outside the shape's required and
   optional keys (`unrecognized_key`), and every required key present (`missing_key`), in that order.

`detect_format(row)` does both and returns the format. Only top-level keys are this module's business:
what the values must be (message roles, weights, content parts, ...) is decided by the per-example
rules, `trainer.spec.rules`, which both sides run after this one.

Why this rule:

- Before it, the rule was written four times and disagreed. The validator read a row with `prompt` OR
  `completion` as prompt/completion and picked by priority (messages > preference > prompt_completion);
  the trainer required `prompt` AND `completion`, took `chosen`/`preferred_output` (but not `rejected`
  or `non_preferred_output`) as preference, and then silently ignored every key it did not read. So
  `{"prompt", "completion", "chosen"}` was refused at upload but trained by the CLI as a preference row
  on `chosen` with the completion dropped, and `{"prompt", "chosen"}` (no `rejected`) trained fine.
  Separating "which format was meant" (any identifying key) from "is the row complete and clean" (the
  key check) lets both sides refuse the same rows, with the same reason.
- Several formats is an error, not a priority order: nothing tells whether `{"prompt", "completion",
  "chosen"}` is a prompt/completion row with a stray key or a preference row with one, and either guess
  trains on the wrong thing; the message names the keys of each format so the user can choose.
- `prompt` alone identifies nothing, because it is shared. Reading an incomplete row as the file's format
  reports the key that is missing ("missing the required key 'completion'", or 'chosen' in a preference
  file) rather than "matches no format", which is the more useful message for the likeliest mistake.
- Unknown top-level keys are refused, not dropped, as the upload validator always did (OpenAI's data-prep
  checks treat unknown message keys the same way): a silently ignored key is usually a typo
  (`"completions"`) or data the user believes is used (`"weight"` at the top level, `"metadata"`). The
  trainer now refuses them as well, so a file that fails upload does not train from `python -m trainer`.
- OpenAI's shapes (docs/api.md, "Training files"): chat is `FineTuneChatRequestInput` (`messages` plus the
  optional `tools`, `parallel_tool_calls` and the deprecated `functions`); preference is OpenAI's DPO line
  `{"input": {"messages", "tools"?, "parallel_tool_calls"?}, "preferred_output", "non_preferred_output"}`.
  The May-2025 names `preferred_completion`/`non_preferred_completion` are not accepted (OpenAI and
  Together now use `*_output`); with `input` present they are reported as unrecognized keys.
- OpenAI's reinforcement lines (the `reinforcement` method's files) are `messages` that end in the
  prompt, a user message, plus any keys the grader reads as `item`. They share `messages` with chat, so
  the last message tells them apart: a `messages` row whose last message is not the assistant's is a
  reinforcement row when it opens a file (or sits in a reinforcement file), and a chat row that lacks
  its reply inside a chat or prompt_completion file, where that is the likelier mistake. Only a
  reinforcement row may carry keys of its own: in a chat row an unknown key is still refused.
  Juice's `rft` (the paper's reward-learning fine-tune) is another method: it trains on chat
  demonstrations.
- TRL's `{"prompt", "chosen", "rejected"}` is accepted beside OpenAI's because it is what the open-source
  preference datasets are published in; both shapes are the one format `preference` and may share a file.

Pure Python, standard library only: the API imports it without torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "ACCEPTED_SHAPES",
    "CHAT_SHAPE",
    "FORMAT_ERROR_CODES",
    "OPENAI_PREFERENCE_SHAPE",
    "PROMPT_COMPLETION_SHAPE",
    "REINFORCEMENT_SHAPE",
    "SHAPES",
    "TRL_PREFERENCE_SHAPE",
    "Format",
    "FormatError",
    "Shape",
    "check_keys",
    "detect_format",
    "identify",
]


class Format(StrEnum):
    """A row's (and a file's) format. A str enum: compares equal to, and serialises as, its value."""

    CHAT = "chat"
    PROMPT_COMPLETION = "prompt_completion"
    PREFERENCE = "preference"
    REINFORCEMENT = "reinforcement"


#: The codes `FormatError` carries (a subset of the upload validator's error codes).
FORMAT_ERROR_CODES = ("unknown_format", "ambiguous_format", "unrecognized_key", "missing_key")


class FormatError(ValueError):
    """A row whose top-level keys fit no format, several formats, or its format badly. ``code`` is one
    of `FORMAT_ERROR_CODES`; ``reason`` (also ``str(exc)``) says what is wrong without a line number."""

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(reason)

    def __reduce__(self):  # picklable despite the custom __init__
        return (type(self), (self.code, self.reason))


def _keys(keys: Iterable[str]) -> str:
    return ", ".join(repr(k) for k in sorted(keys))


@dataclass(frozen=True, eq=False)
class Shape:
    """One accepted row shape: its format, its top-level keys and how error messages name it."""

    name: str
    format: Format
    required: tuple[str, ...]  # in the order missing keys are reported
    optional: tuple[str, ...]
    identifying: frozenset[str]  # its required keys that no other shape allows (a test checks this)
    label: str  # how the ambiguity message names it
    allows: str  # "... example allows only ...", for unrecognized_key
    needs: str  # "(... example needs ...)", for missing_key
    open: bool = False  # any other top-level key is allowed (a reinforcement line's grader item)
    keys: frozenset[str] = field(init=False)  # required and optional: every key the shape allows

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", frozenset(self.required) | frozenset(self.optional))

    def __repr__(self) -> str:
        return f"<Shape {self.name}>"


_CHAT_KEYS = ("messages", "tools", "parallel_tool_calls", "functions")
_TRL_KEYS = ("prompt", "chosen", "rejected")
_OPENAI_KEYS = ("input", "preferred_output", "non_preferred_output")

CHAT_SHAPE = Shape(
    name="chat",
    format=Format.CHAT,
    required=("messages",),
    optional=("tools", "parallel_tool_calls", "functions"),
    identifying=frozenset({"messages"}),
    label="chat",
    allows=f"a chat example allows only {_keys(_CHAT_KEYS)}",
    needs="(a chat example needs 'messages')",
)
PROMPT_COMPLETION_SHAPE = Shape(
    name="prompt_completion",
    format=Format.PROMPT_COMPLETION,
    required=("prompt", "completion"),
    optional=(),
    identifying=frozenset({"completion"}),
    label="prompt_completion",
    allows="a prompt_completion example allows only 'prompt' and 'completion'",
    needs="(a prompt_completion example needs both 'prompt' and 'completion')",
)
TRL_PREFERENCE_SHAPE = Shape(
    name="trl_preference",
    format=Format.PREFERENCE,
    required=_TRL_KEYS,
    optional=(),
    identifying=frozenset({"chosen", "rejected"}),
    label="preference",
    allows=f"a preference example allows only {_keys(_TRL_KEYS)}",
    needs="(a preference example needs 'prompt', 'chosen' and 'rejected')",
)
OPENAI_PREFERENCE_SHAPE = Shape(
    name="openai_preference",
    format=Format.PREFERENCE,
    required=_OPENAI_KEYS,
    optional=(),
    identifying=frozenset(_OPENAI_KEYS),
    label="OpenAI-style preference",
    allows=f"an OpenAI-style preference example allows only {_keys(_OPENAI_KEYS)}",
    needs=f"(an OpenAI-style preference example needs {_keys(_OPENAI_KEYS)})",
)

REINFORCEMENT_SHAPE = Shape(
    name="reinforcement",
    format=Format.REINFORCEMENT,
    required=("messages",),
    optional=("tools", "parallel_tool_calls", "functions"),
    identifying=frozenset(),  # `messages`, ending in a message that is not the assistant's (`identify`)
    label="reinforcement",
    allows="a reinforcement example allows any further key (its grader's item)",
    needs="(a reinforcement example needs 'messages')",
    open=True,
)

#: In this order: an incomplete row (only shared keys) is taken as the first shape that requires one of
#: its keys, unless the caller prefers another; an ambiguity message lists shapes in this order.
SHAPES = (
    CHAT_SHAPE,
    PROMPT_COMPLETION_SHAPE,
    TRL_PREFERENCE_SHAPE,
    OPENAI_PREFERENCE_SHAPE,
    REINFORCEMENT_SHAPE,
)

_BY_IDENTIFYING_KEY = {key: shape for shape in SHAPES for key in shape.identifying}
_SHARED_REQUIRED = frozenset(
    key for shape in SHAPES for key in shape.required if key not in _BY_IDENTIFYING_KEY
)  # {"prompt"}

ACCEPTED_SHAPES = (
    '{"messages": [...]} (chat), {"prompt": "...", "completion": "..."} (prompt_completion), '
    '{"prompt": ..., "chosen": ..., "rejected": ...} or '
    '{"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]} (preference), '
    '{"messages": [..., {"role": "user", ...}], ...grader item keys} (reinforcement)'
)


def _ends_unanswered(row: Mapping[str, Any]) -> bool:
    """Whether the row's messages end in a message the assistant has not answered: a reinforcement
    prompt (a chat example ends in its assistant reply)."""
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], Mapping):
        return False
    return messages[-1].get("role") != "assistant"


def identify(row: Mapping[str, Any], prefer: Format | None = None) -> Shape:
    """The shape ``row``'s keys say it is (step 1 of the rule; keys are not checked yet).

    ``prefer``: the format of the file the row is in, if known; it only decides what a row with just the
    shared key ``prompt`` is an incomplete example of. Raises `FormatError` (``unknown_format``,
    ``ambiguous_format``).
    """
    found = None
    for key in row:
        shape = _BY_IDENTIFYING_KEY.get(key)
        if shape is not None and shape is not found:
            if found is not None:
                raise _ambiguous(row)
            found = shape
    if found is CHAT_SHAPE and prefer in (None, Format.REINFORCEMENT) and _ends_unanswered(row):
        # In a chat (or prompt_completion) file such a row stays a chat example, whose check then says
        # that its last message must be the assistant's: the likelier mistake there.
        return REINFORCEMENT_SHAPE
    if found is not None:
        return found
    shared = _SHARED_REQUIRED & row.keys()
    if shared:  # an incomplete row: of the preferred format if it requires these keys, else the first
        candidates = [s for s in SHAPES if not shared.isdisjoint(s.required)]
        return next((s for s in candidates if s.format is prefer), candidates[0])
    raise FormatError(
        "unknown_format",
        f"the example matches no accepted format (its keys are {_keys(row.keys()) or 'none'}); "
        f"accepted shapes: {ACCEPTED_SHAPES}",
    )


def _ambiguous(row: Mapping[str, Any]) -> FormatError:
    parts = [
        f"{_keys(k for k in row if k in shape.identifying)} ({shape.label})"
        for shape in SHAPES
        if not shape.identifying.isdisjoint(row.keys())
    ]
    return FormatError(
        "ambiguous_format",
        f"the example has the keys of more than one format: {' and '.join(parts)}; "
        "an example must use the keys of exactly one format",
    )


def check_keys(row: Mapping[str, Any], shape: Shape) -> None:
    """Step 2 of the rule: ``row`` has no top-level key outside ``shape``'s and all its required ones.
    Raises `FormatError` (``unrecognized_key``, then ``missing_key``)."""
    keys = row.keys()
    if not shape.open and not keys <= shape.keys:
        raise FormatError(
            "unrecognized_key",
            f"unrecognized top-level key(s) {_keys(keys - shape.keys)}; {shape.allows}",
        )
    for key in shape.required:
        if key not in row:
            raise FormatError("missing_key", f"missing the required key {key!r} {shape.needs}")


def detect_format(row: Mapping[str, Any]) -> Format:
    """The format of one row, by the whole rule (`identify`, then `check_keys`); `FormatError` if its
    top-level keys make no single well-formed shape. Values are not checked."""
    shape = identify(row)
    check_keys(row, shape)
    return shape.format
