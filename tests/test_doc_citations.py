"""Citations of the project's documents from code resolve: `docs/<name>.md §N` names a file that exists
and a numbered heading it has (`## 3.` / `### 3.2 ...`); the methods document is always cited by
section, on one line; and the two design documents are never named without their folder, so every
citation can be followed from the repository root.

Also: every `D<n>` evidence reference of the methods document (line n of docs/decisions.md) is a dated
entry of that log.

(The document names are spelled in pieces here, so that a grep for the citations finds only citations.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
METHODS, DESIGN = "methods", "design"
PACKAGES = ("api", "worker", "trainer", "juice", "inference", "experiments", "benchmarks", "tests")
SKIP = {Path(__file__).resolve()}  # this file spells the patterns it looks for

NUMBER = r"\d+(?:\.\d+)*"
# `docs/<name>.md §3.2`, optionally followed by more sections of the same file: `, §4.1`, ` and §6`,
# `-§6.4`. Group 1 is the document's name without `.md`.
CITATION = re.compile(rf"docs/([\w-]+)\.md §({NUMBER})((?:(?:,| and| or|/|-) ?§{NUMBER})*)")
CHAINED = re.compile(rf"§({NUMBER})")
# A bare mention of the design documents: not preceded by a path (`docs/`, `../`) or part of a longer name.
BARE = re.compile(rf"(?<![\w/.-])({DESIGN}|{METHODS})\.md\b")
# The methods document named without a section right after it (e.g. the section wrapped to the next line).
UNSECTIONED = re.compile(rf"docs/{METHODS}\.md(?! §\d)")
HEADING = re.compile(rf"^#+ ({NUMBER})\.?\s", re.MULTILINE)
EVIDENCE = re.compile(r"\bD(\d+)\b")


def _python_files() -> list[Path]:
    files = []
    for package in PACKAGES:
        folder = ROOT / package
        if folder.is_dir():
            files += [p for p in sorted(folder.rglob("*.py")) if p.resolve() not in SKIP]
    return files


def _lines():
    """(where, line) of every line of the packages' Python files, where = "path:lineno"."""
    for path in _python_files():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            yield f"{path.relative_to(ROOT)}:{lineno}", line


def _cited(text: str) -> list[tuple[str, str]]:
    """(document name, section) of every section citation in `text`."""
    found = []
    for match in CITATION.finditer(text):
        found += [(match.group(1), s) for s in [match.group(2), *CHAINED.findall(match.group(3))]]
    return found


def _sections(name: str) -> set[str] | None:
    path = DOCS / f"{name}.md"
    if not path.is_file():
        return None
    return set(HEADING.findall(path.read_text(encoding="utf-8")))


def test_the_code_cites_the_methods_document():
    """The checks below would pass vacuously if the pattern stopped matching the code's citations."""
    cited = {citation for _, line in _lines() for citation in _cited(line)}
    assert (METHODS, "1.2") in cited and (METHODS, "6.4") in cited


def test_every_section_citation_resolves_to_a_file_and_a_heading():
    wrong = []
    for where, line in _lines():
        for name, section in _cited(line):
            sections = _sections(name)
            if sections is None:
                wrong.append(f"{where}: docs/{name}.md does not exist")
            elif section not in sections:
                wrong.append(f"{where}: docs/{name}.md has no section {section}")
    assert not wrong, "\n".join(wrong)


def test_the_methods_document_is_cited_by_section_on_one_line():
    wrong = [f"{where}: {line.strip()}" for where, line in _lines() if UNSECTIONED.search(line)]
    assert not wrong, "cite a section right after the name, on the same line:\n" + "\n".join(wrong)


def test_the_design_documents_are_named_with_their_folder():
    wrong = [
        f"{where}: write docs/{match.group(0)}" for where, line in _lines() for match in BARE.finditer(line)
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    "text, expected",
    [
        (f"see docs/{METHODS}.md §3.2.", [(METHODS, "3.2")]),
        (f"(docs/{METHODS}.md §2, §6.5 and §4)", [(METHODS, "2"), (METHODS, "6.5"), (METHODS, "4")]),
        (f"docs/{DESIGN}.md §4 or §5", [(DESIGN, "4"), (DESIGN, "5")]),
        (f"cases A-D (docs/{METHODS}.md §6.1-§6.4)", [(METHODS, "6.1"), (METHODS, "6.4")]),
    ],
)
def test_the_citation_pattern(text, expected):
    assert _cited(text) == expected
    assert not BARE.search(text) and not UNSECTIONED.search(text)


def test_the_faults_are_found():
    assert BARE.search(f"the reference ({METHODS}.md §1.3)")
    assert BARE.search(f'"""The data model ({DESIGN}.md "Data model")')
    assert UNSECTIONED.search(f"the reference code (docs/{METHODS}.md\n")
    assert not BARE.search(f"docs/{METHODS}.md §1.3, ../shared/reference/{METHODS}.md, service-{DESIGN}.md")


def test_methods_document_evidence_lines_are_dated_decisions():
    methods = (DOCS / f"{METHODS}.md").read_text(encoding="utf-8")
    decisions = (DOCS / "decisions.md").read_text(encoding="utf-8").splitlines()
    cited = sorted({int(n) for n in EVIDENCE.findall(methods)})
    assert cited, "the methods document cites no line of docs/decisions.md"
    wrong = [n for n in cited if n > len(decisions) or not re.match(r"- \d{4}-\d{2}-\d{2}", decisions[n - 1])]
    assert not wrong, f"the methods document cites D{wrong}: not dated lines of docs/decisions.md"
