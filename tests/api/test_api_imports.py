"""Serving the API never loads torch or transformers: it imports of the trainer only its torch-free
`trainer.spec` (the rule itself is tests/test_import_rules.py's), and nothing it imports pulls them in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import api

API_DIR = Path(api.__file__).parent
REPO = API_DIR.parent


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
