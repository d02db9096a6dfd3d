"""The artifact store: uploaded files and checkpoints, at any fsspec URL (a local folder by default).

Writes are atomic from a reader's point of view: a blob is written under a temporary name and moved
into place; a checkpoint folder is complete only once its manifest.json exists (written last).
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import IO

from fsspec.core import url_to_fs

from api.core.config import get_settings

CHUNK = 1024 * 1024


class ArtifactStore:
    def __init__(self, url: str) -> None:
        self.fs, root = url_to_fs(url)
        self.root = root.rstrip("/")
        self.fs.makedirs(self.root, exist_ok=True)

    def _full(self, key: str) -> str:
        return posixpath.join(self.root, key.lstrip("/"))

    def open_temp_writer(self, key: str) -> tuple[str, IO[bytes]]:
        """Open a temporary blob for `key`; `commit_temp` moves it into place, `discard` removes it."""
        tmp = f"{key}.tmp-{uuid.uuid4().hex}"
        full = self._full(tmp)
        self.fs.makedirs(posixpath.dirname(full), exist_ok=True)
        return tmp, self.fs.open(full, "wb")

    def commit_temp(self, tmp_key: str, key: str) -> None:
        self.fs.mv(self._full(tmp_key), self._full(key))

    def discard(self, key: str) -> None:
        full = self._full(key)
        if self.fs.exists(full):
            self.fs.rm(full, recursive=True)

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._full(key)))

    def size(self, key: str) -> int:
        return int(self.fs.size(self._full(key)))

    def iter_bytes(self, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        with self.fs.open(self._full(key), "rb") as f:
            while chunk := f.read(chunk_size):
                yield chunk

    def list_files(self, prefix: str) -> list[tuple[str, int]]:
        """(relative path, size) of every file under `prefix`, sorted."""
        base = self._full(prefix).rstrip("/")
        out = []
        for path, info in self.fs.find(base, detail=True).items():
            rel = posixpath.relpath(path, base)
            out.append((rel, int(info.get("size") or 0)))
        return sorted(out)

    def put_dir(self, local_dir: Path, key: str, last: str | None = None) -> int:
        """Upload a folder file by file; `last` (e.g. manifest.json) goes up after everything else.

        Returns the bytes uploaded. Over an earlier upload to the same key (a resumed run writing the
        step again), the old marker goes first: an upload killed half-way must never leave a marker
        beside a mix of old and new files."""
        files = sorted(p for p in local_dir.rglob("*") if p.is_file())
        files.sort(key=lambda p: p.name == last)  # stable: the marker file moves to the end
        if last is not None:
            self.discard(posixpath.join(key, last))
        total = 0
        for path in files:
            rel = path.relative_to(local_dir).as_posix()
            dest = self._full(posixpath.join(key, rel))
            self.fs.makedirs(posixpath.dirname(dest), exist_ok=True)
            self.fs.put_file(str(path), dest)
            total += path.stat().st_size
        return total

    def get_dir(self, key: str, local_dir: Path) -> None:
        for rel, _ in self.list_files(key):
            dest = local_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(self._full(posixpath.join(key, rel)), str(dest))

    def get_file(self, key: str, local_path: Path) -> None:
        local_path.parent.mkdir(parents=True, exist_ok=True)
        self.fs.get_file(self._full(key), str(local_path))


@lru_cache
def get_store() -> ArtifactStore:
    return ArtifactStore(get_settings().resolved_storage_url)


__all__ = ["ArtifactStore", "get_store"]
