"""The import rules of docs/design.md, held against the code: which package may import which, the
layers inside api/, and no import cycle anywhere.

Every `import` statement counts, at module level or inside a function: an import deferred into a
function to dodge a cycle is still a cycle in the design. Imports under `if TYPE_CHECKING:` count too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("api", "worker", "trainer", "inference", "graders", "juice", "migrations")

# Inside api/, a module may import only modules of its own rank or below (routes -> services -> db,
# never back up). Ranks by the first name under api/; a module not listed fails the test until placed.
API_RANKS = {
    "main": 7,
    "routes": 6,
    "dashboard": 6,
    "deps": 5,
    "services": 4,
    "errors": 3,
    "queue": 3,
    "validation": 3,
    "storage": 3,
    "downloads": 3,
    "ratelimit": 3,
    "schemas": 2,
    "db": 1,
    "core": 0,
    "method_names": 0,
}
WEB_LAYER = ("api.main", "api.routes", "api.deps", "api.dashboard")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> Iterator[Path]:
    for package in PACKAGES:
        if (REPO / package).is_dir():
            yield from sorted((REPO / package).rglob("*.py"))


def imports_of(path: Path) -> set[str]:
    """The modules a file imports, absolute, with relative imports resolved. `from a import b`
    gives `a.b` when a/b is a module of ours, else `a`."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                found.add(candidate if is_module(candidate) else module)
    return {m for m in found if m}


def is_module(name: str) -> bool:
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def ours(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


def graph() -> dict[str, set[str]]:
    return {module_name(f): {m for m in imports_of(f) if ours(m)} for f in source_files()}


def third_party(module_file: Path) -> set[str]:
    return {m.split(".")[0] for m in imports_of(module_file) if not ours(m)}


def within(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations() -> dict[str, list[str]]:
    """Every import that breaks a rule, as {importer: [imported (why)]}."""
    found: dict[str, list[str]] = {}

    def bad(src: str, dst: str, why: str) -> None:
        found.setdefault(src, []).append(f"{dst} ({why})")

    for src, targets in graph().items():
        for dst in sorted(targets):
            top, dst_top = src.split(".")[0], dst.split(".")[0]
            if top == "trainer" and dst_top not in ("trainer", "graders"):
                bad(src, dst, "trainer/ is a library: it imports nothing of ours but the graders")
            elif top == "graders" and dst_top != "graders":
                bad(src, dst, "graders/ is a pure library: it imports nothing of ours")
            elif top == "api":
                if dst_top == "trainer" and not within(dst, "trainer.spec"):
                    bad(src, dst, "the API imports only trainer.spec of the trainer")
                elif dst_top == "inference" and not within(dst, "inference.schemas", "inference.streaming"):
                    bad(src, dst, "the API imports only inference's torch-free schemas and streaming")
                elif dst_top in ("worker", "juice"):
                    bad(src, dst, "the API never imports the worker or the CLI")
                elif dst_top == "api" and src != "api" and dst != "api":
                    rank_src, rank_dst = API_RANKS.get(src.split(".")[1]), API_RANKS.get(dst.split(".")[1])
                    if rank_src is None or rank_dst is None:
                        bad(src, dst, "a module of api/ that API_RANKS does not place")
                    elif rank_dst > rank_src:
                        bad(src, dst, "an upward import inside api/")
            elif top == "worker":
                if within(dst, *WEB_LAYER):
                    bad(src, dst, "the worker uses the API's data layer and services, never its web layer")
                elif dst_top in ("inference", "juice"):
                    bad(src, dst, "the worker never imports the inference server or the CLI")
            elif top == "inference":
                if dst_top in ("worker", "juice") or within(dst, *WEB_LAYER):
                    bad(src, dst, "the inference server needs no Celery, CLI or API web layer")
            elif top == "migrations" and dst_top not in ("migrations", "api"):
                bad(src, dst, "migrations see only the API's tables")
    for path in source_files():
        heavy = third_party(path) & {"torch", "transformers", "celery", "sqlalchemy", "fastapi"}
        if module_name(path).startswith("graders") and heavy:
            found.setdefault(module_name(path), []).append(
                f"{', '.join(sorted(heavy))} (the graders are pure Python: the API runs them too)"
            )
        if module_name(path).startswith("inference") and "celery" in third_party(path):
            found.setdefault(module_name(path), []).append(
                "celery (the inference server is no Celery worker)"
            )
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_import_rules_hold() -> None:
    assert len(graph()) > 100, "the checker reads too few modules"
    assert violations() == {}


def test_no_import_cycle() -> None:
    edges = graph()
    # a package's __init__ that hands its modules' names on is not a cycle with them
    for module in list(edges):
        edges[module] = {d for d in edges[module] if not module.startswith(d + ".")}
    assert cycles(edges) == []


def test_the_checker_sees_what_it_must(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    probe = REPO / "api" / "services" / "jobs.py"
    found = imports_of(probe)
    assert "api.db.tables" in found and "api.errors" in found
    fake = tmp_path / "api" / "db"
    fake.mkdir(parents=True)
    (fake / "probe.py").write_text(
        "from api.routes import jobs\ndef f():\n    import worker.runner\nfrom . import tables\nimport torch\n"
    )
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    assert imports_of(fake / "probe.py") == {"api.routes", "worker.runner", "api.db", "torch"}


def test_test_modules_have_unique_names() -> None:
    """pytest imports test modules by their basename (the test folders are not packages): two files of one
    name in different folders fail collection whenever both are collected, as in the whole suite."""
    names: dict[str, list[str]] = {}
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        names.setdefault(path.name, []).append(str(path.relative_to(REPO)))
    assert {name: paths for name, paths in names.items() if len(paths) > 1} == {}
