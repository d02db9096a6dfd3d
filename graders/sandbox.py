"""The sandbox `python` graders run in: code a tenant sends never runs with the worker's privileges,
network or files.

One batch of samples is one fresh process (`run`): `python -I -c CHILD` reads the source and the cases
on stdin, calls `grade(sample, item)` for each and writes one JSON result per case on stdout. Before it
reads a line of the tenant's code it confines itself (`confinement` says how):

- no network: a new, empty network namespace (only a loopback that is down), so every connect fails;
- not the worker's user: as root it drops to `nobody` (uid/gid 65534, no supplementary groups), which
  cannot read the worker's private home, artifact store or keys (JUICE_HOME is made 0700); where the
  worker is not root, a user namespace gives the network namespace without it (weaker: same uid);
- limits (OpenAI's where it states them): CPU time (2 minutes), address space (2 GB), size of any file
  written (1 MB), open files, processes of its user (a fork bomb runs out, not the machine);
- an empty environment (no credentials, database URLs or keys) and a private temporary folder as its
  working directory, removed afterwards; Python's isolated mode (-I: no PYTHONPATH, no user site).

The parent also enforces a wall-clock limit (a grader sleeping or blocked is killed with its process
group) and caps what it reads back. Where no network namespace can be made at all, `available()` says
why and python graders are refused (the API answers 400), never run unconfined.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from typing import Any

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
NOBODY = 65534
MAX_OUTPUT = 16 * 1024 * 1024  # bytes of results read back from one batch


@dataclass(frozen=True)
class Limits:
    # The interpreter graders run on: one the sandbox's unprivileged user can read and execute (the
    # system's, with numpy, scipy, sympy and rapidfuzz: scripts/setup.sh's .grader-venv), never one
    # under the worker's private home.
    python: str = sys.executable
    cpu_s: int = 120  # OpenAI: 2 minutes
    wall_s: float = 180.0
    memory_bytes: int = 2 * 1024**3  # OpenAI: 2 GB
    file_bytes: int = 1024**2
    open_files: int = 64
    processes: int = 64  # of the sandbox's user, all batches together


# The child, started as the worker's user in a session of its own: it confines itself first (CONFINE,
# the limits in argv[1]), and only then reads and runs the tenant's code. Doing this in the child's own
# code rather than in a preexec_fn keeps it safe in the API's threaded server (preexec_fn is not).
# No import of ours: it runs with -I and no PYTHONPATH. A case's error is its exception's type and
# message; a result must be a finite number.
CHILD = r"""
import ctypes, json, math, os, resource, sys
limits = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(limits["unshare"]) != 0:
    print(json.dumps({"unavailable": "unshare: " + os.strerror(ctypes.get_errno())}))
    sys.exit(0)
for name, value in limits["rlimits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
if limits["drop_to"] is not None:
    os.setgroups([])
    os.setgid(limits["drop_to"])
    os.setuid(limits["drop_to"])
del libc, ctypes
request = json.loads(sys.stdin.read())
scope = {"__name__": "grader"}
out = []
try:
    exec(compile(request["source"], "<grader>", "exec"), scope)
    grade = scope.get("grade")
    if not callable(grade):
        raise TypeError("the source defines no function grade(sample, item)")
except BaseException as exc:
    print(json.dumps({"fatal": f"{type(exc).__name__}: {exc}"[:2000]}))
    sys.exit(0)
for case in request["cases"]:
    try:
        value = float(grade(case["sample"], case["item"]))
        if not math.isfinite(value):
            raise ValueError(f"grade returned {value}")
        out.append({"score": value})
    except BaseException as exc:
        out.append({"error": f"{type(exc).__name__}: {exc}"[:2000]})
print(json.dumps({"results": out}))
"""


def confinement(limits: Limits) -> dict[str, Any]:
    """What CHILD applies to itself: the namespaces to unshare (a network namespace; as a non-root
    worker, inside a user namespace, which needs no privilege), the rlimits, and the user to become."""
    as_root = os.geteuid() == 0
    return {
        "unshare": CLONE_NEWNET if as_root else CLONE_NEWUSER | CLONE_NEWNET,
        "rlimits": {
            "RLIMIT_CPU": limits.cpu_s,
            "RLIMIT_AS": limits.memory_bytes,
            "RLIMIT_FSIZE": limits.file_bytes,
            "RLIMIT_NOFILE": limits.open_files,
            "RLIMIT_NPROC": limits.processes,
            "RLIMIT_CORE": 0,
        },
        "drop_to": NOBODY if as_root else None,
    }


class SandboxUnavailable(RuntimeError):
    """No network namespace can be made here, so python graders cannot run safely."""


@cache
def available(python: str = sys.executable) -> str | None:
    """None when python graders can run confined here on `python`; else why not (said in the 400 that
    refuses them)."""
    try:
        results = run(
            "def grade(sample, item):\n    return 1.0\n", [({}, {})], Limits(python=python, wall_s=30)
        )
    except (OSError, SandboxUnavailable, subprocess.SubprocessError) as exc:
        return f"the python grader sandbox cannot start on this server: {exc}"
    return None if results == [1.0] else f"the python grader sandbox does not work here: {results}"


def run(
    source: str, cases: list[tuple[dict[str, Any], dict[str, Any]]], limits: Limits | None = None
) -> list[float | str]:
    """Each (sample, item) of `cases` graded by `source`'s grade(): a score, or the error (a string) that
    case met. A failure of the whole batch (the source does not compile, a limit killed the process) is
    every case's error."""
    limits = limits or Limits()
    as_root = os.geteuid() == 0
    work = tempfile.mkdtemp(prefix="juice-grader-")
    try:
        if as_root:
            os.chown(work, NOBODY, NOBODY)
        os.chmod(work, 0o700)
        request = json.dumps({"source": source, "cases": [{"sample": s, "item": i} for s, i in cases]})
        proc = subprocess.Popen(
            [limits.python, "-I", "-c", CHILD, json.dumps(confinement(limits))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=work,
            env={
                "PATH": "/usr/bin:/bin",
                "HOME": work,
                "TMPDIR": work,
                "LANG": "C.UTF-8",
                "OMP_NUM_THREADS": "1",
            },
            start_new_session=True,  # its own process group: killed whole, fork bomb included
            close_fds=True,
        )
        try:
            out, err = proc.communicate(request.encode(), timeout=limits.wall_s)
        except subprocess.TimeoutExpired:
            _kill(proc)
            return [f"the grader ran past its wall-clock limit of {limits.wall_s:g} s"] * len(cases)
        finally:
            _kill(proc)  # anything it left behind in its process group
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _results(proc.returncode, out[:MAX_OUTPUT], err, len(cases), limits)


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _results(code: int, out: bytes, err: bytes, n: int, limits: Limits) -> list[float | str]:
    if code in (-signal.SIGXCPU, -signal.SIGKILL) and not out.strip():
        return [f"the grader ran past its CPU-time limit of {limits.cpu_s} s, or was killed"] * n
    try:
        reply = json.loads(out.decode(errors="replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = err.decode(errors="replace").strip()[-500:]
        return [f"the grader process ended without a result (exit {code}): {tail}"] * n
    if "unavailable" in reply:
        raise SandboxUnavailable(reply["unavailable"])
    if "fatal" in reply:
        return [f"the grader cannot run: {reply['fatal']}"] * n
    results = reply.get("results", [])
    if len(results) != n:
        return [f"the grader process returned {len(results)} results for {n} samples"] * n
    return [r["score"] if "score" in r else str(r["error"]) for r in results]
