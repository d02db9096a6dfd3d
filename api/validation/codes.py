"""Every error code the upload validator raises, with its meaning: the one table of them.

A code is stable (clients and tests key on it); the human-readable ``reason`` beside it may be
reworded. The codes from `trainer.spec.formats` (the format rule shared with the trainer) are among
them, and ``tests/api/test_validation.py`` checks that every code has a fixture in ``tests/data``.
"""

from __future__ import annotations

from trainer.spec.formats import FORMAT_ERROR_CODES

#: code -> what it means. ``line`` is None for the whole-file codes, else the 1-based physical line.
ERRORS: dict[str, str] = {
    # --- the whole file (line None) ---------------------------------------------------------------
    "empty_file": "the file has no examples: zero bytes, only blank lines, or only a byte order mark",
    "insufficient_examples": "the file has fewer examples than the validator's min_examples",
    # --- one line as bytes and JSON (the streaming decoder) ----------------------------------------
    "invalid_utf8": "the line is not UTF-8, or a \\u escape leaves an unpaired UTF-16 surrogate",
    "line_too_long": "the line is longer than max_line_bytes (not counting a CRLF's '\\r' or a leading BOM)",
    "invalid_json": "the line is not one JSON value: a syntax error, NaN/Infinity, a byte order mark "
    "after the file's start, or nesting too deep to parse",
    "not_an_object": "the line is JSON but not an object (each line is one example object)",
    # --- which format (the rule in trainer.spec.formats, and the file's one format) ----------------
    "unknown_format": "the example's keys identify no accepted format",
    "ambiguous_format": "the example has identifying keys of more than one format "
    "(e.g. 'completion' and 'chosen')",
    "mixed_formats": "the example is in another format than the file's, set by its first example "
    "(the two preference shapes count as one format)",
    "unrecognized_key": "a top-level key, or a key of a preference 'input', that its format does not allow",
    "missing_key": "a top-level key that the example's format requires is missing",
    # --- the example's values (the per-example rules) ----------------------------------------------
    "invalid_field_type": "a field other than content/messages has the wrong JSON type "
    "(tools, functions, parallel_tool_calls, a message's name, a preference 'input')",
    "missing_messages_list": "messages (or input.messages) is absent, not a list, or empty",
    "message_not_object": "a message is not a JSON object",
    "message_missing_key": "a message lacks 'role', or lacks 'content' without calling a tool",
    "message_unrecognized_key": "a message has a key other than role, content, name, weight, "
    "function_call, tool_calls, tool_call_id",
    "unrecognized_role": "a message's role is not system, user, assistant, tool or function",
    "missing_content": "a content, prompt, chosen, rejected or completion that must carry text is empty or null",
    "invalid_content_type": "a content is neither a string nor a list of text parts (e.g. an image part), "
    "or a prompt/completion/preference value has the wrong type",
    "invalid_weight": "a weight that is not the integer 0 or 1, or one outside a chat file's assistant messages",
    "invalid_tool_call": "a malformed tool_calls/function_call/tool_call_id, or one on the wrong role",
    "example_missing_assistant_message": "a chat example has no assistant message with weight 1 to train on",
    "misplaced_system_message": "a system message that is not the first message",
    "invalid_role_order": "the roles are out of order: the first turn after the system message is not the "
    "user's, the chat does not end with the assistant (or a preference prompt does), or a tool/function "
    "message does not answer a call",
    "invalid_preference_output": "a preference output is not a list of exactly one assistant message",
}

#: Every ``FileValidationError.code`` the validator can raise.
ERROR_CODES = frozenset(ERRORS)

assert set(FORMAT_ERROR_CODES) <= ERROR_CODES, "every code of the format rule needs a meaning here"
