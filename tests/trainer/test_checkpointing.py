"""Atomic checkpoints: what counts as complete, torn files, loadable model/, merged LoRA, RNG."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch

from trainer.checkpointing import (
    TRAINING_CONFIG,
    checkpoint_dir,
    find_latest_complete,
    load_rng_state,
    load_trainer_state,
    save_checkpoint,
    verify_checkpoint,
)
from trainer.config import LoraSettings
from trainer.modeling import load_model_and_tokenizer

INPUT = torch.tensor([[2, 40, 41, 42, 43, 3]])


@pytest.fixture
def model_and_tokenizer(tiny_model_dir):
    return load_model_and_tokenizer(tiny_model_dir)


def _save(out, step, model, tokenizer, **kwargs):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return save_checkpoint(
        out,
        step,
        model=model,
        tokenizer=tokenizer,
        config={"seed": 0},
        trainer_state={"global_step": step},
        optimizer=opt,
        **kwargs,
    )


def test_layout_manifest_and_loadable_model(tmp_path, model_and_tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = model_and_tokenizer
    path = _save(tmp_path, 7, model, tokenizer)
    assert path == tmp_path / "checkpoints" / "step_00000007" == checkpoint_dir(tmp_path, 7)
    assert not path.with_name("step_00000007.tmp").exists()
    manifest = json.loads((path / "manifest.json").read_text())
    listed = {f["path"] for f in manifest["files"]}
    on_disk = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()} - {"manifest.json"}
    assert manifest["step"] == 7 and listed == on_disk
    assert {
        "model/config.json",
        "model/model.safetensors",
        "model/tokenizer.json",
        f"model/{TRAINING_CONFIG}",
        "state/optimizer.pt",
        "state/rng.pt",
        "state/trainer_state.json",
    } <= listed
    assert not any(p.startswith("adapter/") for p in listed)
    assert json.loads((path / "model" / TRAINING_CONFIG).read_text()) == {"seed": 0}
    assert load_trainer_state(path)["global_step"] == 7
    assert verify_checkpoint(path, check_sha256=True)

    loaded = AutoModelForCausalLM.from_pretrained(path / "model")
    torch.testing.assert_close(loaded(INPUT).logits, model(INPUT).logits)
    assert AutoTokenizer.from_pretrained(path / "model").chat_template == tokenizer.chat_template


def test_saved_in_requested_dtype(tmp_path, model_and_tokenizer):
    from transformers import AutoModelForCausalLM

    model, tokenizer = model_and_tokenizer
    path = _save(tmp_path, 1, model, tokenizer, dtype=torch.bfloat16)
    assert json.loads((path / "model" / "config.json").read_text())["dtype"] == "bfloat16"
    assert AutoModelForCausalLM.from_pretrained(path / "model").dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32  # the live model is untouched


def test_find_latest_ignores_tmp_and_manifestless_dirs(tmp_path, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    assert find_latest_complete(tmp_path) is None
    good = _save(tmp_path, 2, model, tokenizer)
    # A crash mid-write leaves a .tmp directory; one before the manifest leaves no manifest.
    shutil.copytree(good, tmp_path / "checkpoints" / "step_00000009.tmp")
    no_manifest = tmp_path / "checkpoints" / "step_00000005"
    shutil.copytree(good, no_manifest)
    (no_manifest / "manifest.json").unlink()
    (tmp_path / "checkpoints" / "notes").mkdir()
    assert find_latest_complete(tmp_path) == good
    assert not verify_checkpoint(no_manifest)


def test_torn_file_is_detected(tmp_path, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    older = _save(tmp_path, 1, model, tokenizer)
    newer = _save(tmp_path, 2, model, tokenizer)
    weights = newer / "model" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # torn write
    assert not verify_checkpoint(newer)
    assert find_latest_complete(tmp_path) == older
    # Same size, different bytes: only the hash notices.
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert verify_checkpoint(newer) and not verify_checkpoint(newer, check_sha256=True)


def test_rewriting_a_step_replaces_it_and_clears_leftovers(tmp_path, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    (tmp_path / "checkpoints" / "step_00000003.tmp").mkdir(parents=True)  # stale crash leftover
    first = _save(tmp_path, 3, model, tokenizer)
    second = _save(tmp_path, 3, model, tokenizer)
    assert first == second and verify_checkpoint(second)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000003"]


def test_lora_checkpoint_has_merged_model_and_adapter(tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, tokenizer = load_model_and_tokenizer(
        tiny_model_dir, lora=LoraSettings(enabled=True, r=4, dropout=0.0)
    )
    with torch.no_grad():  # LoRA starts with B = 0; make the adapter actually change the output
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(len(name)))
    model.eval()
    expected = model(INPUT).logits
    base_logits = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(INPUT).logits
    assert not torch.allclose(expected, base_logits, atol=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    path = _save(tmp_path, 4, model, tokenizer)
    assert (path / "adapter" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(path / "model")
    assert not isinstance(merged, PeftModel)
    assert not any("lora" in k for k in merged.state_dict())
    # W + s*B@A against x@W + s*(x@A)@B: the same function, summed in another order (fp32 rounding
    # that depends on the matmul kernel the thread count picks; 1e-5 failed once under load).
    torch.testing.assert_close(merged(INPUT).logits, expected, atol=1e-4, rtol=1e-4)
    # Merging was done on copies: the live adapter model is unchanged.
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    torch.testing.assert_close(model(INPUT).logits, expected)
    # And the adapter directory reloads onto the base model to the same function.
    reloaded, _ = load_model_and_tokenizer(tiny_model_dir, adapter_dir=path / "adapter")
    reloaded.eval()
    torch.testing.assert_close(reloaded(INPUT).logits, expected, atol=1e-5, rtol=1e-5)


def test_rng_state_round_trip(tmp_path, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    path = _save(tmp_path, 1, model, tokenizer)
    draws = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    load_rng_state(path)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert draws[0] == again[0] and draws[1] == again[1] and torch.equal(draws[2], again[2])
