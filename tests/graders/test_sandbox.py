"""The python grader sandbox (graders/sandbox.py), attacked: each escape fails, the attempt is that case's
error (or the batch's), and the next batch runs normally. Real processes, real namespaces and limits."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from graders import sandbox
from graders.sandbox import Limits, run
from tests.graders.examples import PYTHON

QUICK = Limits(python=PYTHON, cpu_s=3, wall_s=20)


def test_the_sandbox_runs_here() -> None:
    """Never skipped: CI must prove the escapes below fail, not skip them."""
    assert sandbox.available(PYTHON) is None


def grader(body: str) -> str:
    return "def grade(sample, item):\n" + "".join(f"    {line}\n" for line in body.splitlines())


def test_scores_come_back_per_case_with_errors_in_place() -> None:
    source = grader('return float(sample["output_text"] == item["answer"]) / (0 if item.get("boom") else 1)')
    cases = [
        ({"output_text": "42"}, {"answer": "42"}),
        ({"output_text": "41"}, {"answer": "42"}),
        ({"output_text": "42"}, {"answer": "42", "boom": True}),
    ]
    assert run(source, cases, QUICK) == [1.0, 0.0, "ZeroDivisionError: float division by zero"]


def test_a_source_without_grade_or_with_a_syntax_error_fails_every_case() -> None:
    assert (
        run("x = 1", [({}, {})] * 2, QUICK)
        == ["the grader cannot run: TypeError: the source defines no function grade(sample, item)"] * 2
    )
    [error] = run("def grade(:", [({}, {})], QUICK)
    assert error.startswith("the grader cannot run: SyntaxError")


def test_no_network() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        [error] = run(
            grader(f'import socket\nsocket.create_connection(("127.0.0.1", {port}), timeout=2)\nreturn 1.0'),
            [({}, {})],
            QUICK,
        )
    finally:
        listener.close()
    assert error.startswith("OSError") and "unreachable" in error, error


def test_no_worker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUICE_DATABASE_URL", "postgresql://secret@db/juice")
    [score] = run(
        grader('import os\nreturn float(len(os.environ) + 100 * ("JUICE_DATABASE_URL" in os.environ))'),
        [({}, {})],
        QUICK,
    )
    assert isinstance(score, float) and score < 10  # PATH, HOME, TMPDIR, LANG, OMP_NUM_THREADS


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox drops to nobody only where the worker is root")
def test_no_worker_files(tmp_path: Path) -> None:
    home = tmp_path / "juice-home"
    home.mkdir(mode=0o700)
    (home / "keys.json").write_text('{"secret": 1}')
    [error] = run(grader(f'return float(len(open("{home / "keys.json"}").read()))'), [({}, {})], QUICK)
    assert error.startswith("PermissionError"), error
    [uid] = run(grader("import os\nreturn float(os.getuid())"), [({}, {})], QUICK)
    assert uid == 65534.0


def test_memory_is_capped() -> None:
    [error] = run(grader("x = bytearray(10 * 1024**3)\nreturn 1.0"), [({}, {})], QUICK)
    assert error.startswith("MemoryError"), error


def test_cpu_time_is_capped() -> None:
    start = time.monotonic()
    assert (
        run(grader("while True:\n    pass"), [({}, {})] * 2, Limits(python=PYTHON, cpu_s=2, wall_s=30))
        == ["the grader ran past its CPU-time limit of 2 s, or was killed"] * 2
    )
    assert time.monotonic() - start < 20


def test_wall_clock_is_capped() -> None:
    assert run(
        grader("import time\ntime.sleep(60)\nreturn 1.0"), [({}, {})], Limits(python=PYTHON, wall_s=2)
    ) == ["the grader ran past its wall-clock limit of 2 s"]


def test_a_fork_bomb_runs_out_of_processes_not_the_machine() -> None:
    source = grader("import os\nwhile True:\n    os.fork()")
    results = run(source, [({}, {})], Limits(python=PYTHON, cpu_s=5, wall_s=15))
    assert len(results) == 1 and isinstance(results[0], str)
    assert run(grader("return 2.0"), [({}, {})], QUICK) == [2.0]  # and the next batch runs


def test_written_files_are_capped_and_go_with_the_batch() -> None:
    [error] = run(grader('open("big", "wb").write(b"x" * (8 * 1024**2))\nreturn 1.0'), [({}, {})], QUICK)
    assert "File too large" in error or "ran past" in error or "ended without" in error, error
    [left] = run(grader('import os\nreturn float(len(os.listdir(".")))'), [({}, {})], QUICK)
    assert left == 0.0  # a fresh working folder per batch
