"""Grader templates (graders/templates.py): OpenAI's sample and item paths, JSON outputs, and a missing
path as an error that names it."""

from __future__ import annotations

import pytest

from graders.errors import GraderError
from graders.templates import check, render, sample_of


def context(output_text: str, **item: object) -> dict:
    return {"sample": sample_of(output_text), "item": item}


def test_text_item_and_nested_paths() -> None:
    ctx = context('{"answer": 42, "steps": ["a", "b"]}', reference="42", meta={"tags": ["x", "y"]})
    assert render("{{sample.output_json.answer}} vs {{ item.reference }}", ctx, "input") == "42 vs 42"
    assert render("{{sample.output_json.steps.1}}/{{item.meta.tags}}", ctx, "input") == 'b/["x", "y"]'
    assert render("{{sample.output_text}}", ctx, "input") == '{"answer": 42, "steps": ["a", "b"]}'
    assert render("no placeholders", ctx, "input") == "no placeholders"


def test_a_reply_that_is_not_json_has_no_output_json() -> None:
    ctx = context("Answer: 7")
    assert sample_of("Answer: 7")["output_json"] is None
    with pytest.raises(
        GraderError, match=r"input: \{\{sample.output_json.answer\}\}: sample.output_json.answer is not there"
    ):
        render("{{sample.output_json.answer}}", ctx, "input")


def test_missing_paths_and_unknown_roots_name_themselves() -> None:
    with pytest.raises(GraderError, match=r"reference: \{\{item.answer\}\}: item.answer is not there"):
        render("{{item.answer}}", context("x", reference="y"), "reference")
    with pytest.raises(GraderError, match=r"must start with sample. or item."):
        check("{{ os.environ }}", "input")
