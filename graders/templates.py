"""Grader templates: `{{sample.output_text}}`, `{{sample.output_json.answer}}`, `{{item.reference}}`.

A template is text with `{{ path }}` placeholders (spaces inside the braces allowed). A path starts at
`sample` (what the model produced: `output_text`, and `output_json`, the text parsed as JSON when it is
JSON) or `item` (the training line's other keys), then names keys of nested objects, or indices of
lists, with dots. A string value is inserted as it is; any other value as its JSON. A path that names
nothing is an error naming the path (a grader scoring a sample against a missing reference is a bug in
the grader or the data, never a 0).
"""

from __future__ import annotations

import json
import re
from typing import Any

from graders.errors import GraderError

PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
ROOTS = ("sample", "item")


def sample_of(output_text: str) -> dict[str, Any]:
    """The `sample` a template sees of a model's reply: its text, and its JSON when the text is JSON."""
    try:
        output_json = json.loads(output_text)
    except ValueError:
        output_json = None
    return {"output_text": output_text, "output_json": output_json}


def check(template: str, param: str) -> list[str]:
    """The template's paths, each checked to start at sample or item; GraderError names the first that
    does not."""
    paths = PLACEHOLDER.findall(template)
    for path in paths:
        if path.split(".")[0] not in ROOTS:
            raise GraderError(param, f"the placeholder {{{{{path}}}}} must start with sample. or item.")
    return paths


def lookup(path: str, context: dict[str, Any], param: str) -> Any:
    """The value at a dotted `path` of `context` ({"sample": ..., "item": ...})."""
    value: Any = context
    walked: list[str] = []
    for key in path.split("."):
        walked.append(key)
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise GraderError(param, f"{{{{{path}}}}}: {'.'.join(walked)} is not there")
    return value


def render(template: str, context: dict[str, Any], param: str) -> str:
    """`template` with every placeholder replaced by its value in `context`."""
    check(template, param)

    def value(match: re.Match[str]) -> str:
        found = lookup(match.group(1), context, param)
        return found if isinstance(found, str) else json.dumps(found)

    return PLACEHOLDER.sub(value, template)
