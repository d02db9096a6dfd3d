"""Grader shapes (graders/schemas.py) as OpenAI's API takes them, and the string_check grader."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from graders.schemas import Grader, MultiGrader, StringCheckGrader
from graders.string_check import compare, grade
from graders.templates import sample_of

GRADER = TypeAdapter(Grader)

STRING_CHECK = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_json.answer}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}


def test_every_shape_validates() -> None:
    shapes = [
        STRING_CHECK,
        {
            "type": "text_similarity",
            "name": "t",
            "input": "{{sample.output_text}}",
            "reference": "{{item.ref}}",
            "evaluation_metric": "rouge_l",
        },
        {
            "type": "score_model",
            "name": "judge",
            "model": "gpt-4o-mini",
            "range": [0, 10],
            "input": [{"role": "user", "content": "Rate {{sample.output_text}}"}],
            "sampling_params": {"temperature": 0, "seed": 1},
        },
        {
            "type": "label_model",
            "name": "l",
            "model": "m",
            "input": [{"role": "user", "content": "x"}],
            "labels": ["good", "bad"],
            "passing_labels": ["good"],
        },
        {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1.0\n"},
        {
            "type": "multi",
            "name": "m",
            "graders": {"exact": STRING_CHECK, "style": STRING_CHECK},
            "calculate_output": "0.8 * exact + 0.2 * style",
        },
    ]
    for shape in shapes:
        assert GRADER.validate_python(shape).type == shape["type"]


@pytest.mark.parametrize(
    ("shape", "says"),
    [
        ({**STRING_CHECK, "operation": "startswith"}, "operation"),
        ({**STRING_CHECK, "input": "{{ env.HOME }}"}, "must start with sample. or item."),
        ({**STRING_CHECK, "extra": 1}, "extra"),
        (
            {"type": "multi", "name": "m", "graders": {"a": STRING_CHECK}, "calculate_output": "a + b"},
            "'b', which is not one of the graders",
        ),
        (
            {"type": "multi", "name": "m", "graders": {"a-b": STRING_CHECK}, "calculate_output": "1"},
            "String should match pattern",
        ),
        (
            {
                "type": "multi",
                "name": "m",
                "graders": {"a": STRING_CHECK},
                "calculate_output": "__import__('os')",
            },
            "calculate_output",
        ),
        (
            {
                "type": "label_model",
                "name": "l",
                "model": "m",
                "input": [{"role": "user", "content": "x"}],
                "labels": ["good"],
                "passing_labels": ["great"],
            },
            "passing_labels: ['great'] are not among labels",
        ),
        (
            {
                "type": "score_model",
                "name": "s",
                "model": "m",
                "input": [{"role": "user", "content": "x"}],
                "range": [1, 1],
            },
            "low < high",
        ),
        ({"type": "python", "name": "p", "source": "x" * (256 * 1024 + 1)}, "expected at most 262144 bytes"),
        ({"type": "shell", "name": "x"}, "does not match any of the expected tags"),
    ],
)
def test_broken_graders_are_refused_with_the_reason(shape: dict, says: str) -> None:
    with pytest.raises(ValidationError, match=__import__("re").escape(says)):
        GRADER.validate_python(shape)


def test_multi_grader_keys_must_be_names() -> None:
    assert (
        MultiGrader.model_validate(
            {"type": "multi", "name": "m", "graders": {"x_1": STRING_CHECK}, "calculate_output": "x_1"}
        )
        .graders["x_1"]
        .type
        == "string_check"
    )


@pytest.mark.parametrize(
    ("operation", "value", "reference", "expected"),
    [
        ("eq", "42", "42", 1.0),
        ("eq", "42", "42 ", 0.0),
        ("ne", "41", "42", 1.0),
        ("like", "The answer is 42.", "42", 1.0),
        ("like", "The answer is 42.", "ANSWER", 0.0),
        ("ilike", "The answer is 42.", "ANSWER", 1.0),
        ("ilike", "Straße", "STRASSE", 1.0),  # Unicode case folding, not lower()
    ],
)
def test_string_check_operations(operation: str, value: str, reference: str, expected: float) -> None:
    assert compare(operation, value, reference) == expected


def test_string_check_grades_a_json_answer_against_the_item() -> None:
    grader = StringCheckGrader.model_validate(STRING_CHECK)
    assert grade(grader, {"sample": sample_of('{"answer": "42"}'), "item": {"answer": "42"}}) == 1.0
    assert grade(grader, {"sample": sample_of('{"answer": "41"}'), "item": {"answer": "42"}}) == 0.0
