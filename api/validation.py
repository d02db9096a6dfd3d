"""Streaming validation and format detection for JSONL fine-tuning files.

Pure module: standard library only (no FastAPI, SQLAlchemy or torch), so the API, the worker and
the CLI can all import it.

Usage::

    v = JsonlValidator()
    for chunk in upload:            # bytes chunks of any size, split anywhere (even mid-character)
        v.feed(chunk)               # raises FileValidationError at the first bad line
    report = v.finish()             # ValidationReport(format, examples, lines, warnings)

    validate_jsonl_bytes(data)      # whole file in memory
    validate_jsonl_file(fileobj)    # binary file object, read in 1 MiB chunks

Memory is O(longest line): only the current, unfinished line is buffered (at most
``max_line_bytes`` + 1 bytes, plus a leading BOM, before ``line_too_long`` is raised while the line is
still streaming in), never the whole file. Results, error texts included, do not depend on how the
input is chunked: bytes are split into lines first and every line is decoded on its own, so a
multi-byte UTF-8 character split across two chunks is fine.

Performance (CPython 3.11, one core of the dev VM, 1 MiB chunks, data in memory; measured with
synthetic files of ~100 MB, best of 3): ~75 MB/s for 3-message chat lines of ~230 bytes (330k
lines/s), ~60 MB/s for OpenAI-shape preference lines of ~240 bytes, ~55 MB/s for CJK + emoji chat
lines written with ``ensure_ascii=True``, ~290 MB/s for ~3 KB chat lines, ~260 MB/s end to end for a
200 MB file of realistic chat examples (~1.9 KB/line) read from disk; tiny 46-byte prompt/completion
lines reach only ~35 MB/s (760k lines/s): the cost is per line (``json`` C scanner plus ~1 µs of
checks), so short lines are slower in MB/s. Peak traced memory for the 200 MB file was ~3 MB.

Accepted formats (every line of a file must use the same one, the format of its first example):

* ``chat``: ``{"messages": [...], "tools"?: [...], "parallel_tool_calls"?: bool, "functions"?: [...]}``
  (OpenAI ``FineTuneChatRequestInput``; also what RFT and IRFT train on).
* ``prompt_completion``: ``{"prompt": str, "completion": str}``.
* ``preference`` (DPO), in either of two shapes, which may be mixed within a file:
  TRL's ``{"prompt": str|messages, "chosen": str|messages, "rejected": str|messages}`` or OpenAI's
  ``{"input": {"messages": [...], "tools"?, "parallel_tool_calls"?},
  "preferred_output": [<1 assistant msg>], "non_preferred_output": [<1 assistant msg>]}``.

Lexical rules: UTF-8 only; one leading UTF-8 BOM is ignored; CRLF line ends are fine; a last line
without a newline is fine; blank (whitespace-only) lines are allowed anywhere and are not examples.
``lines`` counts physical lines (a final newline does not start another line), ``examples`` counts
non-blank lines. Line numbers are 1-based physical lines, so they match ``sed -n Np`` on the file.
``NaN``/``Infinity`` literals are rejected (they are not JSON), and so are ``\\udXXX`` escapes that
leave an unpaired UTF-16 surrogate (the text could not be encoded as UTF-8 for the tokenizer).

Decisions (the rules themselves are in the ``_check_*`` functions; each error has a stable ``code``):

* Unknown top-level keys are rejected (``unrecognized_key``) in every format, not silently dropped:
  ``metadata``, ``id`` and the like must be removed before upload. Chat allows ``tools``,
  ``parallel_tool_calls`` and ``functions``; OpenAI-shape preference ``input`` allows ``messages``,
  ``tools`` and ``parallel_tool_calls``.
* Message keys: ``role`` and ``content`` are required, except that an assistant message carrying
  ``tool_calls`` or ``function_call`` may omit ``content`` or set it to null or "". Other allowed keys:
  ``name``, ``weight``, ``function_call``, ``tool_calls``, ``tool_call_id``.
* ``"tool_calls": null`` and ``"function_call": null`` count as absent, as in messages exported from
  the OpenAI SDK's models. ``tool_calls`` and ``function_call`` are only allowed on assistant
  messages and ``tool_call_id`` only on tool messages; function arguments must be JSON-encoded
  strings, as OpenAI sends them.
* Content is a non-empty string, or a non-empty list of text parts ``{"type": "text", "text": str}``
  whose texts are not all empty. Image and audio parts are rejected (``invalid_content_type``): the
  trainer is text-only.
* ``weight`` exists only in chat files, only on assistant messages, and must be the integer 0 or 1
  (``true``/``false``, ``1.0`` and ``0.5`` are rejected).
* Chat role order: a system message may only be the first message; the first message after it must
  be a user message; the last message must be an assistant message; a ``tool`` message must follow
  an assistant message with ``tool_calls`` (or another tool message) and a ``function`` message must
  follow one with ``function_call`` (or another function message). Repeated user or assistant turns
  are allowed (OpenAI allows them; chat templates that forbid them are the trainer's concern).
  If no assistant message has weight 1, the code is ``example_missing_assistant_message``; that
  check comes before the last-message check, so ``[user]`` reports the missing assistant message.
* Because a chat must start (after the system message) with a user message, the "no user message"
  warning can only fire for preference prompts, which may consist of just a system message.
* prompt_completion: both values must be strings; ``completion`` must not be empty; an empty
  ``prompt`` is allowed (unconditional generation) but produces a warning.
* preference: the prompt (``prompt`` or ``input.messages``) must not be empty, its messages follow the
  chat rules above except that the last one must not be an assistant message. ``prompt``, ``chosen``
  and ``rejected`` must be all strings or all message lists. Each output (``chosen``/``rejected`` as
  lists, ``preferred_output``/``non_preferred_output``) is a list of exactly one assistant message
  (``invalid_preference_output``). Identical chosen and rejected outputs are a warning, not an error.
* ``empty_file`` when there are no examples at all (zero bytes, only blank lines or only a BOM),
  ``insufficient_examples`` when there are fewer than ``min_examples``. Both have ``line=None``.
* Warnings are capped at ``MAX_WARNINGS`` entries plus one final "... more warnings" entry.
* After an error the validator is dead: every later ``feed``/``finish`` re-raises the same error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, BinaryIO

__all__ = [
    "ERROR_CODES",
    "MAX_WARNINGS",
    "FileFormat",
    "FileValidationError",
    "JsonlValidator",
    "ValidationReport",
    "validate_jsonl_bytes",
    "validate_jsonl_file",
]

MAX_WARNINGS = 20

#: Every ``FileValidationError.code`` this module can raise.
ERROR_CODES = frozenset(
    {
        # file and line level
        "empty_file",
        "insufficient_examples",
        "invalid_utf8",
        "line_too_long",
        "invalid_json",
        "not_an_object",
        "unknown_format",
        "mixed_formats",
        # example level
        "unrecognized_key",
        "missing_key",
        "invalid_field_type",
        "missing_messages_list",
        "message_not_object",
        "message_missing_key",
        "message_unrecognized_key",
        "unrecognized_role",
        "missing_content",
        "invalid_content_type",
        "invalid_weight",
        "invalid_tool_call",
        "example_missing_assistant_message",
        "misplaced_system_message",
        "invalid_role_order",
        "invalid_preference_output",
    }
)


class FileFormat(str, Enum):
    CHAT = "chat"
    PROMPT_COMPLETION = "prompt_completion"
    PREFERENCE = "preference"


@dataclass
class ValidationReport:
    format: FileFormat
    examples: int  # number of non-blank lines (examples)
    lines: int  # total physical lines read
    warnings: list[str] = field(default_factory=list)  # "line 3: ...", at most MAX_WARNINGS + 1


class FileValidationError(ValueError):
    """A file that cannot be trained on. ``line`` is 1-based, or None for whole-file problems."""

    def __init__(self, line: int | None, code: str, reason: str) -> None:
        self.line = line
        self.code = code
        self.reason = reason
        super().__init__(f"line {line}: {reason}" if line is not None else reason)

    def __reduce__(self):  # keep it picklable (Celery, multiprocessing) despite the custom __init__
        return (type(self), (self.line, self.code, self.reason))

    def __repr__(self) -> str:
        return f"FileValidationError(line={self.line!r}, code={self.code!r}, reason={self.reason!r})"


class _Invalid(Exception):
    """Raised by the per-example checks; the validator adds the line number."""

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason


# --------------------------------------------------------------------------------------------------
# Per-example checks
# --------------------------------------------------------------------------------------------------

ROLES = ("system", "user", "assistant", "tool", "function")
_ROLES = frozenset(ROLES)
_MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "weight", "function_call", "tool_calls", "tool_call_id"}
)
_CHAT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
_PC_KEYS = frozenset({"prompt", "completion"})
_PREF_TRL_KEYS = ("prompt", "chosen", "rejected")
_PREF_OAI_KEYS = ("input", "preferred_output", "non_preferred_output")
_PREF_OAI_SET = frozenset(_PREF_OAI_KEYS)
_PREF_TRL_SET = frozenset(_PREF_TRL_KEYS)
_PREF_SIGNATURE = frozenset({"chosen", "rejected", *_PREF_OAI_KEYS})
_INPUT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls"})

_ACCEPTED_SHAPES = (
    '{"messages": [...]} (chat), {"prompt": "...", "completion": "..."} (prompt_completion), '
    '{"prompt": ..., "chosen": ..., "rejected": ...} or '
    '{"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]} (preference)'
)


def _jtype(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _show(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _keys(keys: Iterable[str]) -> str:
    return ", ".join(repr(k) for k in sorted(keys))


def _check_content(content: Any, where: str) -> bool:
    """Validate a content value; return True if it carries text (non-empty)."""
    if type(content) is str:
        return content != ""
    if content is None:
        return False
    if isinstance(content, list):
        has_text = False
        for j, part in enumerate(content):
            if not isinstance(part, dict):
                raise _Invalid(
                    "invalid_content_type",
                    f'{where}.content[{j}] must be an object like {{"type": "text", "text": "..."}}, '
                    f"got {_jtype(part)}",
                )
            ptype = part.get("type")
            if ptype != "text":
                raise _Invalid(
                    "invalid_content_type",
                    f"{where}.content[{j}].type must be 'text' (only text content is supported), "
                    f"got {_show(ptype)}",
                )
            extra = part.keys() - {"type", "text"}
            if extra:
                raise _Invalid(
                    "invalid_content_type",
                    f"{where}.content[{j}] has unrecognized key(s) {_keys(extra)}; "
                    "a text part has only 'type' and 'text'",
                )
            text = part.get("text")
            if type(text) is not str:
                raise _Invalid(
                    "invalid_content_type", f"{where}.content[{j}].text must be a string, got {_jtype(text)}"
                )
            if text:
                has_text = True
        return has_text
    raise _Invalid(
        "invalid_content_type",
        f"{where}.content must be a string or a list of text parts, got {_jtype(content)}",
    )


def _check_tool_calls(msg: dict, role: str, where: str) -> bool:
    """Validate tool_calls / function_call / tool_call_id; return True if the message calls a tool."""
    calls = False
    if msg.get("tool_calls") is not None:  # null means absent (exported SDK objects carry nulls)
        tool_calls = msg["tool_calls"]
        if role != "assistant":
            raise _Invalid(
                "invalid_tool_call",
                f"{where}.tool_calls is only allowed on assistant messages, not on a {role} message",
            )
        if not isinstance(tool_calls, list) or not tool_calls:
            raise _Invalid(
                "invalid_tool_call",
                f"{where}.tool_calls must be a non-empty list of tool calls, "
                f"got {_jtype(tool_calls) if tool_calls != [] else 'an empty list'}",
            )
        for j, call in enumerate(tool_calls):
            cw = f"{where}.tool_calls[{j}]"
            if not isinstance(call, dict):
                raise _Invalid("invalid_tool_call", f"{cw} must be an object, got {_jtype(call)}")
            if "type" in call and call["type"] != "function":
                raise _Invalid(
                    "invalid_tool_call", f"{cw}.type must be 'function', got {_show(call['type'])}"
                )
            if "id" in call and type(call["id"]) is not str:
                raise _Invalid("invalid_tool_call", f"{cw}.id must be a string, got {_jtype(call['id'])}")
            _check_function(call.get("function"), f"{cw}.function")
        calls = True
    if msg.get("function_call") is not None:
        if role != "assistant":
            raise _Invalid(
                "invalid_tool_call",
                f"{where}.function_call is only allowed on assistant messages, not on a {role} message",
            )
        _check_function(msg["function_call"], f"{where}.function_call")
        calls = True
    if "tool_call_id" in msg:
        if role != "tool":
            raise _Invalid(
                "invalid_tool_call",
                f"{where}.tool_call_id is only allowed on tool messages, not on a {role} message",
            )
        if type(msg["tool_call_id"]) is not str:
            raise _Invalid(
                "invalid_tool_call",
                f"{where}.tool_call_id must be a string, got {_jtype(msg['tool_call_id'])}",
            )
    return calls


def _check_function(fn: Any, where: str) -> None:
    if not isinstance(fn, dict):
        raise _Invalid(
            "invalid_tool_call", f"{where} must be an object with 'name' and 'arguments', got {_jtype(fn)}"
        )
    name = fn.get("name")
    if type(name) is not str or not name:
        raise _Invalid("invalid_tool_call", f"{where}.name must be a non-empty string, got {_show(name)}")
    if "arguments" in fn and type(fn["arguments"]) is not str:
        raise _Invalid(
            "invalid_tool_call",
            f"{where}.arguments must be a JSON-encoded string, got {_jtype(fn['arguments'])}",
        )


def _check_message(msg: Any, where: str, allow_weight: bool) -> tuple[str, bool, bool]:
    """Validate one message. Returns (role, calls_tool, trainable) where trainable means an
    assistant message with weight != 0."""
    if type(msg) is not dict:
        raise _Invalid(
            "message_not_object", f"{where} must be an object with 'role' and 'content', got {_jtype(msg)}"
        )
    if "role" not in msg:
        raise _Invalid("message_missing_key", f"{where} is missing the required key 'role'")
    if not msg.keys() <= _MESSAGE_KEYS:
        extra = msg.keys() - _MESSAGE_KEYS
        raise _Invalid(
            "message_unrecognized_key",
            f"{where} has unrecognized key(s) {_keys(extra)}; allowed keys are {_keys(_MESSAGE_KEYS)}",
        )
    role = msg["role"]
    if type(role) is not str or role not in _ROLES:
        raise _Invalid(
            "unrecognized_role", f"{where}.role must be one of {', '.join(ROLES)}, got {_show(role)}"
        )
    calls = False
    if len(msg) > 2 or "content" not in msg:  # anything beyond plain {"role", "content"}
        calls = _check_tool_calls(msg, role, where)
        if "name" in msg and type(msg["name"]) is not str:
            raise _Invalid("invalid_field_type", f"{where}.name must be a string, got {_jtype(msg['name'])}")
    if "content" not in msg:
        if not calls:
            raise _Invalid("message_missing_key", f"{where} is missing the required key 'content'")
    elif not _check_content(msg["content"], where) and not calls:
        raise _Invalid("missing_content", f"{where}.content must not be empty or null")
    trainable = role == "assistant"
    if "weight" in msg:
        weight = msg["weight"]
        if not allow_weight:
            raise _Invalid("invalid_weight", f"{where}.weight is only allowed in chat (SFT) files")
        if role != "assistant":
            raise _Invalid(
                "invalid_weight",
                f"{where}.weight is only allowed on assistant messages, not on a {role} message",
            )
        if type(weight) is not int or weight not in (0, 1):
            raise _Invalid(
                "invalid_weight", f"{where}.weight must be the integer 0 or 1, got {_show(weight)}"
            )
        trainable = weight == 1
    return role, calls, trainable


_PLAIN_ROLES = frozenset({"system", "user", "assistant"})


def _check_messages(messages: Any, where: str, *, prompt_only: bool) -> bool:
    """Validate a message list. For a chat example (``prompt_only=False``) the last message must be a
    trainable assistant message; for a preference prompt it must not be an assistant message.
    Returns whether a user message is present."""
    if type(messages) is not list or not messages:
        got = "an empty list" if messages == [] else _jtype(messages)
        raise _Invalid("missing_messages_list", f"{where} must be a non-empty list of messages, got {got}")
    allow_weight = not prompt_only
    has_user = False
    has_trainable = False
    prev_role = None
    prev_calls = False
    first_turn = True  # the next non-system message is the first one
    for i, msg in enumerate(messages):
        # Fast path: a plain {"role": "user"|"assistant"|"system", "content": "non-empty"} message.
        if type(msg) is dict and len(msg) == 2:
            role = msg.get("role")
            content = msg.get("content")
            if type(content) is str and content and type(role) is str and role in _PLAIN_ROLES:
                calls = False
                trainable = role == "assistant"
            else:
                role, calls, trainable = _check_message(msg, f"{where}[{i}]", allow_weight)
        else:
            role, calls, trainable = _check_message(msg, f"{where}[{i}]", allow_weight)
        if role == "system":
            if i:
                raise _Invalid(
                    "misplaced_system_message",
                    f"{where}[{i}] is a system message; a system message may only be the first message",
                )
        elif role == "user":
            has_user = True
            first_turn = False
        elif first_turn:
            raise _Invalid(
                "invalid_role_order",
                f"{where}[{i}].role must be 'user': the first message after the optional system "
                f"message must be a user message, got {role!r}",
            )
        elif role == "assistant":
            if trainable:
                has_trainable = True
        elif role == "tool":
            if not ((prev_role == "assistant" and prev_calls) or prev_role == "tool"):
                raise _Invalid(
                    "invalid_role_order",
                    f"{where}[{i}] is a tool message but does not follow an assistant message "
                    "with tool_calls",
                )
        elif not ((prev_role == "assistant" and prev_calls) or prev_role == "function"):  # function
            raise _Invalid(
                "invalid_role_order",
                f"{where}[{i}] is a function message but does not follow an assistant message "
                "with function_call",
            )
        prev_role = role
        prev_calls = calls
    if prompt_only:
        if prev_role == "assistant":
            raise _Invalid(
                "invalid_role_order",
                f"{where}[{len(messages) - 1}] is an assistant message; the last prompt message "
                "must not be from the assistant",
            )
    else:
        if not has_trainable:
            raise _Invalid(
                "example_missing_assistant_message",
                f"{where} has no assistant message to train on: every example needs at least one "
                "assistant message without weight 0",
            )
        if prev_role != "assistant":
            raise _Invalid(
                "invalid_role_order",
                f"{where}[{len(messages) - 1}].role must be 'assistant': the last message must be "
                f"an assistant message, got {prev_role!r}",
            )
    return has_user


def _check_tools_fields(obj: dict, where: str) -> None:
    if "tools" in obj:
        tools = obj["tools"]
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise _Invalid(
                "invalid_field_type", f"{where}tools must be a list of tool objects, got {_show(tools)}"
            )
    if "functions" in obj:
        fns = obj["functions"]
        if not isinstance(fns, list) or not all(isinstance(f, dict) for f in fns):
            raise _Invalid(
                "invalid_field_type", f"{where}functions must be a list of function objects, got {_show(fns)}"
            )
    if "parallel_tool_calls" in obj and type(obj["parallel_tool_calls"]) is not bool:
        raise _Invalid(
            "invalid_field_type",
            f"{where}parallel_tool_calls must be a boolean, got {_show(obj['parallel_tool_calls'])}",
        )


def _check_chat(obj: dict, warn) -> None:
    if len(obj) > 1 and not obj.keys() <= _CHAT_KEYS:
        raise _Invalid(
            "unrecognized_key",
            f"unrecognized top-level key(s) {_keys(obj.keys() - _CHAT_KEYS)}; "
            f"a chat example allows only {_keys(_CHAT_KEYS)}",
        )
    if len(obj) > 1:
        _check_tools_fields(obj, "")
    _check_messages(obj["messages"], "messages", prompt_only=False)


def _check_prompt_completion(obj: dict, warn) -> None:
    prompt = obj.get("prompt")
    completion = obj.get("completion")
    if len(obj) == 2 and type(prompt) is str and type(completion) is str and completion:  # fast path
        if not prompt:
            warn("prompt is empty")
        return
    if not obj.keys() <= _PC_KEYS:
        raise _Invalid(
            "unrecognized_key",
            f"unrecognized top-level key(s) {_keys(obj.keys() - _PC_KEYS)}; "
            "a prompt_completion example allows only 'prompt' and 'completion'",
        )
    for key in ("prompt", "completion"):
        if key not in obj:
            raise _Invalid(
                "missing_key",
                f"missing the required key {key!r} (a prompt_completion example "
                "needs both 'prompt' and 'completion')",
            )
        if type(obj[key]) is not str:
            raise _Invalid("invalid_content_type", f"{key} must be a string, got {_jtype(obj[key])}")
    if obj["completion"] == "":
        raise _Invalid("missing_content", "completion must not be empty")
    if obj["prompt"] == "":
        warn("prompt is empty")


def _check_output_list(value: Any, key: str) -> None:
    if type(value) is list and len(value) == 1:  # fast path: [{"role": "assistant", "content": "..."}]
        msg = value[0]
        if type(msg) is dict and len(msg) == 2 and msg.get("role") == "assistant":
            content = msg.get("content")
            if type(content) is str and content:
                return
    if not isinstance(value, list) or len(value) != 1:
        got = f"{len(value)} messages" if isinstance(value, list) else _jtype(value)
        raise _Invalid(
            "invalid_preference_output", f"{key} must be a list of exactly one assistant message, got {got}"
        )
    role, _calls, _ = _check_message(value[0], f"{key}[0]", allow_weight=False)
    if role != "assistant":
        raise _Invalid("invalid_preference_output", f"{key}[0].role must be 'assistant', got {role!r}")


def _check_preference(obj: dict, warn) -> None:
    if "input" in obj or "preferred_output" in obj or "non_preferred_output" in obj:  # OpenAI shape
        if not obj.keys() <= _PREF_OAI_SET:
            raise _Invalid(
                "unrecognized_key",
                f"unrecognized top-level key(s) {_keys(obj.keys() - _PREF_OAI_SET)}; an OpenAI-style "
                f"preference example allows only {_keys(_PREF_OAI_SET)}",
            )
        for key in _PREF_OAI_KEYS if len(obj) != 3 else ():
            if key not in obj:
                raise _Invalid(
                    "missing_key",
                    f"missing the required key {key!r} (an OpenAI-style preference "
                    f"example needs {_keys(_PREF_OAI_SET)})",
                )
        inp = obj["input"]
        if type(inp) is not dict:
            raise _Invalid(
                "invalid_field_type", f"input must be an object with 'messages', got {_jtype(inp)}"
            )
        if len(inp) != 1 or "messages" not in inp:
            if not inp.keys() <= _INPUT_KEYS:
                raise _Invalid(
                    "unrecognized_key",
                    f"input has unrecognized key(s) "
                    f"{_keys(inp.keys() - _INPUT_KEYS)}; allowed keys are "
                    f"{_keys(_INPUT_KEYS)}",
                )
            if "messages" not in inp:
                raise _Invalid(
                    "missing_messages_list",
                    "input.messages is missing; it must be a non-empty list of messages",
                )
            _check_tools_fields(inp, "input.")
        if not _check_messages(inp["messages"], "input.messages", prompt_only=True):
            warn("input.messages has no user message")
        _check_output_list(obj["preferred_output"], "preferred_output")
        _check_output_list(obj["non_preferred_output"], "non_preferred_output")
        if _output_key(obj["preferred_output"][0]) == _output_key(obj["non_preferred_output"][0]):
            warn("preferred_output and non_preferred_output are identical")
        return
    if not obj.keys() <= _PREF_TRL_SET:
        raise _Invalid(
            "unrecognized_key",
            f"unrecognized top-level key(s) {_keys(obj.keys() - _PREF_TRL_SET)}; a preference "
            f"example allows only {_keys(_PREF_TRL_SET)}",
        )
    for key in _PREF_TRL_KEYS:
        if key not in obj:
            raise _Invalid(
                "missing_key",
                f"missing the required key {key!r} (a preference example needs "
                "'prompt', 'chosen' and 'rejected')",
            )
    prompt, chosen, rejected = obj["prompt"], obj["chosen"], obj["rejected"]
    conversational = isinstance(prompt, list)
    for key in _PREF_TRL_KEYS:
        value = obj[key]
        if type(value) is not str and not isinstance(value, list):
            raise _Invalid(
                "invalid_content_type", f"{key} must be a string or a list of messages, got {_jtype(value)}"
            )
        if isinstance(value, list) != conversational:
            raise _Invalid(
                "invalid_content_type",
                f"{key} is a {'list of messages' if isinstance(value, list) else 'string'} but prompt "
                f"is a {'list of messages' if conversational else 'string'}; prompt, chosen and "
                "rejected must all be strings or all be lists of messages",
            )
    if conversational:
        if not _check_messages(prompt, "prompt", prompt_only=True):
            warn("prompt has no user message")
        _check_output_list(chosen, "chosen")
        _check_output_list(rejected, "rejected")
        same = _output_key(chosen[0]) == _output_key(rejected[0])
    else:
        if prompt == "":
            raise _Invalid("missing_content", "prompt must not be empty")
        for key in ("chosen", "rejected"):
            if obj[key] == "":
                raise _Invalid("missing_content", f"{key} must not be empty")
        same = chosen == rejected
    if same:
        warn("chosen and rejected are identical")


def _output_key(msg: dict) -> Any:
    return (msg.get("content"), msg.get("tool_calls"), msg.get("function_call"))


_CHAT = FileFormat.CHAT
_PROMPT_COMPLETION = FileFormat.PROMPT_COMPLETION

_CHECKS = {
    FileFormat.CHAT: _check_chat,
    FileFormat.PROMPT_COMPLETION: _check_prompt_completion,
    FileFormat.PREFERENCE: _check_preference,
}


def _detect(obj: dict) -> FileFormat | None:
    if "messages" in obj:
        return FileFormat.CHAT
    if not _PREF_SIGNATURE.isdisjoint(obj.keys()):
        return FileFormat.PREFERENCE
    if "prompt" in obj or "completion" in obj:
        return FileFormat.PROMPT_COMPLETION
    return None


# --------------------------------------------------------------------------------------------------
# The streaming validator
# --------------------------------------------------------------------------------------------------

_BOM = b"\xef\xbb\xbf"
# Unpaired surrogate escapes. Cheap screening first: any \uD800-\uDFFF escape at all; then are any left
# once proper high+low pairs (emoji written by json.dumps(ensure_ascii=True)) are removed, or is there an
# escaped backslash before a 'u' that could fool the screen? Only then is the parsed line re-encoded.
_SURROGATE_ANY = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE_PAIR = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def _may_have_unpaired_surrogate(raw: bytes) -> bool:
    if _SURROGATE_ANY.search(raw) is None:
        return False
    return b"\\\\u" in raw or _SURROGATE_ANY.search(_SURROGATE_PAIR.sub(b"", raw)) is not None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)
_decode = _decoder.decode
_scan_once = _decoder.scan_once


def _too_long(limit: int) -> str:
    # The same text whether the line was seen whole or cut off while streaming, so that the result never
    # depends on chunking (a streamed line's full length is never known).
    return f"the line is longer than the limit of {limit} bytes (max_line_bytes)"


class JsonlValidator:
    """Incremental: feed() bytes chunks of any size as they arrive, then finish()."""

    def __init__(self, max_line_bytes: int = 8 * 1024 * 1024, min_examples: int = 1) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be positive")
        self.max_line_bytes = max_line_bytes
        self.min_examples = min_examples
        self._buf = bytearray()  # the current unfinished line
        self._lines = 0
        self._examples = 0
        self._format: FileFormat | None = None
        self._format_line = 0
        self._current_line = 0
        self._warnings: list[str] = []
        self._n_warnings = 0
        self._error: FileValidationError | None = None
        self._report: ValidationReport | None = None

    # -- public ------------------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._report is not None:
            raise RuntimeError("feed() called after finish()")
        if not chunk:
            return
        try:
            first_nl = chunk.find(b"\n")
            if first_nl < 0:
                self._buf += chunk
                self._check_pending()
                return
            if self._buf:
                self._buf += chunk[:first_nl]
                line = bytes(self._buf)
                self._buf.clear()
            else:
                line = chunk[:first_nl]
            self._line(line)
            last_nl = chunk.rfind(b"\n")
            if last_nl > first_nl:
                handle = self._line
                for line in chunk[first_nl + 1 : last_nl].split(b"\n"):
                    handle(line)
            if last_nl + 1 < len(chunk):
                self._buf += chunk[last_nl + 1 :]
                self._check_pending()
        except FileValidationError as exc:
            self._error = exc
            raise

    def finish(self) -> ValidationReport:
        if self._error is not None:
            raise self._error
        if self._report is not None:
            return self._report
        try:
            if self._buf:
                line = bytes(self._buf)
                self._buf.clear()
                self._line(line)
            if self._examples == 0:
                raise FileValidationError(
                    None, "empty_file", "the file contains no examples (it is empty or has only blank lines)"
                )
            if self._examples < self.min_examples:
                raise FileValidationError(
                    None,
                    "insufficient_examples",
                    f"the file has {self._examples} example(s); at least {self.min_examples} are required",
                )
        except FileValidationError as exc:
            self._error = exc
            raise
        warnings = list(self._warnings)
        if self._n_warnings > len(warnings):
            warnings.append(f"... and {self._n_warnings - len(warnings)} more warning(s)")
        assert self._format is not None
        self._report = ValidationReport(self._format, self._examples, self._lines, warnings)
        return self._report

    # -- internals ---------------------------------------------------------------------------------

    def _check_pending(self) -> None:
        # +1: the pending line may end in the '\r' of a CRLF, which does not count toward the limit;
        # nor does a BOM at the start of the file.
        buf = self._buf
        if len(buf) > self.max_line_bytes + 1 and not (
            self._lines == 0 and buf.startswith(_BOM) and len(buf) <= self.max_line_bytes + 4
        ):
            n = self._lines + 1
            self._buf.clear()
            raise FileValidationError(n, "line_too_long", _too_long(self.max_line_bytes))

    def _line(self, raw: bytes) -> None:
        self._lines = n = self._lines + 1
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if n == 1 and raw.startswith(_BOM):
            raw = raw[3:]
        if len(raw) > self.max_line_bytes:
            raise FileValidationError(n, "line_too_long", _too_long(self.max_line_bytes))
        if not raw.strip():
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.reason == "unexpected end of data":
                what = f"it ends in the middle of a multi-byte character (byte {exc.start + 1})"
            else:
                what = f"invalid byte sequence {raw[exc.start : exc.end]!r} at byte {exc.start + 1}"
            raise FileValidationError(
                n, "invalid_utf8", f"the line is not valid UTF-8: {what}; files must be UTF-8 encoded"
            ) from None
        try:
            obj, end = _scan_once(text, 0)  # the C scanner, without JSONDecoder.decode's Python overhead
            if end != len(text):
                raise ValueError
        except (StopIteration, ValueError, RecursionError):
            obj = self._decode_slow(text, n)  # leading/trailing whitespace, or an error to describe
        if type(obj) is not dict:
            raise FileValidationError(
                n, "not_an_object", f"each line must be a JSON object (one example), got {_jtype(obj)}"
            )
        if b"\\u" in raw and _may_have_unpaired_surrogate(raw):
            try:
                json.dumps(obj, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise FileValidationError(
                    n,
                    "invalid_utf8",
                    "the line contains a \\u escape for an unpaired UTF-16 surrogate, "
                    "which is not valid Unicode text",
                ) from None
        expected = self._format
        # Cheap tests that imply _detect(obj) is expected; anything else goes the long way.
        if expected is _CHAT:
            same = "messages" in obj
        elif expected is _PROMPT_COMPLETION:
            same = len(obj) == 2 and "completion" in obj and "prompt" in obj
        else:
            same = expected is not None and _detect(obj) is expected
        if not same:
            expected = self._resolve_format(obj, n)
        self._current_line = n
        try:
            _CHECKS[expected](obj, self._warn)
        except _Invalid as exc:
            raise FileValidationError(n, exc.code, exc.reason) from None
        self._examples += 1

    @staticmethod
    def _decode_slow(text: str, n: int) -> Any:
        try:
            return _decode(text)
        except json.JSONDecodeError as exc:
            hint = (
                " (a UTF-8 byte order mark is only tolerated at the start of the file)"
                if text.startswith("\ufeff")
                else ""
            )
            raise FileValidationError(
                n, "invalid_json", f"the line is not valid JSON: {exc.msg} (column {exc.colno}){hint}"
            ) from None
        except ValueError as exc:  # NaN / Infinity
            raise FileValidationError(n, "invalid_json", f"the line is not valid JSON: {exc}") from None
        except RecursionError:
            raise FileValidationError(
                n, "invalid_json", "the line is not valid JSON: nested too deeply"
            ) from None

    def _resolve_format(self, obj: dict, n: int) -> FileFormat:
        """The format to check ``obj`` against: fixes the file's format on the first example and
        raises ``unknown_format`` / ``mixed_formats``."""
        fmt = _detect(obj)
        expected = self._format
        if fmt is None:
            raise FileValidationError(
                n,
                "unknown_format",
                f"the example matches no accepted format (its keys are "
                f"{_keys(obj.keys()) or 'none'}); accepted shapes: {_ACCEPTED_SHAPES}",
            )
        if expected is None:
            self._format = fmt
            self._format_line = n
            return fmt
        # {"prompt": ...} alone is ambiguous: in a preference file check it as a preference example.
        if (
            expected is FileFormat.PREFERENCE
            and fmt is FileFormat.PROMPT_COMPLETION
            and "completion" not in obj
        ):
            return expected
        raise FileValidationError(
            n,
            "mixed_formats",
            f"this example is in {fmt.value} format but the file is in "
            f"{expected.value} format (detected on line {self._format_line}); "
            "every line must use the same format",
        )

    def _warn(self, msg: str) -> None:
        self._n_warnings += 1
        if len(self._warnings) < MAX_WARNINGS:
            self._warnings.append(f"line {self._current_line}: {msg}")


def validate_jsonl_bytes(data: bytes, **kw: Any) -> ValidationReport:
    """Validate a whole file held in memory. Keyword arguments go to ``JsonlValidator``."""
    validator = JsonlValidator(**kw)
    validator.feed(data)
    return validator.finish()


def validate_jsonl_file(fileobj: BinaryIO, *, chunk_size: int = 1 << 20, **kw: Any) -> ValidationReport:
    """Validate a binary file object by reading it in ``chunk_size`` pieces."""
    validator = JsonlValidator(**kw)
    while chunk := fileobj.read(chunk_size):
        validator.feed(chunk)
    return validator.finish()
