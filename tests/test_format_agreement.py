"""The upload validator and the trainer read the same files the same way.

Every file of the corpus (tests/data/good_files, tests/data/bad_files) goes through both the upload
validator (`api.validation`) and the trainer's reading of it (`trainer.data.read_jsonl`,
`detect_format`, `load_sft_dataset` with the tiny test tokenizer):

- a good file is accepted by both, every row read as the format the validator reported, no row dropped
  (unless listed in TRAINER_REFUSES_GOOD);
- a bad file is refused by the trainer at the line the validator names, with the validator's very
  reason (`"{path}: line N: {reason}"`, the format rule's reasons after "unrecognised row: "; bad bytes
  or JSON by the one line rule, `trainer.spec.lines`), unless it is listed below with
  what the trainer does instead. The lists are exact in both directions: a listed file must still behave
  as listed, so a trainer change that closes a gap fails here until the entry is moved out.

Which keys make a row which format (`trainer.spec.formats`) and what a good example of each format is
(`trainer.spec.rules`) are one definition that both sides run on every row, so the two can only disagree
on what those rules leave out: the whole-file rules of upload, and what the trainer cannot train yet.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from api.validation import FileValidationError, validate_jsonl_bytes
from api.validation import validator as upload_validator
from tests.api.test_validation import BAD_CASES, GOOD_CASES
from trainer.data import detect_format, load_sft_dataset, read_jsonl
from trainer.spec import formats as format_rule
from trainer.spec import rules as example_rules
from trainer.spec.formats import (
    CHAT_SHAPE,
    FORMAT_ERROR_CODES,
    PROMPT_COMPLETION_SHAPE,
    REINFORCEMENT_SHAPE,
    SHAPES,
    TRL_PREFERENCE_SHAPE,
    Format,
    FormatError,
    identify,
)
from trainer.testing import make_tiny_tokenizer

DATA = Path(__file__).resolve().parent / "data"
MAX_SEQ_LEN = 4096  # nothing in the corpus is truncated
KWARGS = {name: kw for name, _line, _code, _fragments, kw in BAD_CASES}

#: Codes of bad bytes or JSON, found by the shared line rule (trainer.spec.lines) on both sides.
LEXICAL_CODES = frozenset({"invalid_json", "invalid_utf8", "not_an_object"})

# Good files the trainer cannot train on yet.
TRAINER_REFUSES_GOOD = {
    "chat_multi_turn.jsonl": "the trainer cannot train tool or function calls yet: the chat template gets "
    "only each message's role and content, so `trainer.data._messages` refuses line 1 (messages[2], an "
    "assistant message with tool_calls and null content, answered by a tool message), which the shared "
    "rules and upload accept as OpenAI's tool-call chat format",
}

# Upload-only: whole-file rules. The trainer reads rows one by one and has no such limit.
UPLOAD_ONLY = {
    "empty.jsonl": "no examples: the trainer reads zero rows; SFT/RFT/IRFT then refuse an empty training "
    "file themselves (trainer.demonstrations), an empty validation file is not an error there",
    "blank_lines_only.jsonl": "no examples, as empty.jsonl",
    "insufficient_examples.jsonl": "min_examples is an upload setting; the trainer has no minimum",
    "line_too_long.jsonl": "max_line_bytes bounds the upload's memory; the trainer bounds examples in "
    "tokens instead (max_seq_len truncation)",
    "mixed_formats.jsonl": "one format per file is an upload policy (OpenAI's and Together's); the trainer "
    "reads every row in its own format and trains on mixed files (tests/trainer/test_data.py)",
}


@pytest.fixture
def tokenizer():
    return make_tiny_tokenizer()


def _validate(path: Path) -> FileValidationError | None:
    try:
        validate_jsonl_bytes(path.read_bytes(), **KWARGS.get(path.name, {}))
    except FileValidationError as exc:
        return exc
    return None


def _row_at(path: Path, line: int) -> dict:
    """The object on physical line ``line``, parsed without the rules (read_jsonl refuses a bad row)."""
    return json.loads(path.read_bytes().split(b"\n")[line - 1].decode("utf-8-sig"))


def _same_reason(message: str, path: Path, exc: FileValidationError) -> bool:
    return message in (
        f"{path}: line {exc.line}: {exc.reason}",
        f"{path}: line {exc.line}: unrecognised row: {exc.reason}",
    )


# ------------------------------------------------------------------------------------------------------
# Good files
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [c[0] for c in GOOD_CASES])
def test_good_file_rows_have_the_validators_format(name):
    path = DATA / "good_files" / name
    report = validate_jsonl_bytes(path.read_bytes())
    rows = read_jsonl(path)
    assert len(rows) == report.examples
    assert [detect_format(row) for _, row in rows] == [report.format.value] * report.examples


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            c[0],
            marks=pytest.mark.xfail(strict=True, raises=ValueError, reason=TRAINER_REFUSES_GOOD[c[0]]),
        )
        if c[0] in TRAINER_REFUSES_GOOD
        else c[0]
        for c in GOOD_CASES
    ],
)
def test_good_file_loads_for_training(name, tokenizer):
    path = DATA / "good_files" / name
    report = validate_jsonl_bytes(path.read_bytes())
    examples, stats = load_sft_dataset(path, tokenizer, MAX_SEQ_LEN)
    assert stats.n_rows == report.examples
    assert stats.formats == {report.format.value: report.examples}
    assert (stats.n_examples, stats.n_dropped, stats.n_truncated) == (report.examples, 0, 0)
    assert len(examples) == report.examples


# ------------------------------------------------------------------------------------------------------
# Bad files
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [c[0] for c in BAD_CASES])
def test_bad_file_is_refused_by_the_trainer_unless_listed(name, tokenizer):
    path = DATA / "bad_files" / name
    exc = _validate(path)
    assert exc is not None, "the upload validator accepts a file of the bad corpus"

    if name in UPLOAD_ONLY:
        assert exc.line is None or exc.code in ("line_too_long", "mixed_formats"), "not a whole-file rule"
        load_sft_dataset(path, tokenizer, MAX_SEQ_LEN)  # the trainer reads it without complaint
        return

    with pytest.raises(ValueError) as info:
        load_sft_dataset(path, tokenizer, MAX_SEQ_LEN)
    if exc.code in LEXICAL_CODES:  # one line rule, trainer.spec.lines: the very same words
        assert str(info.value) == f"{path}: line {exc.line}: {exc.reason}", (exc, info.value)
    else:
        assert _same_reason(str(info.value), path, exc), (exc, info.value)


@pytest.mark.parametrize("name", [c[0] for c in BAD_CASES if c[2] in FORMAT_ERROR_CODES])
def test_format_rule_errors_have_the_same_words_on_both_sides(name, tokenizer):
    # Every bad file of the format rule's codes breaks it with top-level keys (the validator also says
    # unrecognized_key for a preference row's `input` keys, a per-example rule; the corpus has none).
    path = DATA / "bad_files" / name
    exc = _validate(path)
    with pytest.raises(FormatError) as rule:
        format_rule.detect_format(_row_at(path, exc.line))
    assert (rule.value.code, rule.value.reason) == (exc.code, exc.reason)
    with pytest.raises(ValueError, match=f"line {exc.line}: unrecognised row: ") as info:
        load_sft_dataset(path, tokenizer, MAX_SEQ_LEN)
    assert exc.reason in str(info.value)


def test_the_lists_name_files_of_the_corpus_once():
    lists = [TRAINER_REFUSES_GOOD, UPLOAD_ONLY]
    names = [name for listed in lists for name in listed]
    assert len(names) == len(set(names))
    assert set(TRAINER_REFUSES_GOOD) <= {c[0] for c in GOOD_CASES}
    assert set(UPLOAD_ONLY) <= {c[0] for c in BAD_CASES}


def test_both_sides_run_the_one_definition_of_the_rules():
    assert upload_validator.CHECKS is example_rules.CHECKS
    assert upload_validator.RowError is example_rules.RowError


def test_a_lone_prompt_lacks_the_key_of_the_files_format_on_both_sides(tmp_path):
    path = tmp_path / "pref.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n" + '{"prompt": "p"}\n')
    exc = _validate(path)
    assert (exc.line, exc.code) == (2, "missing_key") and "'chosen'" in exc.reason
    with pytest.raises(ValueError) as info:
        read_jsonl(path)
    assert _same_reason(str(info.value), path, exc), (exc, info.value)


def test_rule_errors_are_value_errors_and_pickle():
    with pytest.raises(example_rules.RowError) as info:
        example_rules.check_row({"messages": [_U, _A | {"weight": 0}]})
    assert isinstance(info.value, ValueError)
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.code, copy.reason, str(copy)) == (
        "example_missing_assistant_message",
        info.value.reason,
        info.value.reason,
    )


# ------------------------------------------------------------------------------------------------------
# Rows, beyond the corpus: the key sets where the old rules disagreed
# ------------------------------------------------------------------------------------------------------

_U = {"role": "user", "content": "Hi"}
_A = {"role": "assistant", "content": "Hello"}
_OAI = {
    "input": {"messages": [_U]},
    "preferred_output": [_A],
    "non_preferred_output": [_A | {"content": "No"}],
}


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        ({"messages": [_U, _A]}, "chat"),
        ({"messages": [_U, _A], "tools": []}, "chat"),
        ({"prompt": "p", "completion": "c"}, "prompt_completion"),
        ({"prompt": "p", "chosen": "a", "rejected": "b"}, "preference"),
        (_OAI, "preference"),
        # refused by both (the old trainer read each of these as some format and trained it)
        ({"messages": [_U, _A], "metadata": {}}, None),
        ({"messages": [_U, _A], "chosen": "a"}, None),
        ({"prompt": "p", "completion": "c", "chosen": "a", "rejected": "b"}, None),
        ({"prompt": "p", "chosen": "a"}, None),
        ({"prompt": "p", "completion": "c", "id": 1}, None),
        ({"input": {"messages": [_U]}, "preferred_output": [_A]}, None),
        ({"prompt": "p", "chosen": "a", "rejected": "b", "preferred_output": [_A]}, None),
        # refused by both (the old trainer trained these, or dropped them with no trained token)
        ({"messages": [_U]}, "reinforcement"),  # a prompt: OpenAI's reinforcement line
        ({"messages": [_U], "answer": 4, "meta": {"k": [1]}}, "reinforcement"),  # any keys: its item
        ({"messages": [_A]}, None),
        ({"messages": [_U, _A | {"weight": 0}]}, None),
        ({"messages": [_U, _A, _U]}, "reinforcement"),  # a prompt with an earlier turn as context
        ({"messages": [_U, _A | {"weight": 1}, _U]}, None),  # a prompt's messages carry no weight
        ({"messages": [_U, {"role": "system", "content": "s"}, _A]}, None),
        ({"messages": [_U, _A | {"content": ""}]}, None),
        ({"messages": [_U | {"weight": 1}, _A]}, None),
        ({"prompt": "p", "completion": ""}, None),
        ({"prompt": "", "chosen": "a", "rejected": "b"}, None),
        ({"prompt": "p", "chosen": [_A], "rejected": [_A]}, None),
        (_OAI | {"preferred_output": [_A, _A]}, None),
        (_OAI | {"input": [_U]}, None),
        # accepted by both: an empty prompt is only a warning
        ({"prompt": "", "completion": "c"}, "prompt_completion"),
        # refused by both before as well
        ({"prompt": "p"}, None),
        ({"completion": "c"}, None),
        ({"rejected": "b"}, None),
        ({"text": "t"}, None),
        ({}, None),
    ],
)
def test_a_single_row_is_read_alike(row, fmt):
    try:
        uploaded = validate_jsonl_bytes(json.dumps(row).encode()).format.value
    except FileValidationError:
        uploaded = None
    try:
        trained = detect_format(row)
    except ValueError:
        trained = None
    assert (uploaded, trained) == (fmt, fmt)


# ------------------------------------------------------------------------------------------------------
# The rule itself (trainer.spec.formats)
# ------------------------------------------------------------------------------------------------------


def test_identifying_keys_are_the_required_keys_no_other_shape_allows():
    # A reinforcement line shares `messages` with chat and is told from it by its last message (not the
    # assistant's: `identify`), not by a key: it has no identifying key, and chat's is `messages`.
    keyed = [s for s in SHAPES if s is not REINFORCEMENT_SHAPE]
    assert REINFORCEMENT_SHAPE.identifying == frozenset()
    assert identify({"messages": [_U], "answer": 1}) is REINFORCEMENT_SHAPE
    assert identify({"messages": [_U]}, prefer=Format.CHAT) is CHAT_SHAPE  # a chat line lacking its reply
    for shape in keyed:
        others = frozenset().union(*(s.keys for s in keyed if s is not shape))
        assert shape.identifying == frozenset(shape.required) - others, shape
        assert shape.identifying, shape


def test_a_lone_prompt_is_an_incomplete_row_of_the_files_format():
    assert identify({"prompt": "p"}) is PROMPT_COMPLETION_SHAPE
    assert identify({"prompt": "p"}, prefer=Format.PROMPT_COMPLETION) is PROMPT_COMPLETION_SHAPE
    assert identify({"prompt": "p"}, prefer=Format.PREFERENCE) is TRL_PREFERENCE_SHAPE
    assert identify({"prompt": "p"}, prefer=Format.CHAT) is PROMPT_COMPLETION_SHAPE  # then mixed_formats


def test_format_error_is_a_value_error_and_pickles():
    with pytest.raises(FormatError) as info:
        identify({"text": "t"})
    assert isinstance(info.value, ValueError)
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.code, copy.reason, str(copy)) == ("unknown_format", info.value.reason, info.value.reason)
