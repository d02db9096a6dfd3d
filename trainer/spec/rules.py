"""The per-example rules: is one parsed JSON object a good chat, prompt/completion or preference example?

One definition, run by both sides: the upload validator (`api.validation`) runs it on every line of an
upload, and the trainer (`trainer.data.read_jsonl`, and through it SFT, RFT, IRFT and the evaluation) on
every row it reads, so a row refused at upload is refused by ``python -m trainer`` too, at the same line
and with the same reason, instead of being trained on or silently dropped.

``check_row(row)`` is the whole rule for one row: its shape by the format rule
(`trainer.spec.formats.identify`), then ``CHECKS[shape](row, warn)``: first its top-level keys, by the
format rule (`check_keys`, which raises `FormatError`), then every value (`RowError`). Both are
ValueErrors that carry a ``code`` and a ``reason`` but no line number; the caller adds it. ``warn(text)``
is called for things that are allowed but probably unintended (the validator reports them; the trainer
ignores them). Every code is in `api.validation.codes`.

Decisions:

* Unknown top-level keys are rejected (``unrecognized_key``) in every format, not silently dropped
  (the format rule): ``metadata``, ``id`` and the like must be removed before upload. Chat allows
  ``tools``, ``parallel_tool_calls`` and ``functions``; OpenAI-shape preference ``input`` allows
  ``messages``, ``tools`` and ``parallel_tool_calls``.
* Message keys: ``role`` and ``content`` are required, except that an assistant message carrying
  ``tool_calls`` or ``function_call`` may omit ``content`` or set it to null or "". Other allowed keys:
  ``name``, ``weight``, ``function_call``, ``tool_calls``, ``tool_call_id``.
* ``"tool_calls": null`` and ``"function_call": null`` count as absent, as in messages exported from
  the OpenAI SDK's models. ``tool_calls`` and ``function_call`` are only allowed on assistant
  messages and ``tool_call_id`` only on tool messages; function arguments must be JSON-encoded
  strings, as OpenAI sends them. (The rules accept tool calls, as OpenAI's chat format has them; the
  trainer cannot render them yet and refuses them itself, `trainer.data`.)
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
  Such a row has nothing to train on: it is an error, not a row to drop.
* Because a chat must start (after the system message) with a user message, the "no user message"
  warning can only fire for preference prompts, which may consist of just a system message.
* prompt_completion: both values must be strings; ``completion`` must not be empty; an empty
  ``prompt`` is allowed (unconditional generation) but produces a warning.
* preference: the prompt (``prompt`` or ``input.messages``) must not be empty, its messages follow the
  chat rules above except that the last one must not be an assistant message. ``prompt``, ``chosen``
  and ``rejected`` must be all strings or all message lists. Each output (``chosen``/``rejected`` as
  lists, ``preferred_output``/``non_preferred_output``) is a list of exactly one assistant message
  (``invalid_preference_output``). Identical chosen and rejected outputs are a warning, not an error.

The common cases (plain ``{"role", "content"}`` messages, two-key prompt/completion rows, one plain
assistant output) take fast paths that skip the general checks; they accept exactly what those accept.

Pure Python, standard library only: the API imports it without torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from trainer.spec.formats import (
    CHAT_SHAPE,
    OPENAI_PREFERENCE_SHAPE,
    PROMPT_COMPLETION_SHAPE,
    REINFORCEMENT_SHAPE,
    TRL_PREFERENCE_SHAPE,
    Format,
    Shape,
    check_keys,
    identify,
)

__all__ = ["CHECKS", "ROLES", "RowError", "Warn", "check_row", "jtype", "keys_text", "show"]

#: Called with the text of a warning (no line number).
Warn = Callable[[str], None]


class RowError(ValueError):
    """A row whose values break a per-example rule. ``code`` is one of the upload validator's error
    codes (`api.validation.codes`); ``reason`` (also ``str(exc)``) says what is wrong, without a line
    number."""

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(reason)

    def __reduce__(self):  # picklable despite the custom __init__
        return (type(self), (self.code, self.reason))


def jtype(value: Any) -> str:
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


def show(value: Any, limit: int = 40) -> str:
    """A value as JSON (a string as its repr), cut to ``limit`` characters."""
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def keys_text(keys: Iterable[str]) -> str:
    """ "'a', 'b'": sorted and quoted."""
    return ", ".join(repr(k) for k in sorted(keys))


ROLES = ("system", "user", "assistant", "tool", "function")
_ROLES = frozenset(ROLES)
_MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "weight", "function_call", "tool_calls", "tool_call_id"}
)
_INPUT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls"})


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
                raise RowError(
                    "invalid_content_type",
                    f'{where}.content[{j}] must be an object like {{"type": "text", "text": "..."}}, '
                    f"got {jtype(part)}",
                )
            ptype = part.get("type")
            if ptype != "text":
                raise RowError(
                    "invalid_content_type",
                    f"{where}.content[{j}].type must be 'text' (only text content is supported), "
                    f"got {show(ptype)}",
                )
            extra = part.keys() - {"type", "text"}
            if extra:
                raise RowError(
                    "invalid_content_type",
                    f"{where}.content[{j}] has unrecognized key(s) {keys_text(extra)}; "
                    "a text part has only 'type' and 'text'",
                )
            text = part.get("text")
            if type(text) is not str:
                raise RowError(
                    "invalid_content_type", f"{where}.content[{j}].text must be a string, got {jtype(text)}"
                )
            if text:
                has_text = True
        return has_text
    raise RowError(
        "invalid_content_type",
        f"{where}.content must be a string or a list of text parts, got {jtype(content)}",
    )


def _check_tool_calls(msg: dict, role: str, where: str) -> bool:
    """Validate tool_calls / function_call / tool_call_id; return True if the message calls a tool."""
    calls = False
    if msg.get("tool_calls") is not None:  # null means absent (exported SDK objects carry nulls)
        tool_calls = msg["tool_calls"]
        if role != "assistant":
            raise RowError(
                "invalid_tool_call",
                f"{where}.tool_calls is only allowed on assistant messages, not on a {role} message",
            )
        if not isinstance(tool_calls, list) or not tool_calls:
            raise RowError(
                "invalid_tool_call",
                f"{where}.tool_calls must be a non-empty list of tool calls, "
                f"got {jtype(tool_calls) if tool_calls != [] else 'an empty list'}",
            )
        for j, call in enumerate(tool_calls):
            cw = f"{where}.tool_calls[{j}]"
            if not isinstance(call, dict):
                raise RowError("invalid_tool_call", f"{cw} must be an object, got {jtype(call)}")
            if "type" in call and call["type"] != "function":
                raise RowError("invalid_tool_call", f"{cw}.type must be 'function', got {show(call['type'])}")
            if "id" in call and type(call["id"]) is not str:
                raise RowError("invalid_tool_call", f"{cw}.id must be a string, got {jtype(call['id'])}")
            _check_function(call.get("function"), f"{cw}.function")
        calls = True
    if msg.get("function_call") is not None:
        if role != "assistant":
            raise RowError(
                "invalid_tool_call",
                f"{where}.function_call is only allowed on assistant messages, not on a {role} message",
            )
        _check_function(msg["function_call"], f"{where}.function_call")
        calls = True
    if "tool_call_id" in msg:
        if role != "tool":
            raise RowError(
                "invalid_tool_call",
                f"{where}.tool_call_id is only allowed on tool messages, not on a {role} message",
            )
        if type(msg["tool_call_id"]) is not str:
            raise RowError(
                "invalid_tool_call",
                f"{where}.tool_call_id must be a string, got {jtype(msg['tool_call_id'])}",
            )
    return calls


def _check_function(fn: Any, where: str) -> None:
    if not isinstance(fn, dict):
        raise RowError(
            "invalid_tool_call", f"{where} must be an object with 'name' and 'arguments', got {jtype(fn)}"
        )
    name = fn.get("name")
    if type(name) is not str or not name:
        raise RowError("invalid_tool_call", f"{where}.name must be a non-empty string, got {show(name)}")
    if "arguments" in fn and type(fn["arguments"]) is not str:
        raise RowError(
            "invalid_tool_call",
            f"{where}.arguments must be a JSON-encoded string, got {jtype(fn['arguments'])}",
        )


def _check_message(msg: Any, where: str, allow_weight: bool) -> tuple[str, bool, bool]:
    """Validate one message. Returns (role, calls_tool, trainable) where trainable means an
    assistant message with weight != 0."""
    if type(msg) is not dict:
        raise RowError(
            "message_not_object", f"{where} must be an object with 'role' and 'content', got {jtype(msg)}"
        )
    if "role" not in msg:
        raise RowError("message_missing_key", f"{where} is missing the required key 'role'")
    if not msg.keys() <= _MESSAGE_KEYS:
        extra = msg.keys() - _MESSAGE_KEYS
        raise RowError(
            "message_unrecognized_key",
            f"{where} has unrecognized key(s) {keys_text(extra)}; allowed keys are {keys_text(_MESSAGE_KEYS)}",
        )
    role = msg["role"]
    if type(role) is not str or role not in _ROLES:
        raise RowError(
            "unrecognized_role", f"{where}.role must be one of {', '.join(ROLES)}, got {show(role)}"
        )
    calls = False
    if len(msg) > 2 or "content" not in msg:  # anything beyond plain {"role", "content"}
        calls = _check_tool_calls(msg, role, where)
        if "name" in msg and type(msg["name"]) is not str:
            raise RowError("invalid_field_type", f"{where}.name must be a string, got {jtype(msg['name'])}")
    if "content" not in msg:
        if not calls:
            raise RowError("message_missing_key", f"{where} is missing the required key 'content'")
    elif not _check_content(msg["content"], where) and not calls:
        raise RowError("missing_content", f"{where}.content must not be empty or null")
    trainable = role == "assistant"
    if "weight" in msg:
        weight = msg["weight"]
        if not allow_weight:
            raise RowError("invalid_weight", f"{where}.weight is only allowed in chat (SFT) files")
        if role != "assistant":
            raise RowError(
                "invalid_weight",
                f"{where}.weight is only allowed on assistant messages, not on a {role} message",
            )
        if type(weight) is not int or weight not in (0, 1):
            raise RowError("invalid_weight", f"{where}.weight must be the integer 0 or 1, got {show(weight)}")
        trainable = weight == 1
    return role, calls, trainable


_PLAIN_ROLES = frozenset({"system", "user", "assistant"})


def _check_messages(messages: Any, where: str, *, prompt_only: bool) -> bool:
    """Validate a message list. For a chat example (``prompt_only=False``) the last message must be a
    trainable assistant message; for a preference prompt it must not be an assistant message.
    Returns whether a user message is present."""
    if type(messages) is not list or not messages:
        got = "an empty list" if messages == [] else jtype(messages)
        raise RowError("missing_messages_list", f"{where} must be a non-empty list of messages, got {got}")
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
                raise RowError(
                    "misplaced_system_message",
                    f"{where}[{i}] is a system message; a system message may only be the first message",
                )
        elif role == "user":
            has_user = True
            first_turn = False
        elif first_turn:
            raise RowError(
                "invalid_role_order",
                f"{where}[{i}].role must be 'user': the first message after the optional system "
                f"message must be a user message, got {role!r}",
            )
        elif role == "assistant":
            if trainable:
                has_trainable = True
        elif role == "tool":
            if not ((prev_role == "assistant" and prev_calls) or prev_role == "tool"):
                raise RowError(
                    "invalid_role_order",
                    f"{where}[{i}] is a tool message but does not follow an assistant message "
                    "with tool_calls",
                )
        elif not ((prev_role == "assistant" and prev_calls) or prev_role == "function"):  # function
            raise RowError(
                "invalid_role_order",
                f"{where}[{i}] is a function message but does not follow an assistant message "
                "with function_call",
            )
        prev_role = role
        prev_calls = calls
    if prompt_only:
        if prev_role == "assistant":
            raise RowError(
                "invalid_role_order",
                f"{where}[{len(messages) - 1}] is an assistant message; the last prompt message "
                "must not be from the assistant",
            )
    else:
        if not has_trainable:
            raise RowError(
                "example_missing_assistant_message",
                f"{where} has no assistant message to train on: every example needs at least one "
                "assistant message without weight 0",
            )
        if prev_role != "assistant":
            raise RowError(
                "invalid_role_order",
                f"{where}[{len(messages) - 1}].role must be 'assistant': the last message must be "
                f"an assistant message, got {prev_role!r}",
            )
    return has_user


def _check_tools_fields(obj: dict, where: str) -> None:
    if "tools" in obj:
        tools = obj["tools"]
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise RowError(
                "invalid_field_type", f"{where}tools must be a list of tool objects, got {show(tools)}"
            )
    if "functions" in obj:
        fns = obj["functions"]
        if not isinstance(fns, list) or not all(isinstance(f, dict) for f in fns):
            raise RowError(
                "invalid_field_type", f"{where}functions must be a list of function objects, got {show(fns)}"
            )
    if "parallel_tool_calls" in obj and type(obj["parallel_tool_calls"]) is not bool:
        raise RowError(
            "invalid_field_type",
            f"{where}parallel_tool_calls must be a boolean, got {show(obj['parallel_tool_calls'])}",
        )


def _check_chat(obj: dict, warn: Warn) -> None:
    if len(obj) > 1:
        check_keys(obj, CHAT_SHAPE)
        _check_tools_fields(obj, "")
    _check_messages(obj["messages"], "messages", prompt_only=False)


def _check_reinforcement(obj: dict, warn: Warn) -> None:
    """OpenAI's RFT line: the prompt's messages (the last not the assistant's), optional tools; every other
    key is the grader's item and may hold any JSON value."""
    _check_tools_fields(obj, "")
    _check_messages(obj["messages"], "messages", prompt_only=True)


def _check_prompt_completion(obj: dict, warn: Warn) -> None:
    prompt = obj.get("prompt")
    completion = obj.get("completion")
    if len(obj) == 2 and type(prompt) is str and type(completion) is str and completion:  # fast path
        if not prompt:
            warn("prompt is empty")
        return
    check_keys(obj, PROMPT_COMPLETION_SHAPE)
    for key in ("prompt", "completion"):
        if type(obj[key]) is not str:
            raise RowError("invalid_content_type", f"{key} must be a string, got {jtype(obj[key])}")
    if obj["completion"] == "":
        raise RowError("missing_content", "completion must not be empty")
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
        got = f"{len(value)} messages" if isinstance(value, list) else jtype(value)
        raise RowError(
            "invalid_preference_output", f"{key} must be a list of exactly one assistant message, got {got}"
        )
    role, _calls, _ = _check_message(value[0], f"{key}[0]", allow_weight=False)
    if role != "assistant":
        raise RowError("invalid_preference_output", f"{key}[0].role must be 'assistant', got {role!r}")


def _check_openai_preference(obj: dict, warn: Warn) -> None:
    check_keys(obj, OPENAI_PREFERENCE_SHAPE)
    inp = obj["input"]
    if type(inp) is not dict:
        raise RowError("invalid_field_type", f"input must be an object with 'messages', got {jtype(inp)}")
    if len(inp) != 1 or "messages" not in inp:
        if not inp.keys() <= _INPUT_KEYS:
            raise RowError(
                "unrecognized_key",
                f"input has unrecognized key(s) "
                f"{keys_text(inp.keys() - _INPUT_KEYS)}; allowed keys are "
                f"{keys_text(_INPUT_KEYS)}",
            )
        if "messages" not in inp:
            raise RowError(
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


def _check_trl_preference(obj: dict, warn: Warn) -> None:
    check_keys(obj, TRL_PREFERENCE_SHAPE)
    prompt, chosen, rejected = obj["prompt"], obj["chosen"], obj["rejected"]
    conversational = isinstance(prompt, list)
    for key in TRL_PREFERENCE_SHAPE.required:
        value = obj[key]
        if type(value) is not str and not isinstance(value, list):
            raise RowError(
                "invalid_content_type", f"{key} must be a string or a list of messages, got {jtype(value)}"
            )
        if isinstance(value, list) != conversational:
            raise RowError(
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
            raise RowError("missing_content", "prompt must not be empty")
        for key in ("chosen", "rejected"):
            if obj[key] == "":
                raise RowError("missing_content", f"{key} must not be empty")
        same = chosen == rejected
    if same:
        warn("chosen and rejected are identical")


def _output_key(msg: dict) -> Any:
    return (msg.get("content"), msg.get("tool_calls"), msg.get("function_call"))


CHECKS: dict[Shape, Callable[[dict, Warn], None]] = {
    CHAT_SHAPE: _check_chat,
    PROMPT_COMPLETION_SHAPE: _check_prompt_completion,
    TRL_PREFERENCE_SHAPE: _check_trl_preference,
    OPENAI_PREFERENCE_SHAPE: _check_openai_preference,
    REINFORCEMENT_SHAPE: _check_reinforcement,
}


def _ignore(_text: str) -> None:
    pass


def check_row(row: dict[str, Any], prefer: Format | None = None, warn: Warn = _ignore) -> Format:
    """The format of one parsed row, by the whole rule: its shape (`identify`; ``prefer`` is the format
    of the file it is in, if known), its top-level keys, its values. Raises `FormatError` (the format
    rule's codes) or `RowError` (the value rules' codes), both ValueErrors; ``warn`` gets the warnings."""
    shape = identify(row, prefer=prefer)
    CHECKS[shape](row, warn)
    return shape.format
