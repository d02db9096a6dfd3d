"""Loaded by a test's worker process (PYTHONPATH=tests/faults): a slow artifact store, so that a test
can SIGKILL the worker while a checkpoint is half uploaded. Python imports `sitecustomize` at start-up;
this one does nothing unless JUICE_TEST_SLOW_UPLOAD names a checkpoint folder (e.g. step_00000008).

Every file of that checkpoint after the first takes JUICE_TEST_SLOW_UPLOAD_S seconds more to store,
as over a slow link to a bucket; the bytes written are the real ones. It stands in for the one thing a
test here cannot have, a store slow enough to be caught mid-write."""

from __future__ import annotations

import os
import time

_FOLDER = os.environ.get("JUICE_TEST_SLOW_UPLOAD")

if _FOLDER:
    from fsspec.implementations.local import LocalFileSystem

    _put_file = LocalFileSystem.put_file
    _delay = float(os.environ.get("JUICE_TEST_SLOW_UPLOAD_S", "5"))
    _seen: set[str] = set()

    def _slow_put_file(self, lpath, rpath, *args, **kwargs):  # type: ignore[no-untyped-def]
        if f"/{_FOLDER}/" in str(rpath):
            if _seen:
                time.sleep(_delay)
            _seen.add(str(rpath))
        return _put_file(self, lpath, rpath, *args, **kwargs)

    LocalFileSystem.put_file = _slow_put_file  # type: ignore[method-assign]
