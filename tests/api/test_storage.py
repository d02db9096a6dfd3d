"""The artifact store's checkpoint folders: complete only once their manifest (written last) exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.storage import ArtifactStore


def _folder(root: Path, content: str) -> Path:
    (root / "model").mkdir(parents=True)
    (root / "model" / "weights.bin").write_text(content)
    (root / "model" / "config.json").write_text(content)
    (root / "manifest.json").write_text(content)
    return root


def test_the_manifest_goes_up_last(tmp_path: Path) -> None:
    store = ArtifactStore(f"file://{tmp_path / 'store'}")
    order: list[str] = []
    put_file = store.fs.put_file
    store.fs.put_file = lambda src, dest, *a, **k: (order.append(Path(dest).name), put_file(src, dest))
    store.put_dir(_folder(tmp_path / "a", "old"), "ckpt/step_1", last="manifest.json")
    assert order[-1] == "manifest.json" and len(order) == 3


def test_a_rewrite_that_dies_half_way_leaves_no_manifest_over_mixed_files(tmp_path: Path) -> None:
    store = ArtifactStore(f"file://{tmp_path / 'store'}")
    store.put_dir(_folder(tmp_path / "a", "old"), "ckpt/step_1", last="manifest.json")
    assert store.exists("ckpt/step_1/manifest.json")
    put_file, calls = store.fs.put_file, []

    def dies_on_the_second_file(src: str, dest: str, *args: object, **kwargs: object) -> None:
        calls.append(dest)
        if len(calls) == 2:
            raise OSError("connection reset")
        put_file(src, dest)

    store.fs.put_file = dies_on_the_second_file
    with pytest.raises(OSError):
        store.put_dir(_folder(tmp_path / "b", "new"), "ckpt/step_1", last="manifest.json")
    # one file is new, one old: the old manifest must not vouch for that mix
    assert not store.exists("ckpt/step_1/manifest.json")
