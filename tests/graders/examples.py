"""Graders the grader tests share, and the interpreter scripts/setup.sh builds for python graders."""

from __future__ import annotations

from pathlib import Path

# .grader-venv may link to /opt/juice-grader-venv (a checkout nobody cannot enter): resolved
PYTHON = str((Path(__file__).resolve().parents[2] / ".grader-venv").resolve() / "bin" / "python")

EXACT = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_json.answer}}",
    "reference": "{{item.answer}}",
    "operation": "eq",
}
SHORT = {
    "type": "python",
    "name": "short",
    "source": "def grade(sample, item):\n    return 1.0 if len(sample['output_text']) < 40 else 0.0\n",
}
MULTI = {
    "type": "multi",
    "name": "both",
    "graders": {"exact": EXACT, "short": SHORT},
    "calculate_output": "(exact + short) / 2",
}
