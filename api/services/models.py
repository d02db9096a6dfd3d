"""Which base models a job may name: a folder under an allow-listed root, or a Hugging Face hub id."""

from __future__ import annotations

import os
import re
from pathlib import Path

from api.core.config import Settings
from api.errors import InvalidRequest

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[\w.-]{1,96})?$")


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def resolve_model(name: str, settings: Settings, param: str = "model") -> str:
    """Return a local model directory (str) or the hub id itself; raise InvalidRequest(param='model').

    A name that looks like a path must lie inside a root after normalising '..' away; symlinks inside a
    root are followed, since only the operator can place them there. A bare name is looked up under
    each root first, then treated as a hub id.
    """
    roots = settings.model_root_paths
    if name.startswith(("/", ".", "~")):
        path = Path(os.path.normpath(Path(name).expanduser().absolute()))
        if not any(path == r or path.is_relative_to(r) for r in roots):
            raise InvalidRequest(f"Model path '{name}' is not inside an allowed model root "
                                 f"(JUICE_MODEL_ROOTS).", code="model_not_allowed", param=param)
        if not _is_model_dir(path):
            raise InvalidRequest(f"Model path '{name}' is not a Hugging Face model directory (no config.json).",
                                 code="model_not_found", param=param)
        return str(path)
    if ".." not in name.split("/"):
        for root in roots:
            candidate = Path(os.path.normpath(root / name))
            if candidate.is_relative_to(root) and _is_model_dir(candidate):
                return str(candidate)
    if settings.allow_hub_models and HUB_ID.match(name):
        return name
    raise InvalidRequest(f"Model '{name}' was not found under the model roots and is not a hub id.",
                         code="model_not_found", param=param)
