"""The upload validator and the trainer read the same files the same way.

Every file of the corpus (tests/data/good_files, tests/data/bad_files) goes through both the upload
validator (`api.validation`) and the trainer's reading of it (`trainer.data.read_jsonl`,
`detect_format`, `load_sft_dataset` with the tiny test tokenizer):

- a good file is accepted by both, every row read as the format the validator reported, no row dropped
  (unless listed in TRAINER_REFUSES_GOOD);
- a bad file is refused by the trainer at the line the validator names (a ValueError whose message
  carries "line N:"; for the format rule's codes, the very reason the validator gives), unless it is
  listed below with what the trainer does instead. The lists are exact in both directions: a listed file
  must still behave as listed, so a trainer change that closes a gap fails here until the entry is
  moved out.

Which keys make a row which format is one function (`trainer.spec.formats`), so the two can only
disagree on what that rule leaves out: the values of a row, and the whole-file rules.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from api.validation import FileValidationError, validate_jsonl_bytes
from tests.api.test_validation import BAD_CASES, GOOD_CASES
from trainer.data import detect_format, load_sft_dataset, read_jsonl, row_to_example
from trainer.spec import formats as format_rule
from trainer.spec.formats import (
    FORMAT_ERROR_CODES,
    PROMPT_COMPLETION_SHAPE,
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

# Good files the trainer cannot train on yet.
TRAINER_REFUSES_GOOD = {
    "chat_multi_turn.jsonl": "the trainer has no tool-call support: `trainer.data._messages` knows only the "
    "system/user/assistant roles and string/text-part content, so an assistant message with tool_calls and "
    "null content, or a tool message, is refused, while the upload validator accepts OpenAI's tool-call "
    "chat format",
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

# Per-example rules the trainer's reader does not enforce: the row is not an error there, but it has no
# trained token, so it is dropped and counted in the "dropped" data event.
TRAINER_DROPS = {
    "all_weights_zero.jsonl": "every assistant message has weight 0",
    "no_assistant.jsonl": "a chat with no assistant message",
    "messages_not_list.jsonl": "`messages` as a string becomes one user message, which trains nothing",
}

# Per-example rules the trainer's reader does not enforce: it trains on the row. These are gaps of
# `trainer.data` (its `_messages`/`_text` check types, roles and weights, not these rules), closed only
# where the file came through upload; a file given to `python -m trainer` directly is trained as said.
TRAINER_TRAINS = {
    # fields the trainer never reads, so the row trains as if they were absent
    "parallel_tool_calls_not_bool.jsonl": "top-level tool fields are not read",
    "tool_calls_on_user.jsonl": "tool_calls are not read",
    "unrecognized_message_key.jsonl": "unknown message keys are ignored",
    "weight_on_user.jsonl": "a weight on a user message is ignored (user messages are never trained)",
    "pref_weight_in_output.jsonl": "weight 1 on the preferred output is the default anyway",
    "pref_output_user_role.jsonl": "SFT reads only the preferred side; the bad non_preferred_output is unread",
    # structure the trainer does not check, so it trains on something the validator would not accept
    "empty_content.jsonl": "an empty assistant message trains only its end-of-turn token",
    "pc_empty_completion.jsonl": "an empty completion trains only the end-of-turn token",
    "pref_empty_prompt.jsonl": "an empty prompt is rendered as an empty user turn",
    "ends_with_user.jsonl": "the trailing user turn is rendered and not trained",
    "starts_with_assistant.jsonl": "an assistant turn with no user turn before it is trained",
    "system_not_first.jsonl": "a system message mid-conversation is rendered as is",
    "pref_input_ends_with_assistant.jsonl": "the prompt's last assistant turn is rendered as context",
    "pref_input_not_object.jsonl": "`input` as a bare message list is read as the messages",
    "pref_mixed_value_types.jsonl": "a string prompt becomes a user turn before the chosen message list",
    "pref_two_outputs.jsonl": "both preferred_output messages are trained as the response",
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
    return dict(read_jsonl(path))[line]


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
        pytest.param(c[0], marks=pytest.mark.xfail(strict=True, reason=TRAINER_REFUSES_GOOD[c[0]]))
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
    if name in TRAINER_DROPS or name in TRAINER_TRAINS:
        _, stats = load_sft_dataset(path, tokenizer, MAX_SEQ_LEN)
        trained = row_to_example(tokenizer, _row_at(path, exc.line)).num_trained_tokens
        if name in TRAINER_DROPS:
            assert trained == 0 and stats.n_dropped >= 1, (
                "the trainer no longer drops this row: update the list"
            )
        else:
            assert trained > 0 and stats.n_dropped == 0, (
                "the trainer no longer trains this row: update the list"
            )
        return

    with pytest.raises(ValueError) as info:
        load_sft_dataset(path, tokenizer, MAX_SEQ_LEN)
    assert f"line {exc.line}: " in str(info.value), (exc, info.value)


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
    lists = [TRAINER_REFUSES_GOOD, UPLOAD_ONLY, TRAINER_DROPS, TRAINER_TRAINS]
    names = [name for listed in lists for name in listed]
    assert len(names) == len(set(names))
    assert set(TRAINER_REFUSES_GOOD) <= {c[0] for c in GOOD_CASES}
    assert set(names) - set(TRAINER_REFUSES_GOOD) <= {c[0] for c in BAD_CASES}


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
    for shape in SHAPES:
        others = frozenset().union(*(s.keys for s in SHAPES if s is not shape))
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
