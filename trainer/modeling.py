"""Loading base models (Hugging Face directories, hub ids, GGUF files) and attaching LoRA."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from trainer.config import LoraSettings

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel


def load_tokenizer(name_or_path: str | Path, **kwargs: Any):
    """AutoTokenizer, with pad = EOS when the tokenizer has no pad token (labels mask padding anyway).
    `kwargs` go to from_pretrained (e.g. local_files_only)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), **kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def base_dtype(name_or_path: str | Path) -> torch.dtype:
    """The dtype the base model's weights are stored in (its config's dtype; float32 if unset).

    Checkpoints are saved in this dtype, whatever precision training used.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(name_or_path))
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def load_model_and_tokenizer(
    name_or_path: str | Path,
    *,
    lora: LoraSettings | None = None,
    dtype: torch.dtype | None = torch.float32,
    adapter_dir: str | Path | None = None,
):
    """Load a causal LM and its tokenizer; wrap the model with a trainable LoRA adapter if enabled.

    Args:
        name_or_path: a local Hugging Face directory or a hub id.
        lora: LoRA settings; the adapter is added when `lora.enabled`.
        dtype: weight dtype. float32 by default: trainable weights must be float32 for mixed
            precision (autocast computes in bf16/fp16, AdamW updates the float32 master copy).
        adapter_dir: a saved adapter to continue training (resume) instead of a fresh one.

    Returns:
        (model, tokenizer). The model is a `PeftModel` when LoRA is on.
    """
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(name_or_path)
    model: PreTrainedModel | PeftModel = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=dtype)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if adapter_dir is not None:
        from peft import PeftModel

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
    elif lora is not None and lora.enabled:
        from peft import LoraConfig, get_peft_model

        peft_config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            task_type="CAUSAL_LM",
        )
        with warnings.catch_warnings():  # peft calls a transformers property deprecated in v5
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = get_peft_model(model, peft_config)
    return model, tokenizer


def import_gguf(
    gguf_path: str | Path, dest_dir: str | Path, *, dtype: torch.dtype | None = None, overwrite: bool = False
) -> Path:
    """Convert a GGUF file into a Hugging Face directory (safetensors, config, tokenizer).

    Quantised tensors are dequantised by transformers' GGUF loader (float32 unless `dtype` says
    otherwise). The directory appears atomically: written to `<dest>.tmp`, then renamed. An existing
    `dest_dir` is an error unless `overwrite`, in which case it is replaced only once the new one is
    complete.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path).resolve()
    if not gguf_path.is_file():
        raise FileNotFoundError(f"{gguf_path} does not exist")
    dest = Path(dest_dir)
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} already exists")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)

    kwargs = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), dtype=dtype, **kwargs)
    # The tensors are dequantised now, but the model still carries the GGUF "quantizer", and
    # save_pretrained refuses to serialise a model "quantized with gguf". Forget it, and the
    # quantization_config that loaders would otherwise try to honour.
    model.hf_quantizer = None  # type: ignore[assignment]  # set by from_pretrained, undeclared on the class
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")

    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    _fsync_tree(tmp)
    old = dest.with_name(dest.name + ".old")
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
