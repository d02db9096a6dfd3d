"""The job status graph (api.db.status): its shape, its guard, and a scan of api/ and worker/ for status
writes that go around it."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import get_args

import pytest

from api.db.status import EDGES, TRANSITIONS, FinalStatus, JobStatus, check_transition
from api.db.transitions import transition

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("api", "worker")
# The one place allowed to write `status`: the builder of the guarded UPDATE.
BLESSED = (Path("api/db/transitions.py"), "transition")


def _successors(status: str) -> set[str]:
    return {t for s, t in EDGES if s == status}


def test_every_status_is_reachable_from_the_initial_one() -> None:
    seen, todo = {JobStatus.INITIAL}, [JobStatus.INITIAL]
    while todo:
        for nxt in _successors(todo.pop()) - seen:
            seen.add(nxt)
            todo.append(nxt)
    assert seen == set(JobStatus.ALL)


def test_final_statuses_have_no_way_out_and_every_other_status_can_end() -> None:
    for status in JobStatus.FINAL:
        assert _successors(status) == set(), status
    for status in set(JobStatus.ALL) - set(JobStatus.FINAL):
        assert _successors(status) & set(JobStatus.FINAL), f"{status} can never finish"


def test_the_graph_is_exactly_the_documented_one() -> None:
    q, r = JobStatus.QUEUED, JobStatus.RUNNING
    assert set(EDGES) == {
        (q, r),  # claim
        (q, JobStatus.CANCELLED),  # API cancel of a job no worker holds
        (r, r),  # re-claim from a stale holder
        (r, q),  # sweeper re-queue
        (r, JobStatus.SUCCEEDED),
        (r, JobStatus.FAILED),
        (r, JobStatus.CANCELLED),
        (q, JobStatus.PAUSED),  # API pause of a job no worker holds
        (r, JobStatus.PAUSED),  # the worker checkpointed on the pause flag (or the sweeper, if it died)
        (JobStatus.PAUSED, q),  # resume
        (JobStatus.PAUSED, JobStatus.CANCELLED),
    }
    assert len(EDGES) == len(TRANSITIONS)  # no edge listed twice
    assert {s for e in EDGES for s in e} <= set(JobStatus.ALL)
    assert JobStatus.INITIAL in JobStatus.ALL and set(JobStatus.FINAL) < set(JobStatus.ALL)
    assert len(set(JobStatus.ALL)) == len(JobStatus.ALL)
    assert set(get_args(FinalStatus)) == set(JobStatus.FINAL)  # the type lifecycle.finish takes


def test_no_validating_files_status() -> None:
    # Juice validates files at upload, before any job can name them (see api.db.status).
    assert "validating_files" not in JobStatus.ALL and not hasattr(JobStatus, "VALIDATING_FILES")


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (JobStatus.SUCCEEDED, JobStatus.RUNNING),
        (JobStatus.CANCELLED, JobStatus.QUEUED),
        (JobStatus.FAILED, JobStatus.FAILED),
        (JobStatus.QUEUED, JobStatus.SUCCEEDED),
        (JobStatus.QUEUED, JobStatus.QUEUED),
        ("validating_files", JobStatus.QUEUED),
    ],
)
def test_transitions_outside_the_graph_are_refused(source: str, target: str) -> None:
    with pytest.raises(ValueError, match="cannot move"):
        check_transition(source, target)
    with pytest.raises(ValueError, match="cannot move"):
        transition(source, target)
    with pytest.raises(ValueError, match="cannot move"):  # one bad source spoils the lot
        transition((JobStatus.RUNNING, source), target)


def test_transition_builds_a_compare_and_set_on_the_source_status() -> None:
    sql = str(transition((JobStatus.QUEUED, JobStatus.RUNNING), JobStatus.RUNNING).compile())
    assert re.search(r"UPDATE jobs SET status=:status WHERE jobs\.status IN", sql), sql
    sql = str(transition(JobStatus.RUNNING, JobStatus.FAILED).compile())
    assert "WHERE jobs.status = :status_1" in sql, sql
    with pytest.raises(ValueError):
        transition((), JobStatus.RUNNING)


def test_dashboard_agrees_on_the_final_statuses() -> None:
    js = (REPO / "api/dashboard/static/js/api.js").read_text()
    found = re.search(r"export const FINAL = new Set\(\[([^\]]*)\]\)", js)
    assert found, "api.js no longer defines FINAL"
    assert set(re.findall(r'"([a-z_]+)"', found.group(1))) == set(JobStatus.FINAL)


# --- the scan -----------------------------------------------------------------------------------------

RAW_SQL = re.compile(r"\bupdate\s+jobs\b.*\bset\b.*\bstatus\b", re.IGNORECASE | re.DOTALL)


def _is_status_key(node: ast.expr | None) -> bool:
    """`"status"` or `Job.status` as a key of a dict given to .values()."""
    if isinstance(node, ast.Constant):
        return node.value == "status"
    return isinstance(node, ast.Attribute) and node.attr == "status"


def _dict_sets_status(node: ast.expr) -> bool:
    if isinstance(node, ast.Dict):
        return any(_is_status_key(k) for k in node.keys)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        return any(kw.arg == "status" for kw in node.keywords)
    return False


def _names_holding_status(tree: ast.AST) -> set[str]:
    """Names that are given a dict with a status key: `v = {"status": ...}`, `v["status"] = ...`."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                elts = target.elts if isinstance(target, ast.Tuple) else [target]
                values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
                for t, v in zip(elts, values, strict=False):
                    if isinstance(t, ast.Name) and _dict_sets_status(v):
                        names.add(t.id)
                    if (
                        isinstance(t, ast.Subscript)
                        and isinstance(t.value, ast.Name)
                        and _is_status_key(t.slice)
                    ):
                        names.add(t.value.id)
        if (  # v.update(status=...) / v.update({"status": ...})
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("update", "setdefault")
            and isinstance(node.func.value, ast.Name)
            and (
                any(kw.arg == "status" for kw in node.keywords)
                or any(_dict_sets_status(a) or _is_status_key(a) for a in node.args)
            )
        ):
            names.add(node.func.value.id)
    return names


def _call_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def status_writes(source: str, path: Path) -> list[str]:
    """Every place in `source` that writes a job's status other than through api.db.transitions.transition."""
    tree = ast.parse(source)
    skip: set[int] = set()
    if path == BLESSED[0]:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == BLESSED[1]:
                skip |= {id(n) for n in ast.walk(node)}
    holders = _names_holding_status(tree)  # module-wide: errs on the side of flagging

    found: list[str] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        where = f"{path}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call):
            name = _call_name(node)
            if name == "values":
                for kw in node.keywords:
                    if kw.arg == "status":
                        found.append(f"{where}: .values(status=...)")
                    elif kw.arg is None and (
                        _dict_sets_status(kw.value)
                        or (isinstance(kw.value, ast.Name) and kw.value.id in holders)
                    ):
                        found.append(f"{where}: .values(**dict with a status)")
                if any(_dict_sets_status(a) for a in node.args):
                    found.append(f"{where}: .values({{status: ...}})")
            elif name == "Job" and any(kw.arg == "status" for kw in node.keywords):
                found.append(f"{where}: Job(status=...): new jobs start at the column default")
            elif (
                name == "setattr"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value == "status"
            ):
                found.append(f"{where}: setattr(..., 'status', ...)")
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for t in target.elts if isinstance(target, ast.Tuple) else [target]:
                    if isinstance(t, ast.Attribute) and t.attr == "status":
                        found.append(f"{where}: assignment to .status")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and RAW_SQL.search(node.value):
            found.append(f"{where}: raw SQL that sets jobs.status")
    return found


def _sources() -> list[Path]:
    files = [p for top in SCANNED for p in sorted((REPO / top).rglob("*.py"))]
    assert len(files) > 20, "the scan found almost no source: wrong root?"
    return files


def test_no_status_write_bypasses_the_graph() -> None:
    found = [w for p in _sources() for w in status_writes(p.read_text(), p.relative_to(REPO))]
    assert found == [], "status writes must go through api.db.transitions.transition:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "snippet",
    [
        "session.execute(update(Job).where(Job.id == i).values(status='failed'))",
        "update(Job).values({'status': JobStatus.FAILED})",
        "update(Job).values({Job.status: JobStatus.FAILED})",
        "update(Job).values(**{'status': 'x'})",
        "def f():\n    v = {'status': 'queued', 'worker': None}\n    update(Job).values(**v)",
        "def f():\n    v = {}\n    v['status'] = 'x'\n    update(Job).values(**v)",
        "def f():\n    v = dict(worker=None)\n    v.update(status='x')\n    update(Job).values(**v)",
        "def f(c):\n    t, v = 1, {'status': 'x'}\n    update(Job).values(**v)",
        "Job(tenant_id=1, status='running')",
        "job.status = JobStatus.CANCELLED",
        "setattr(job, 'status', 'failed')",
        "session.execute(text('UPDATE jobs SET status = :s WHERE id = :i'))",
        "transition('queued', 'running').values(status='succeeded')",
    ],
)
def test_the_scan_sees_a_bypass(snippet: str) -> None:
    assert status_writes(snippet, Path("api/x.py")), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "transition(JobStatus.RUNNING, JobStatus.QUEUED).where(Job.id == i).values(worker=None)",
        "def f():\n    v = {'finished_at': now}\n    transition('running', t).values(**v)",
        "def f(**values):\n    transition('running', s).values(finished_at=now, **values)",
        "update(Job).where(Job.id == i).values(heartbeat_at=now)",
        "Job(tenant_id=1, model='m')",
        "File(status='processed')",
        "return {'status': 'ok'}",
        "select(Job).where(Job.status == JobStatus.QUEUED)",
    ],
)
def test_the_scan_lets_graph_writes_and_reads_pass(snippet: str) -> None:
    assert status_writes(snippet, Path("api/x.py")) == [], snippet


def test_only_the_builder_itself_is_exempt() -> None:
    builder = (REPO / BLESSED[0]).read_text()
    assert status_writes(builder, BLESSED[0]) == []
    assert status_writes(builder, Path("api/elsewhere.py")), "the exemption hides nothing"
