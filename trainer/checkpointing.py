"""Atomic, self-describing checkpoints.

Layout of one checkpoint (all under `<output_dir>/checkpoints/`):

    step_00000120/
      model/                       a complete Hugging Face directory: from_pretrained() loads it
        config.json, generation_config.json, model*.safetensors (base model's dtype),
        tokenizer files, chat_template.jinja, juice_training_config.json (resolved TrainConfig)
      adapter/                     LoRA runs only: the adapter alone (PEFT format), used to resume
        adapter_config.json, adapter_model.safetensors
      state/                       what resume needs besides the weights
        optimizer.pt, scheduler.pt, rng.pt, trainer_state.json
                                   (no optimizer.pt/scheduler.pt where no resume would continue
                                   that optimiser: the last step, an IRFT/DPO iteration's end)
      manifest.json                written last: {"step", "files": [{"path", "size", "sha256"}]}

With LoRA, `model/` holds the adapter merged into a copy of the base weights (W + scale * B @ A),
so a download is a plain model. It is computed tensor by tensor and never touches the live model,
so training continues from the exact unmerged weights.

Atomicity: everything is written into `step_XXXXXXXX.tmp/`, each file is fsynced, the manifest is
written last, and only then is the directory renamed to its final name (one `rename`, atomic on
POSIX). A reader therefore trusts only directories named `step_XXXXXXXX` that hold a manifest
whose listed sizes match; `.tmp` leftovers from a crash are ignored and overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINTS_DIR = "checkpoints"
MANIFEST = "manifest.json"
TRAINING_CONFIG = "juice_training_config.json"
_STEP_DIR = re.compile(r"^step_(\d{8})$")


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR / f"step_{step:08d}"


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    *,
    model,
    tokenizer,
    config: dict[str, Any],
    trainer_state: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    dtype: torch.dtype | None = None,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write a complete checkpoint for optimiser step `step` and return its final directory.

    Args:
        model: the unwrapped model (a `PeftModel` for LoRA runs).
        tokenizer: saved into `model/`.
        config: the resolved TrainConfig as a dict.
        trainer_state: JSON-able loop position (global_step, epoch, batch_in_epoch, trained_tokens, ...).
        dtype: dtype of the saved `model/` weights; the model's own dtype when None.
        extra: called with the checkpoint's (still hidden) directory to add method-specific files
            (RFT's reward model, IRFT's generation cache) before the manifest lists everything.
    """
    final = checkpoint_dir(output_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a leftover from a crash mid-write
    (tmp / "state").mkdir(parents=True)

    model_dir = tmp / "model"
    if _is_peft(model):
        _save_hf(model.get_base_model(), model_dir, merged_lora_state_dict(model, dtype))
        model.save_pretrained(tmp / "adapter", safe_serialization=True)
    else:
        _save_hf(model, model_dir, _cast_state_dict(model.state_dict(), {}, dtype))
    tokenizer.save_pretrained(model_dir)
    _write_json(model_dir / TRAINING_CONFIG, config)

    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "state" / "optimizer.pt")
    if scheduler is not None:
        torch.save(scheduler.state_dict(), tmp / "state" / "scheduler.pt")
    torch.save(rng_state(), tmp / "state" / "rng.pt")
    _write_json(tmp / "state" / "trainer_state.json", {**trainer_state, "config": config})
    if extra is not None:
        extra(tmp)

    files = []
    for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
        _fsync_file(path)
        files.append(
            {"path": path.relative_to(tmp).as_posix(), "size": path.stat().st_size, "sha256": _sha256(path)}
        )
    _write_json(tmp / MANIFEST, {"format": 1, "step": step, "files": files})  # last: marks completeness
    for d in sorted((p for p in tmp.rglob("*") if p.is_dir()), reverse=True):
        _fsync_dir(d)
    _fsync_dir(tmp)

    stale = final.with_name(final.name + ".old")
    if final.exists():  # same step written again (e.g. after a crash between rename and bookkeeping)
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(final, stale)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    shutil.rmtree(stale, ignore_errors=True)
    return final


def merged_lora_state_dict(peft_model, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Base-model state dict with every LoRA delta added in, on CPU; the live model is not modified.

    Keys are the plain base-model names (`...q_proj.weight`), so the result loads into the base
    architecture without PEFT. The sum is done in float32 and cast to `dtype` (default: the base
    weight's dtype).
    """
    base = peft_model.get_base_model()
    adapter = peft_model.active_adapter
    deltas = {}
    for name, module in base.named_modules():
        if (
            hasattr(module, "get_delta_weight")
            and hasattr(module, "base_layer")
            and adapter in getattr(module, "lora_A", {})
        ):
            deltas[f"{name}.base_layer.weight"] = module.get_delta_weight(adapter)
    state = {
        key.replace(".base_layer.", "."): tensor
        for key, tensor in base.state_dict().items()
        if ".lora_" not in key
    }
    deltas = {key.replace(".base_layer.", "."): delta for key, delta in deltas.items()}
    return _cast_state_dict(state, deltas, dtype)


def _cast_state_dict(
    state: dict[str, torch.Tensor], deltas: dict[str, torch.Tensor], dtype: torch.dtype | None
) -> dict[str, torch.Tensor]:
    """CPU copy of `state` (+ `deltas`, summed in float32) in `dtype`. Tensors that share storage
    (tied embeddings) stay shared, so save_pretrained still recognises and drops the tied copy."""
    out, seen = {}, {}
    for key, tensor in state.items():
        tensor = tensor.detach()
        target = dtype or tensor.dtype
        if key in deltas:
            out[key] = (tensor.float() + deltas[key].detach().float()).to("cpu", target)
            continue
        tag = (tensor.data_ptr(), tensor.shape, tensor.stride())
        if tag not in seen:
            seen[tag] = tensor.to("cpu", target).contiguous()
        out[key] = seen[tag]
    return out


def _save_hf(model, model_dir: Path, state_dict: dict[str, torch.Tensor]) -> None:
    """save_pretrained with `state_dict`, then make config.json state the dtype actually written
    (save_pretrained records the in-memory dtype, e.g. float32 master weights)."""
    dtypes = {t.dtype for t in state_dict.values() if t.is_floating_point()}
    model.save_pretrained(model_dir, state_dict=state_dict, safe_serialization=True)  # empties state_dict
    if len(dtypes) == 1:
        config_path = model_dir / "config.json"
        config = json.loads(config_path.read_text())
        config["dtype"] = str(dtypes.pop()).removeprefix("torch.")
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def find_latest_complete(output_dir: str | Path) -> Path | None:
    """The highest-step checkpoint directory whose manifest is present and whose file sizes match."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return None
    candidates = []
    for d in root.iterdir():
        m = _STEP_DIR.match(d.name)
        if m and d.is_dir():
            candidates.append((int(m.group(1)), d))
    for _, d in sorted(candidates, reverse=True):
        if verify_checkpoint(d):
            return d
    return None


def verify_checkpoint(path: str | Path, *, check_sha256: bool = False) -> bool:
    """True when `path/manifest.json` exists and every listed file has its size (and hash, if asked)."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
        m = _STEP_DIR.match(path.name)
        if m and int(m.group(1)) != manifest["step"]:
            return False
        for entry in files:
            f = path / entry["path"]
            if not f.is_file() or f.stat().st_size != entry["size"]:
                return False
            if check_sha256 and _sha256(f) != entry["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / "state" / "trainer_state.json").read_text())


def load_optimizer_and_scheduler(path: str | Path, optimizer, scheduler) -> None:
    state = Path(path) / "state"
    if not (state / "optimizer.pt").is_file():
        raise ValueError(
            f"resume_from: {path} holds no optimiser state (it ends a run or an outer iteration), so "
            "it cannot continue training with the same optimiser"
        )
    optimizer.load_state_dict(torch.load(state / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(state / "scheduler.pt", map_location="cpu", weights_only=True))


# ---------------------------------------------------------------------------------------------------
# RNG state, stored as tensors and plain lists so that torch.load(weights_only=True) reads it back.


def rng_state() -> dict[str, Any]:
    # legacy=True is the default; numpy's stubs type the call without it as the dict form.
    legacy = np.random.get_state(legacy=True)
    assert isinstance(legacy, tuple)  # the dict form is only for bit generators other than MT19937
    name, keys, pos, has_gauss, cached = legacy
    state = {
        "python": random.getstate(),
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_rng_state(path: str | Path) -> None:
    set_rng_state(torch.load(Path(path) / "state" / "rng.pt", weights_only=True))


# ---------------------------------------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
        f.flush()
        os.fsync(f.fileno())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
