"""Pack store files into a tar stream on the fly: no temp file, constant memory, any fsspec backend."""

from __future__ import annotations

import tarfile
import time
from collections.abc import Iterator

from api.storage import ArtifactStore

BLOCK = tarfile.BLOCKSIZE  # 512


def tar_size(files: list[tuple[str, int]], top: str) -> int:
    """Exact byte length of the stream below (lets the response carry Content-Length)."""
    total = 0
    for rel, size in files:
        total += len(_header(f"{top}/{rel}", size, 0)) + size + (-size % BLOCK)
    return total + 2 * BLOCK + (-(total + 2 * BLOCK) % tarfile.RECORDSIZE)


def _header(name: str, size: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    return info.tobuf(format=tarfile.PAX_FORMAT)


def iter_tar(store: ArtifactStore, prefix: str, files: list[tuple[str, int]], top: str) -> Iterator[bytes]:
    """Yield a POSIX tar of `files` (paths relative to `prefix`), each placed under `top/`."""
    mtime = int(time.time())
    written = 0
    for rel, size in files:
        header = _header(f"{top}/{rel}", size, mtime)
        yield header
        sent = 0
        for chunk in store.iter_bytes(f"{prefix}/{rel}"):
            sent += len(chunk)
            yield chunk
        if sent != size:  # the listing and the blob disagree: a torn tar is worse than an error
            raise OSError(f"{prefix}/{rel} changed size while streaming ({size} -> {sent})")
        pad = -size % BLOCK
        yield b"\0" * pad
        written += len(header) + size + pad
    end = 2 * BLOCK
    yield b"\0" * (end + (-(written + end) % tarfile.RECORDSIZE))
