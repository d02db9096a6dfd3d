"""`juice up`'s home is private: the folder 0700, the files Juice writes in it 0600."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUICE_")}
    env.update(JUICE_HOME=str(home), **extra)
    return env


def init_like_juice_up(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Exactly what `juice up` does before it starts the API and the worker, in a process of its own
    (the umask is process-wide)."""
    code = "from juice import cli; cli.private_umask(); print(cli.init_embedded(cli.get_settings()))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def test_a_new_home_is_0700_and_its_files_0600(tmp_path: Path) -> None:
    home = tmp_path / "parent" / "juice-home"
    init_like_juice_up(env_for(home))
    assert mode_of(home) == 0o700
    for folder in ("artifacts", "broker", "work", "models"):
        assert mode_of(home / folder) == 0o700, folder
    for name in ("juice.db", "secret_key", "api_key"):
        assert mode_of(home / name) == 0o600, name
    for path in home.rglob("*"):  # nothing in the home is open to group or others
        assert mode_of(path) & 0o077 == 0, path


def test_an_existing_home_is_made_private_but_named_folders_are_left_alone(tmp_path: Path) -> None:
    home, shared_work = tmp_path / "home", tmp_path / "shared-work"
    home.mkdir(mode=0o755)
    shared_work.mkdir(mode=0o755)
    home.chmod(0o755)
    shared_work.chmod(0o755)
    out = init_like_juice_up(env_for(home, JUICE_WORK_DIR=str(shared_work)))
    assert mode_of(home) == 0o700 and "made" in out.stderr and "private" in out.stderr
    assert mode_of(shared_work) == 0o755  # the operator's folder, named by JUICE_WORK_DIR
    assert mode_of(home / "juice.db") == 0o600
    # A second start finds nothing to change and says nothing about it.
    assert "private" not in init_like_juice_up(env_for(home, JUICE_WORK_DIR=str(shared_work))).stderr
