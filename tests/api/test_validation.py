"""Tests for api.validation: the streaming JSONL validator and format detector.

tests/test_format_agreement.py runs the same corpus through the trainer's reading of it.

Fixtures live in tests/data/bad_files (one problem each) and tests/data/good_files (one per
accepted format). Each bad file is paired below with the exact (line, code) it must fail with and a
fragment that the human-readable reason must contain (usually the offending field's path).
"""

from __future__ import annotations

import io
import json
import pickle
import random
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from api.validation import (
    ERROR_CODES,
    ERRORS,
    MAX_WARNINGS,
    FileFormat,
    FileValidationError,
    JsonlValidator,
    ValidationReport,
    validate_jsonl_bytes,
    validate_jsonl_file,
)
from trainer.spec.formats import FORMAT_ERROR_CODES, Format

DATA = Path(__file__).resolve().parents[1] / "data"
BAD = DATA / "bad_files"
GOOD = DATA / "good_files"

CHAT_LINE = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}

# file name, expected line (None = whole-file error), expected code, fragments the reason must contain,
# JsonlValidator keyword arguments
BAD_CASES: list[tuple[str, int | None, str, tuple[str, ...], dict]] = [
    # --- lexical: encoding, JSON, line shape -----------------------------------------------------------
    ("invalid_json.jsonl", 3, "invalid_json", ("not valid JSON", "delimiter"), {}),
    ("nan_value.jsonl", 2, "invalid_json", ("NaN",), {}),
    ("not_an_object.jsonl", 2, "not_an_object", ("JSON object", "array"), {}),
    ("not_utf8.jsonl", 2, "invalid_utf8", ("UTF-8", "\\xe9", "byte 47"), {}),
    ("truncated_utf8.jsonl", 2, "invalid_utf8", ("UTF-8", "multi-byte"), {}),
    ("utf16.jsonl", 1, "invalid_utf8", ("UTF-8",), {}),
    ("bom_mid_file.jsonl", 2, "invalid_json", ("byte order mark",), {}),
    ("lone_surrogate.jsonl", 2, "invalid_utf8", ("surrogate",), {}),
    ("line_too_long.jsonl", 2, "line_too_long", ("1024 bytes",), {"max_line_bytes": 1024}),
    # --- whole file ------------------------------------------------------------------------------------
    ("empty.jsonl", None, "empty_file", ("no examples",), {}),
    ("blank_lines_only.jsonl", None, "empty_file", ("no examples",), {}),
    ("insufficient_examples.jsonl", None, "insufficient_examples", ("2 example", "10"), {"min_examples": 10}),
    # --- format detection ------------------------------------------------------------------------------
    (
        "unknown_format.jsonl",
        1,
        "unknown_format",
        ("'text'", '"messages"', '"completion"', '"chosen"', '"preferred_output"'),
        {},
    ),
    ("mixed_formats.jsonl", 3, "mixed_formats", ("prompt_completion", "chat", "line 1"), {}),
    (
        "ambiguous_format.jsonl",
        2,
        "ambiguous_format",
        ("'completion' (prompt_completion)", "'chosen', 'rejected' (preference)"),
        {},
    ),
    # --- chat: top level -------------------------------------------------------------------------------
    ("unrecognized_top_level_key.jsonl", 2, "unrecognized_key", ("'metadata'",), {}),
    ("missing_messages.jsonl", 3, "missing_messages_list", ("messages", "empty list"), {}),
    ("messages_not_list.jsonl", 1, "missing_messages_list", ("messages", "string"), {}),
    ("parallel_tool_calls_not_bool.jsonl", 1, "invalid_field_type", ("parallel_tool_calls", "boolean"), {}),
    # --- chat: messages --------------------------------------------------------------------------------
    ("message_not_object.jsonl", 2, "message_not_object", ("messages[0]", "string"), {}),
    ("missing_role.jsonl", 1, "message_missing_key", ("messages[1]", "'role'"), {}),
    ("missing_content_key.jsonl", 2, "message_missing_key", ("messages[0]", "'content'"), {}),
    ("unrecognized_message_key.jsonl", 1, "message_unrecognized_key", ("messages[1]", "'tokens'"), {}),
    (
        "wrong_role.jsonl",
        3,
        "unrecognized_role",
        ("messages[1].role must be one of system, user, assistant, tool, function, got 'bot'",),
        {},
    ),
    ("crlf_blank_lines_then_bad.jsonl", 4, "unrecognized_role", ("messages[1].role", "'Assistant'"), {}),
    ("empty_content.jsonl", 2, "missing_content", ("messages[2].content",), {}),
    ("null_content.jsonl", 1, "missing_content", ("messages[0].content",), {}),
    ("content_wrong_type.jsonl", 2, "invalid_content_type", ("messages[0].content", "number"), {}),
    (
        "image_content_part.jsonl",
        1,
        "invalid_content_type",
        ("messages[0].content[1].type", "'image_url'"),
        {},
    ),
    ("bad_weight.jsonl", 2, "invalid_weight", ("messages[1].weight", "0.5"), {}),
    ("bool_weight.jsonl", 1, "invalid_weight", ("messages[1].weight", "true"), {}),
    ("weight_on_user.jsonl", 3, "invalid_weight", ("messages[0].weight", "assistant"), {}),
    ("no_assistant.jsonl", 2, "example_missing_assistant_message", ("messages", "assistant"), {}),
    ("all_weights_zero.jsonl", 1, "example_missing_assistant_message", ("messages", "weight 0"), {}),
    ("system_not_first.jsonl", 1, "misplaced_system_message", ("messages[1]", "system"), {}),
    (
        "starts_with_assistant.jsonl",
        2,
        "invalid_role_order",
        ("messages[1].role", "'user'", "'assistant'"),
        {},
    ),
    # in a chat file: a chat line missing its reply (as a first line it opens a reinforcement file)
    ("ends_with_user.jsonl", 2, "invalid_role_order", ("messages[2].role", "last message"), {}),
    ("tool_without_call.jsonl", 1, "invalid_role_order", ("messages[2]", "tool_calls"), {}),
    ("tool_calls_on_user.jsonl", 1, "invalid_tool_call", ("messages[0].tool_calls",), {}),
    (
        "tool_call_arguments_object.jsonl",
        1,
        "invalid_tool_call",
        ("messages[1].tool_calls[0].function.arguments",),
        {},
    ),
    # --- prompt / completion ---------------------------------------------------------------------------
    ("pc_missing_completion.jsonl", 1, "missing_key", ("'completion'",), {}),
    ("pc_empty_completion.jsonl", 3, "missing_content", ("completion",), {}),
    ("pc_completion_not_string.jsonl", 2, "invalid_content_type", ("completion", "number"), {}),
    ("pc_unrecognized_key.jsonl", 1, "unrecognized_key", ("'id'",), {}),
    # --- preference ------------------------------------------------------------------------------------
    ("pref_two_outputs.jsonl", 2, "invalid_preference_output", ("preferred_output", "exactly one", "2"), {}),
    (
        "pref_output_user_role.jsonl",
        1,
        "invalid_preference_output",
        ("non_preferred_output[0].role", "'user'"),
        {},
    ),
    ("pref_input_ends_with_assistant.jsonl", 3, "invalid_role_order", ("input.messages[1]", "assistant"), {}),
    ("pref_missing_rejected.jsonl", 1, "missing_key", ("'rejected'",), {}),
    ("pref_empty_prompt.jsonl", 2, "missing_content", ("prompt",), {}),
    ("pref_mixed_value_types.jsonl", 1, "invalid_content_type", ("chosen", "prompt"), {}),
    ("pref_weight_in_output.jsonl", 1, "invalid_weight", ("preferred_output[0].weight",), {}),
    ("pref_input_not_object.jsonl", 1, "invalid_field_type", ("input", "array"), {}),
]

# file name, format, examples, physical lines, warnings (exact)
GOOD_CASES: list[tuple[str, FileFormat, int, int, list[str]]] = [
    ("chat_weights.jsonl", FileFormat.CHAT, 3, 3, []),
    ("chat_multi_turn.jsonl", FileFormat.CHAT, 4, 4, []),
    ("chat_content_parts.jsonl", FileFormat.CHAT, 2, 2, []),
    ("chat_bom_crlf_blank_lines.jsonl", FileFormat.CHAT, 3, 7, []),
    ("prompt_completion.jsonl", FileFormat.PROMPT_COMPLETION, 4, 4, ["line 2: prompt is empty"]),
    (
        "preference_openai.jsonl",
        FileFormat.PREFERENCE,
        3,
        3,
        [
            "line 3: input.messages has no user message",
            "line 3: preferred_output and non_preferred_output are identical",
        ],
    ),
    (
        "preference_trl.jsonl",
        FileFormat.PREFERENCE,
        4,
        4,
        ["line 3: chosen and rejected are identical", "line 4: chosen and rejected are identical"],
    ),
]


def _outcome(data: bytes, chunks: list[int] | None = None, **kw) -> ValidationReport | tuple:
    """Validate ``data`` fed as pieces ending at the given cut positions; return the report or the
    error as a comparable tuple."""
    v = JsonlValidator(**kw)
    try:
        start = 0
        for cut in (chunks or []) + [len(data)]:
            v.feed(data[start:cut])
            start = cut
        return v.finish()
    except FileValidationError as exc:
        return ("error", exc.line, exc.code, exc.reason)


def _one_byte_chunks(data: bytes) -> list[int]:
    return list(range(1, len(data)))


# ------------------------------------------------------------------------------------------------------
# The corpus
# ------------------------------------------------------------------------------------------------------


def test_every_code_has_a_meaning_and_the_format_rule_uses_them():
    assert set(ERRORS) == ERROR_CODES
    assert all(isinstance(meaning, str) and meaning for meaning in ERRORS.values())
    assert set(FORMAT_ERROR_CODES) <= ERROR_CODES
    assert FileFormat is Format  # one enum of format names, the format rule's


def test_importing_the_validator_loads_no_torch():
    code = "import sys, api.validation; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_corpus_is_complete():
    bad_on_disk = {p.name for p in BAD.glob("*.jsonl")}
    good_on_disk = {p.name for p in GOOD.glob("*.jsonl")}
    assert bad_on_disk == {c[0] for c in BAD_CASES}
    assert good_on_disk == {c[0] for c in GOOD_CASES}
    assert len(bad_on_disk) >= 20
    # every documented error code is exercised by at least one fixture, and no fixture uses another
    assert {c[2] for c in BAD_CASES} == ERROR_CODES


@pytest.mark.parametrize(
    ("name", "line", "code", "fragments", "kw"), BAD_CASES, ids=[c[0] for c in BAD_CASES]
)
def test_bad_file(name, line, code, fragments, kw):
    data = (BAD / name).read_bytes()
    with pytest.raises(FileValidationError) as info:
        validate_jsonl_bytes(data, **kw)
    exc = info.value
    assert (exc.line, exc.code) == (line, code), exc.reason
    for fragment in fragments:
        assert fragment in exc.reason
    assert str(exc) == (f"line {line}: {exc.reason}" if line is not None else exc.reason)
    assert not exc.reason.startswith("line ")  # the line prefix is added by str(), not part of the reason


@pytest.mark.parametrize(
    ("name", "line", "code", "fragments", "kw"), BAD_CASES, ids=[c[0] for c in BAD_CASES]
)
def test_bad_file_same_result_in_one_byte_chunks(name, line, code, fragments, kw):
    data = (BAD / name).read_bytes()
    whole = _outcome(data, **kw)
    assert whole[:3] == ("error", line, code)
    assert _outcome(data, _one_byte_chunks(data), **kw) == whole
    # and via the file-object helper with an awkward chunk size
    with pytest.raises(FileValidationError) as info:
        validate_jsonl_file(io.BytesIO(data), chunk_size=7, **kw)
    assert ("error", info.value.line, info.value.code, info.value.reason) == whole


@pytest.mark.parametrize(
    ("name", "fmt", "examples", "lines", "warnings"), GOOD_CASES, ids=[c[0] for c in GOOD_CASES]
)
def test_good_file(name, fmt, examples, lines, warnings):
    data = (GOOD / name).read_bytes()
    report = validate_jsonl_bytes(data)
    assert report == ValidationReport(format=fmt, examples=examples, lines=lines, warnings=warnings)
    assert report.format.value == fmt.value  # str enum: stores and serialises as its value
    assert _outcome(data, _one_byte_chunks(data)) == report
    assert validate_jsonl_file(io.BytesIO(data), chunk_size=5) == report


@pytest.mark.parametrize("name", ["prompt_completion.jsonl", "chat_bom_crlf_blank_lines.jsonl"])
def test_every_split_position_gives_the_same_report(name):
    data = (GOOD / name).read_bytes()
    assert any(b >= 0x80 for b in data)  # multi-byte characters (BOM, CJK, emoji) get split somewhere
    expected = validate_jsonl_bytes(data)
    for cut in range(len(data) + 1):
        assert _outcome(data, [cut]) == expected, cut


def test_random_chunkings_give_the_same_results():
    rng = random.Random(1234)
    files = [(p, {}) for p in sorted(GOOD.glob("*.jsonl"))] + [(BAD / c[0], c[4]) for c in BAD_CASES]
    for path, kw in files:
        data = path.read_bytes()
        expected = _outcome(data, **kw)
        for _ in range(5):
            cuts = sorted(rng.sample(range(len(data) + 1), k=min(len(data) + 1, rng.randint(1, 12))))
            assert _outcome(data, cuts, **kw) == expected, (path.name, cuts)


# ------------------------------------------------------------------------------------------------------
# UTF-8 across chunk boundaries
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("char", ["é", "€", "😀"])
def test_multibyte_character_split_across_chunks(char):
    line = (
        json.dumps({"prompt": f"say {char}", "completion": f"{char}!"}, ensure_ascii=False).encode() + b"\n"
    )
    encoded = char.encode()
    assert len(encoded) > 1
    start = line.index(encoded)
    for cut in range(start + 1, start + len(encoded)):  # every cut strictly inside the character
        v = JsonlValidator()
        v.feed(line[:cut])
        v.feed(line[cut:])
        assert v.finish() == ValidationReport(FileFormat.PROMPT_COMPLETION, 1, 1, [])


def test_unterminated_multibyte_character_fails_at_finish_not_feed():
    v = JsonlValidator()
    v.feed(json.dumps(CHAT_LINE).encode() + b"\n")
    v.feed(b'{"prompt": "\xf0\x9f\x98')  # first three bytes of a four-byte emoji, then EOF
    with pytest.raises(FileValidationError) as info:
        v.finish()
    assert (info.value.line, info.value.code) == (2, "invalid_utf8")
    assert "multi-byte" in info.value.reason


def test_overlong_and_surrogate_utf8_encodings_are_rejected():
    for bad in (b"\xc0\xaf", b"\xed\xa0\x80"):  # overlong '/', CESU-style surrogate
        data = b'{"prompt": "a' + bad + b'", "completion": "b"}\n'
        with pytest.raises(FileValidationError) as info:
            validate_jsonl_bytes(data)
        assert (info.value.line, info.value.code) == (1, "invalid_utf8")


@pytest.mark.parametrize(
    ("escaped", "ok"),
    [
        (rb"emoji \ud83d\ude00", True),  # a proper pair, as json.dumps(ensure_ascii=True) writes it
        (rb"\uD83D\uDE00\ud83d\ude01", True),
        (rb"a literal backslash: \\ud83d", True),  # escaped backslash, then plain text
        (rb"\ud83d alone", False),  # unpaired high surrogate
        (rb"alone \ude00", False),  # unpaired low surrogate
        (rb"\ud83d\\ude00", False),  # high surrogate, then a literal backslash
        (rb"\\ud83d\udc00", False),  # literal text that looks like a high surrogate, then a real low one
    ],
)
def test_surrogate_escapes(escaped, ok):
    data = b'{"prompt": "' + escaped + b'", "completion": "ok"}\n'
    if ok:
        assert validate_jsonl_bytes(data).examples == 1
    else:
        exc = _err(data)
        assert (exc.line, exc.code) == (1, "invalid_utf8")
        assert "surrogate" in exc.reason


# ------------------------------------------------------------------------------------------------------
# Line and example counting
# ------------------------------------------------------------------------------------------------------

L = json.dumps({"prompt": "p", "completion": "c"}).encode()


@pytest.mark.parametrize(
    ("data", "examples", "lines"),
    [
        (L, 1, 1),  # no final newline
        (L + b"\n", 1, 1),  # final newline does not start a line
        (L + b"\r\n", 1, 1),  # CRLF
        (L + b"\n\n\n", 1, 3),  # trailing blank lines are lines, not examples
        (b"\n" + L + b"\n  \n" + L, 2, 4),  # blank lines anywhere
        (b"\xef\xbb\xbf" + L + b"\r\n" + L, 2, 2),  # leading BOM
        (b"\xef\xbb\xbf\n" + L, 1, 2),  # BOM on a line of its own
        (b"  " + L + b"  \n", 1, 1),  # whitespace around the object
        (L + b"\r\n\r\n" + L + b"\r\n", 2, 3),
    ],
)
def test_counts(data, examples, lines):
    report = validate_jsonl_bytes(data)
    assert (report.examples, report.lines) == (examples, lines)
    assert report.format is FileFormat.PROMPT_COMPLETION


def test_line_numbers_count_blank_lines():
    data = b"\n\n" + L + b"\n\n" + b'{"prompt": "p", "completion": ""}\n'
    with pytest.raises(FileValidationError) as info:
        validate_jsonl_bytes(data)
    assert (info.value.line, info.value.code) == (5, "missing_content")


@pytest.mark.parametrize(("data", "code"), [(b"\xef\xbb\xbf", "empty_file"), (b"\r\n", "empty_file")])
def test_files_without_examples(data, code):
    with pytest.raises(FileValidationError) as info:
        validate_jsonl_bytes(data)
    assert (info.value.line, info.value.code) == (None, code)


def test_min_examples_boundary():
    data = (L + b"\n") * 3
    assert validate_jsonl_bytes(data, min_examples=3).examples == 3
    with pytest.raises(FileValidationError) as info:
        validate_jsonl_bytes(data, min_examples=4)
    assert info.value.code == "insufficient_examples"


# ------------------------------------------------------------------------------------------------------
# Line length and bounded memory
# ------------------------------------------------------------------------------------------------------


def _pc_line_of(size: int) -> bytes:
    base = b'{"prompt": "p", "completion": ""}'
    return base[:-2] + b"x" * (size - len(base)) + b'"}'


def test_line_length_limit_is_exact_and_ignores_crlf():
    line = _pc_line_of(100)
    assert len(line) == 100
    assert validate_jsonl_bytes(line + b"\r\n", max_line_bytes=100).examples == 1
    assert validate_jsonl_bytes(line, max_line_bytes=100).examples == 1
    with pytest.raises(FileValidationError) as info:
        validate_jsonl_bytes(L + b"\n" + line + b"\n", max_line_bytes=99)
    assert (info.value.line, info.value.code) == (2, "line_too_long")


@pytest.mark.parametrize("prefix", [b"", b"\xef\xbb\xbf"])
@pytest.mark.parametrize("sep", [b"\n", b"\r\n"])
@pytest.mark.parametrize("final_newline", [False, True])
@pytest.mark.parametrize("size", [99, 100, 101])
def test_line_length_limit_does_not_depend_on_chunking(prefix, sep, final_newline, size):
    data = prefix + _pc_line_of(size) + sep + L + (sep if final_newline else b"")
    whole = _outcome(data, max_line_bytes=100)
    if size <= 100:
        assert whole == ValidationReport(FileFormat.PROMPT_COMPLETION, 2, 2, [])
    else:
        assert whole[:3] == ("error", 1, "line_too_long")
    assert _outcome(data, _one_byte_chunks(data), max_line_bytes=100) == whole
    for cut in range(len(data)):
        assert _outcome(data, [cut], max_line_bytes=100) == whole


def test_too_long_line_is_rejected_before_its_newline_arrives():
    v = JsonlValidator(max_line_bytes=1000)
    v.feed(L + b"\n" + b'{"prompt": "')
    for _ in range(9):
        v.feed(b"x" * 100)  # 1,012 bytes of line 2 buffered: still within limit + 1 for a '\r'
    with pytest.raises(FileValidationError) as info:
        v.feed(b"x" * 100)
    assert (info.value.line, info.value.code) == (2, "line_too_long")


@pytest.mark.slow
def test_memory_is_bounded_by_the_longest_line():
    line = (
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "You are helpful."},
                    {"role": "user", "content": "What is the capital of France?"},
                    {"role": "assistant", "content": "Paris."},
                ]
            }
        ).encode()
        + b"\n"
    )
    size, n_chunks = 65536, 300  # ~20 MB in total, generated on the fly; chunks end mid-line
    assert size % len(line)
    period = line * (size // len(line) + 2)
    v = JsonlValidator()
    tracemalloc.start()
    try:
        for i in range(n_chunks):
            offset = (i * size) % len(line)
            v.feed(period[offset : offset + size])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    total = n_chunks * size
    v.feed(line[total % len(line) :])  # complete the last line
    report = v.finish()
    assert report.examples == report.lines == total // len(line) + 1
    assert peak < 1_000_000  # a few chunk-sized temporaries, never the file


# ------------------------------------------------------------------------------------------------------
# Rules in detail (inline examples, beyond the fixture corpus)
# ------------------------------------------------------------------------------------------------------


def _chat(*messages, **top) -> bytes:
    return json.dumps({"messages": list(messages), **top}).encode() + b"\n"


def _err(data: bytes, **kw) -> FileValidationError:
    with pytest.raises(FileValidationError) as info:
        validate_jsonl_bytes(data, **kw)
    return info.value


U = {"role": "user", "content": "Hi"}


@pytest.mark.parametrize("weight", [0, 1])
def test_weights_zero_and_one_are_accepted(weight):
    data = _chat(
        U, {"role": "assistant", "content": "a", "weight": weight}, U, {"role": "assistant", "content": "b"}
    )
    assert validate_jsonl_bytes(data).examples == 1


@pytest.mark.parametrize("weight", [True, False, 0.5, 1.0, -1, 2, "1", None])
def test_weights_other_than_integer_zero_or_one_are_rejected(weight):
    exc = _err(_chat(U, {"role": "assistant", "content": "a", "weight": weight}))
    assert (exc.line, exc.code) == (1, "invalid_weight")
    assert "messages[1].weight" in exc.reason


@pytest.mark.parametrize("content", [None, "", []])
def test_assistant_with_tool_calls_may_have_empty_content(content):
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    assert (
        validate_jsonl_bytes(
            _chat(U, {"role": "assistant", "content": content, "tool_calls": [call]})
        ).examples
        == 1
    )
    exc = _err(_chat(U, {"role": "assistant", "content": content}))
    assert exc.code == "missing_content"


def test_null_tool_fields_count_as_absent():
    data = _chat(
        {"role": "user", "content": "Hi", "tool_calls": None, "function_call": None},
        {"role": "assistant", "content": "Hello", "tool_calls": None},
    )
    assert validate_jsonl_bytes(data).examples == 1
    exc = _err(_chat(U, {"role": "assistant", "content": None, "tool_calls": None}))
    assert (exc.code, "messages[1].content" in exc.reason) == ("missing_content", True)


def test_content_parts_must_be_text_parts():
    exc = _err(
        _chat(
            {"role": "user", "content": [{"type": "text", "text": 5}]}, {"role": "assistant", "content": "a"}
        )
    )
    assert (exc.code, "messages[0].content[0].text" in exc.reason) == ("invalid_content_type", True)
    exc = _err(
        _chat(
            {"role": "user", "content": [{"type": "text", "text": ""}]}, {"role": "assistant", "content": "a"}
        )
    )
    assert exc.code == "missing_content"


def test_chat_allows_tools_keys_but_not_others():
    tools = [{"type": "function", "function": {"name": "f"}}]
    ok = _chat(
        U,
        {"role": "assistant", "content": "a"},
        tools=tools,
        parallel_tool_calls=True,
        functions=[{"name": "f"}],
    )
    assert validate_jsonl_bytes(ok).format is FileFormat.CHAT
    exc = _err(_chat(U, {"role": "assistant", "content": "a"}, tools="f"))
    assert (exc.code, "tools" in exc.reason) == ("invalid_field_type", True)
    exc = _err(_chat(U, {"role": "assistant", "content": "a"}, prompt="x"))
    assert (exc.code, "'prompt'" in exc.reason) == ("unrecognized_key", True)


@pytest.mark.parametrize(
    ("row", "fragments"),
    [
        ({"messages": [U], "completion": "x"}, ("'messages' (chat)", "'completion' (prompt_completion)")),
        (
            {"prompt": "p", "completion": "c", "chosen": "a", "rejected": "b"},
            ("'completion' (prompt_completion)", "'chosen', 'rejected' (preference)"),
        ),
        (
            {"prompt": "p", "chosen": "a", "preferred_output": [], "non_preferred_output": []},
            ("'chosen' (preference)", "'non_preferred_output', 'preferred_output' (OpenAI-style preference)"),
        ),
    ],
)
def test_keys_of_several_formats_are_ambiguous(row, fragments):
    # The format rule (trainer.spec.formats): identifying keys of two shapes is an error, not a priority.
    exc = _err(json.dumps(row).encode() + b"\n")
    assert (exc.line, exc.code) == (1, "ambiguous_format")
    for fragment in fragments:
        assert fragment in exc.reason


def test_top_level_keys_are_checked_before_values():
    # The format rule checks every top-level key before the per-example rules look at a value.
    exc = _err(b'{"prompt": 5}\n')
    assert (exc.code, "'completion'" in exc.reason) == ("missing_key", True)
    exc = _err(b'{"prompt": 5, "completion": "c"}\n')
    assert (exc.code, "prompt must be a string" in exc.reason) == ("invalid_content_type", True)


def test_message_type_errors_name_the_field():
    exc = _err(_chat(U, {"role": "assistant", "content": "a", "name": 3}))
    assert (exc.code, "messages[1].name" in exc.reason) == ("invalid_field_type", True)
    exc = _err(_chat(U, {"role": 7, "content": "a"}))
    assert (exc.code, "messages[1].role" in exc.reason) == ("unrecognized_role", True)
    exc = _err(_chat(U, {"role": "assistant", "content": "a", "tool_call_id": "x"}))
    assert (exc.code, "messages[1].tool_call_id" in exc.reason) == ("invalid_tool_call", True)


def test_consecutive_user_turns_are_allowed():
    assert validate_jsonl_bytes(_chat(U, U, {"role": "assistant", "content": "a"})).examples == 1


def test_prompt_only_line_in_preference_file_is_a_preference_error():
    good = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}).encode()
    exc = _err(good + b"\n" + json.dumps({"prompt": "p"}).encode())
    assert (exc.line, exc.code, "'chosen'" in exc.reason) == (2, "missing_key", True)


def test_both_preference_shapes_may_share_a_file():
    a = {"prompt": "p", "chosen": "a", "rejected": "b"}
    b = {
        "input": {"messages": [U]},
        "preferred_output": [{"role": "assistant", "content": "a"}],
        "non_preferred_output": [{"role": "assistant", "content": "b"}],
    }
    data = b"".join(json.dumps(x).encode() + b"\n" for x in (a, b, a))
    assert validate_jsonl_bytes(data) == ValidationReport(FileFormat.PREFERENCE, 3, 3, [])


@pytest.mark.parametrize(
    "first",
    [
        CHAT_LINE,
        {"prompt": "p", "completion": "c"},
        {"prompt": "p", "chosen": "a", "rejected": "b"},
    ],
)
def test_mixed_formats_is_reported_for_every_pair(first):
    others = [CHAT_LINE, {"prompt": "p", "completion": "c"}, {"prompt": "p", "chosen": "a", "rejected": "b"}]
    for other in others:
        data = json.dumps(first).encode() + b"\n" + json.dumps(other).encode() + b"\n"
        if other == first:
            assert validate_jsonl_bytes(data).examples == 2
        else:
            exc = _err(data)
            assert (exc.line, exc.code) == (2, "mixed_formats")


def test_warnings_are_capped():
    line = json.dumps({"prompt": "p", "chosen": "same", "rejected": "same"}).encode() + b"\n"
    report = validate_jsonl_bytes(line * 50)
    assert report.examples == 50
    assert len(report.warnings) == MAX_WARNINGS + 1
    assert report.warnings[0] == "line 1: chosen and rejected are identical"
    assert report.warnings[MAX_WARNINGS - 1] == f"line {MAX_WARNINGS}: chosen and rejected are identical"
    assert report.warnings[-1] == f"... and {50 - MAX_WARNINGS} more warning(s)"


def test_deeply_nested_json_is_an_error_not_a_crash():
    exc = _err(b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b', "completion": "c"}\n')
    assert (exc.line, exc.code) == (1, "invalid_json")


# ------------------------------------------------------------------------------------------------------
# Object behaviour
# ------------------------------------------------------------------------------------------------------


def test_errors_are_sticky_and_finish_is_idempotent():
    v = JsonlValidator()
    with pytest.raises(FileValidationError) as first:
        v.feed(b"nope\n")
    with pytest.raises(FileValidationError) as again:
        v.feed(L + b"\n")
    assert again.value is first.value
    with pytest.raises(FileValidationError) as at_finish:
        v.finish()
    assert at_finish.value is first.value

    ok = JsonlValidator()
    ok.feed(L)
    assert ok.finish() is ok.finish()
    with pytest.raises(RuntimeError):
        ok.feed(b"\n")


def test_error_object():
    exc = FileValidationError(7, "invalid_weight", "messages[1].weight must be the integer 0 or 1, got 0.5")
    assert isinstance(exc, ValueError)
    assert str(exc) == "line 7: messages[1].weight must be the integer 0 or 1, got 0.5"
    assert str(FileValidationError(None, "empty_file", "empty")) == "empty"
    copy = pickle.loads(pickle.dumps(exc))  # Celery / multiprocessing ship exceptions by pickle
    assert (copy.line, copy.code, copy.reason, str(copy)) == (exc.line, exc.code, exc.reason, str(exc))


def test_empty_chunks_are_ignored():
    v = JsonlValidator()
    for piece in (b"", L[:5], b"", L[5:], b"", b"\n", b""):
        v.feed(piece)
    assert v.finish() == ValidationReport(FileFormat.PROMPT_COMPLETION, 1, 1, [])
