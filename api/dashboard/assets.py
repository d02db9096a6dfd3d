"""Static assets: Juice's own scripts and styles, and Plotly's bundle served from the installed package.

Plotly's JS is not copied into the repository: it is read from the `plotly` PyPI package that setup
installs, gzipped once in memory (4.8 MB -> about 1.4 MB on the wire) and served with a versioned,
immutable URL so a browser fetches it once per Plotly release.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    media_type: str
    etag: str


def _asset(raw: bytes, suffix: str) -> Asset:
    return Asset(
        body=raw,
        gzipped=gzip.compress(raw, compresslevel=6, mtime=0),
        media_type=MEDIA_TYPES.get(suffix, "application/octet-stream"),
        etag='"' + hashlib.sha256(raw).hexdigest()[:32] + '"',
    )


@lru_cache(maxsize=1)
def plotly_bundle() -> Asset:
    # find_spec locates the installed package without importing it (plotly's Python side is not needed).
    spec = find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the plotly package is not installed: run `pip install -e .` (scripts/setup.sh)")
    bundle = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    return _asset(bundle.read_bytes(), ".js")


@lru_cache(maxsize=1)
def plotly_version() -> str:
    return version("plotly")


def own_asset(name: str) -> Asset | None:
    """A file under static/ by relative name; None for anything outside it or missing."""
    path = (STATIC_DIR / name).resolve()
    if not path.is_file() or not path.is_relative_to(STATIC_DIR.resolve()):
        return None
    return _load(path, path.stat().st_mtime_ns)


@lru_cache(maxsize=64)
def _load(path: Path, mtime_ns: int) -> Asset:
    # Keyed by mtime too, so an edited file is served fresh without a restart.
    return _asset(path.read_bytes(), path.suffix)


def assets_version() -> str:
    """Changes whenever any of our own static files changes, for cache-busting URLs."""
    files = tuple((p, p.stat().st_mtime_ns) for p in sorted(STATIC_DIR.rglob("*")) if p.is_file())
    return _digest(files)


@lru_cache(maxsize=8)
def _digest(files: tuple[tuple[Path, int], ...]) -> str:
    digest = hashlib.sha256()
    for path, _ in files:
        digest.update(path.relative_to(STATIC_DIR).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
