"""The API imports of the trainer only its torch-free `trainer.spec` (design.md: the API validates job
requests against the trainer's own definitions), and serving it never loads torch or transformers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import api

API_DIR = Path(api.__file__).parent
REPO = API_DIR.parent


def trainer_imports(path: Path) -> set[str]:
    """Every trainer module a file imports (`from trainer import x` counts as `trainer`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return {m for m in found if m.split(".")[0] == "trainer"}


def allowed(module: str) -> bool:
    return module == "trainer.spec" or module.startswith("trainer.spec.")


def test_api_imports_only_trainer_spec() -> None:
    files = sorted(API_DIR.rglob("*.py"))
    assert len(files) > 10
    imports = {str(f.relative_to(REPO)): trainer_imports(f) for f in files}
    assert any(imports.values()), "the API validates against trainer.spec; the checker sees none"
    offenders = {f: sorted(m for m in mods if not allowed(m)) for f, mods in imports.items()}
    assert {f: mods for f, mods in offenders.items() if mods} == {}


def test_the_checker_sees_trainer_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import trainer.config\nfrom trainer import run\nfrom trainer.spec.plan import total_steps\n"
        "def f():\n    from trainer.spec import hyperparameters\nimport trainerx\nfrom . import trainer\n"
    )
    assert trainer_imports(probe) == {"trainer.config", "trainer", "trainer.spec.plan", "trainer.spec"}
    assert [allowed(m) for m in ("trainer", "trainer.config", "trainer.spec", "trainer.spec.plan")] == [
        False,
        False,
        True,
        True,
    ]


def test_serving_the_api_loads_no_torch() -> None:
    """Nor does importing the worker's task module (the trainer loads inside the task)."""
    code = (
        "import sys, api.main, api.services.methods, api.schemas.jobs, worker.runner\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft'))\n"
        "assert 'trainer.spec.hyperparameters' in sys.modules\n"
        "print(heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
