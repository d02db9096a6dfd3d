"""trainer/ is a pure library: no service, web, database or queue library anywhere in it (that it
imports nothing of ours is tests/test_import_rules.py's rule)."""

from __future__ import annotations

import ast
from pathlib import Path

import trainer
from trainer.spec.hyperparameters import HYPERPARAMETERS

TRAINER_DIR = Path(trainer.__file__).parent
FORBIDDEN = {
    "sqlalchemy",
    "celery",
    "fastapi",
    "starlette",
    "uvicorn",
    "alembic",
    "psycopg",
    "redis",
    "kombu",
    "pydantic_settings",
}


def imported_top_level_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_trainer_imports_nothing_from_the_service():
    files = sorted(TRAINER_DIR.rglob("*.py"))
    assert len(files) > 10
    offenders = {
        str(f.relative_to(TRAINER_DIR)): sorted(imported_top_level_modules(f) & FORBIDDEN) for f in files
    }
    assert {f: mods for f, mods in offenders.items() if mods} == {}


def test_the_checker_sees_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import celery\nfrom fastapi import params\ndef f():\n    import sqlalchemy.orm\nfrom . import x\n"
    )
    assert imported_top_level_modules(probe) == {"celery", "fastapi", "sqlalchemy"}


def test_public_api():
    assert set(trainer.__all__) <= set(dir(trainer))
    assert {"TrainConfig", "Sink", "NullSink", "RunResult", "run"} <= set(trainer.__all__)
    assert trainer.METHODS["sft"] is trainer.sft.train
    assert (
        set(trainer.METHODS) == {"sft", "irft", "rft", "dpo", "iql", "reinforcement"} == set(HYPERPARAMETERS)
    )


def test_spec_loads_no_torch():
    """trainer.spec is what the API imports: it must stay pydantic-only."""
    import subprocess
    import sys

    code = (
        "import sys, trainer.spec.hyperparameters, trainer.spec.plan\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_methods_import_no_other_method():
    """Each method file holds its own algorithm; what two methods share lives outside trainer/methods/."""
    offenders = {}
    for f in sorted((TRAINER_DIR / "methods").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("trainer.methods"):
                offenders[f.name] = node.module
            elif isinstance(node, ast.ImportFrom) and node.level > 0:
                offenders[f.name] = f"relative import from {node.module}"
    assert offenders == {}
