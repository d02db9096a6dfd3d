"""experiments/demo_compare.py (the README's comparison) end to end on the tiny model. Split from tests/test_experiments_smoke.py so that
the harness smokes, the suite's longest tests, run in parallel processes (scripts/test.sh)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_experiments_smoke import _run


@pytest.mark.slow
def test_demo_compare_smoke(tmp_path: Path) -> None:
    """experiments/demo_compare.py (the README's SFT/IRFT/RFT comparison) on the tiny model: three jobs
    over HTTP that succeed with an `eval/logp_gap` curve each, and the base model's gap to read them by."""
    out = tmp_path / "compare.json"
    table = _run(
        ["experiments/demo_compare.py", "--smoke", "--home", str(tmp_path / "home"), "--out", str(out)],
        timeout=600,
    )
    record = json.loads(out.read_text())
    assert set(record["jobs"]) == {"sft", "irft", "rft"}
    assert record["base_logp_gap"] < 0  # chosen = rejected + a "Fresh answer:" prefix: more tokens to pay
    for name, job in record["jobs"].items():
        assert job["status"] == "succeeded", (name, job["error"])
        assert len(job["logp_gap"]) >= 2, name
        assert f"| {name} | succeeded |" in table
