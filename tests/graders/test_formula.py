"""A multi grader's calculate_output (graders/formula.py): OpenAI's operators and functions by hand-computed
values, and every other Python form refused before anything runs."""

from __future__ import annotations

import math

import pytest

from graders.errors import GraderError
from graders.formula import parse

NAMES = {"a", "b", "accuracy"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(a + b) / 2", 0.5),
        ("a * 0.25 + 0.75 * b", 0.25),
        ("a ^ 2 + b", 1.0),  # ^ is the power, not Python's xor
        ("2 ^ 3 ^ 2", 512.0),  # right-associative, as ** is
        ("-a + +b", -1.0),
        ("min(a, b, 0.3)", 0.0),
        ("max(a, b)", 1.0),
        ("abs(b - a)", 1.0),
        ("floor(2.7) + ceil(0.2)", 3.0),
        ("exp(0) + sqrt(4) + log(1)", 3.0),
        ("accuracy", 0.75),
        ("3", 3.0),
    ],
)
def test_values(text: str, expected: float) -> None:
    assert parse(text, NAMES).value({"a": 1.0, "b": 0.0, "accuracy": 0.75}) == pytest.approx(expected)


def test_names_used_are_known() -> None:
    assert parse("(a + accuracy) / 2", NAMES).names == {"a", "accuracy"}


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "a.__class__",
        "().__class__.__bases__",
        "a[0]",
        "[x for x in (1, 2)]",
        "lambda: 1",
        "a if b else 1",
        "'text'",
        "True + 1",
        "min(*a)",
        "max(a, key=b)",
        "open('x')",
        "a == b",
        "a and b",
        "a % 2",
        "a // 2",
        "a << 2",
        "(a := 2)",
        "f'{a}'",
    ],
)
def test_everything_else_is_refused_at_parse(text: str) -> None:
    with pytest.raises(GraderError) as err:
        parse(text, NAMES)
    assert err.value.param == "calculate_output"


def test_unknown_names_arity_syntax_and_length_are_refused() -> None:
    for text, says in [
        ("a + c", "'c', which is not one of the graders"),
        ("sqrt(a, b)", "sqrt takes 1 argument, got 2"),
        ("min()", "min takes at least one argument, got 0"),
        ("(a + ", "is not a formula"),
        ("a" + " + a" * 400, "expected at most 1000 characters"),
    ]:
        with pytest.raises(GraderError, match=r"calculate_output: .*" + __import__("re").escape(says)):
            parse(text, NAMES)


@pytest.mark.parametrize(
    ("text", "scores"),
    [
        ("a / b", {"a": 1.0, "b": 0.0}),
        ("log(a)", {"a": 0.0}),
        ("a ^ 0.5", {"a": -8.0}),
        ("2 ^ a", {"a": 1e6}),
        ("10 ^ 400", {}),
    ],
)
def test_values_that_do_not_exist_are_errors_not_nan(text: str, scores: dict[str, float]) -> None:
    formula = parse(text, NAMES)
    with pytest.raises(GraderError, match="calculate_output"):
        value = formula.value(scores)
        assert math.isfinite(value)  # never reached: a non-finite value raises too
