"""The documentation agrees with the code: docs/deployment.md's settings table is what
scripts/settings_table.py makes of `Settings`, every variable it names does set its setting, and every
relative link of README.md and docs/*.md reaches a file (and a heading, when it names one); the
front page opens with the two commands, the second the one CI runs; and no page but the decision log
speaks of issue numbers."""

from __future__ import annotations

import importlib.util
import re
import sys
import typing
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import SecretStr

from api.core.config import Settings

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
REFRESH = ".venv/bin/python scripts/settings_table.py --write"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("settings_table", REPO / "scripts" / "settings_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_settings_table_in_deployment_md_is_the_generated_one() -> None:
    script = _script()
    doc = script.DOC.read_text()
    assert doc.count(script.START) == 1 and doc.count(script.END) == 1, f"markers missing in {script.DOC}"
    in_doc = doc.split(script.START, 1)[1].split(script.END, 1)[0].strip("\n")
    generated = script.table().strip("\n")
    assert in_doc == generated, f"docs/deployment.md's settings table differs from Settings: run `{REFRESH}`"
    rows = generated.splitlines()[2:]
    assert len(rows) == len(Settings.model_fields)  # one row per setting, none left out


def _other_value(name: str, kind: object, default: object) -> tuple[str, object]:
    """A valid value for the setting that differs from its default: as an environment variable spells it,
    and as the setting then holds it."""
    if typing.get_origin(kind) is typing.Literal:
        choice = next(v for v in typing.get_args(kind) if v != default)
        return str(choice), choice
    if kind is bool:
        return ("false", False) if default else ("true", True)
    if kind in (int, float):
        number = typing.cast(float, default) + 1
        return str(number), number
    if kind is SecretStr:
        return "s" * 40, "s" * 40
    path = f"/tmp/juice-settings-table-{name}"
    return path, Path(path) if kind is Path else path


def test_every_variable_in_the_table_sets_its_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The names come from pydantic-settings' own reading of the fields; this checks them the long way,
    by setting each variable and reading the setting back."""
    rows = _script().table().splitlines()[2:]
    names = [re.match(r"\| `(JUICE_\w+)` \|", row) for row in rows]
    assert all(names), rows
    for match, (field_name, field) in zip(names, Settings.model_fields.items(), strict=True):
        assert match is not None
        text, expected = _other_value(field_name, field.annotation, field.default)
        monkeypatch.setenv(match.group(1), text)
        got = getattr(Settings(), field_name)
        if isinstance(got, SecretStr):
            got = got.get_secret_value()
        assert got == expected, (match.group(1), text, got)
        monkeypatch.delenv(match.group(1))


# Links -------------------------------------------------------------------------------------------------

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _anchors(text: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in _HEADING.findall(_FENCE.sub("", text)):
        plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
        slug = re.sub(r"[^\w\- ]", "", plain.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _relative_links(page: Path) -> list[str]:
    """The targets of the page's Markdown links and images outside code blocks, but for URLs."""
    targets = _LINK.findall(_FENCE.sub("", page.read_text()))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # https:, mailto: ...


def _broken(page: Path, target: str) -> str | None:
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    if not dest.exists():
        return "no such file"
    if anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text()):
        return f"no such heading in {dest.name}"
    return None


def test_every_relative_link_in_readme_and_docs_resolves() -> None:
    assert {REPO / "README.md", REPO / "docs" / "deployment.md", REPO / "docs" / "api.md"} <= set(PAGES)
    links = [(page, target) for page in PAGES for target in _relative_links(page)]
    assert len(links) > 30  # the pattern does find the links
    broken = [
        f"{page.relative_to(REPO)}: {target} ({why})"
        for page, target in links
        if (why := _broken(page, target)) is not None
    ]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_link_check_catches_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n## Real heading\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n[ok](other.md#real-heading) [self](#page) ![img](gone.png) [web](https://example.com)\n"
        "[moved](other.md#old-heading) [gone](gone.md)\n```\n[in code](nowhere.md)\n```\n"
    )
    links = _relative_links(page)
    assert links == ["other.md#real-heading", "#page", "gone.png", "other.md#old-heading", "gone.md"]
    assert [_broken(page, t) for t in links] == [
        None,
        None,
        "no such file",
        "no such heading in other.md",
        "no such file",
    ]


def test_the_anchor_rule_matches_githubs() -> None:
    text = "# Juice\n## The `juice` CLI: files & jobs\n## Juice\n```\n# not a heading\n```\n"
    assert _anchors(text) == {"juice", "the-juice-cli-files--jobs", "juice-1"}


def test_the_front_page_opens_with_the_two_commands_and_ci_runs_the_same_test_command() -> None:
    first_block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["bash scripts/run.sh", "bash scripts/test.sh"]
    assert (REPO / "scripts" / "run.sh").is_file() and (REPO / "scripts" / "test.sh").is_file()
    assert (REPO / ".ci" / "run").read_text().rstrip().endswith("exec bash scripts/test.sh")


# "issue 9", "Issues 9 and 23", "issue-12", "#33"; not a marker such as "issue23-discussion", an HTML
# entity ("&#8212;") or a path ("a/#1").
ISSUE_NUMBER = re.compile(r"\bissues?[ -]\d+|(?<![\w/&])#\d+\b", re.I)


def test_no_page_but_the_decision_log_speaks_of_issue_numbers() -> None:
    """History lives in docs/decisions.md, the dated log; every other page says what is true now and names
    the thing itself (the from-base grid, the 2026-12-01 benchmark), not the issue that asked for it."""
    pages = [page for page in PAGES if page.name != "decisions.md"]
    assert {REPO / "README.md", REPO / "docs" / "benchmarks.md", REPO / "docs" / "results.md"} <= set(pages)
    found = {
        str(page.relative_to(REPO)): hits
        for page in pages
        if (hits := ISSUE_NUMBER.findall(page.read_text()))
    }
    assert not found, found


def test_the_issue_number_check_catches_each_form() -> None:
    text = "issue 9's grid; Issues 9 and 23; the issue-12 goals; SPIN's #33; issue23-discussion; &#8212; a/#1"
    assert ISSUE_NUMBER.findall(text) == ["issue 9", "Issues 9", "issue-12", "#33"]
