"""Reward model: scoring position, RNG neutrality, save/load round trip, atomic checkpoint extras."""

from __future__ import annotations

import pytest
import torch

from trainer.checkpointing import find_latest_complete, save_checkpoint, verify_checkpoint
from trainer.modeling import load_model_and_tokenizer
from trainer.reward_model import (
    RewardTokens,
    collate_sequences,
    freeze_lower_layers,
    load_reward_model,
    save_reward_model,
    score,
)


def test_score_reads_last_attended_token_and_round_trips(tiny_model_dir, tokenizer, tmp_path):
    from transformers import AutoModelForSequenceClassification

    before = torch.get_rng_state()
    model = load_reward_model(tiny_model_dir, tokenizer.pad_token_id, seed=3)
    assert torch.equal(torch.get_rng_state(), before)  # the head init did not touch the caller's RNG
    again = load_reward_model(tiny_model_dir, tokenizer.pad_token_id, seed=3)
    assert torch.equal(model.score.weight, again.score.weight)

    seqs = [[5, 6, 7, 3], [8, 9, 3]]
    ids, mask = collate_sequences(seqs, tokenizer.pad_token_id)
    rewards = score(model.eval(), ids, mask)
    assert rewards.shape == (2,)
    # right padding does not change a row's score: row 1 alone equals row 1 padded
    alone = score(model, torch.tensor([seqs[1]]), torch.ones(1, 3, dtype=torch.long))
    torch.testing.assert_close(rewards[1:], alone, atol=1e-6, rtol=0)

    out = save_reward_model(model, tokenizer, tmp_path / "rm")
    loaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert loaded.config.num_labels == 1 and loaded.config.pad_token_id == tokenizer.pad_token_id
    # HF's own pooling (rightmost non-pad token) and ours agree, and the weights round-trip exactly
    with torch.no_grad():
        hf = loaded(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
        ours = score(loaded, ids, mask)
    torch.testing.assert_close(hf, rewards.detach(), atol=1e-6, rtol=0)  # HF matmuls every position
    torch.testing.assert_close(ours, rewards.detach(), atol=0, rtol=0)


def test_every_scored_sequence_ends_in_eos_on_both_paths(tokenizer):
    """A sample truncated at max_new_tokens (no EOS) is scored at an EOS, as a demonstration is: the
    reward model cannot learn "did it stop" from the position it reads (issue 23)."""
    eos = tokenizer.eos_token_id
    same = RewardTokens(tokenizer, tokenizer, max_len=4, eos_ids=[eos])
    assert same.identity
    assert same([5, 6, 7]) == [5, 6, 7, eos]  # truncated sample: EOS appended
    assert same([5, 6, eos]) == [5, 6, eos]  # finished sample / demonstration: unchanged
    assert same([1, 2, 3, 4, 5]) == [3, 4, 5, eos]  # the last max_len tokens, the EOS kept
    assert same([1, 2, 3, 4, eos]) == [2, 3, 4, eos]
    other = RewardTokens(tokenizer, tokenizer, max_len=100, eos_ids=[eos])
    other.identity = False  # force the decode/re-encode path
    ids = tokenizer("Hello there!", add_special_tokens=False)["input_ids"]
    assert other(ids) == [*ids, eos]
    assert other([*ids, eos]) == [*ids, eos]


def test_a_truncated_sample_is_scored_at_the_eos_it_would_have(tiny_model_dir, tokenizer):
    """The score of [prompt + truncated sample] is the score of [prompt + sample + EOS], on the
    same-vocabulary path, i.e. read at an EOS position, not at the sample's last generated token."""
    reward = load_reward_model(tiny_model_dir, tokenizer.pad_token_id, seed=0).eval()
    eos = tokenizer.eos_token_id
    to_reward = RewardTokens(tokenizer, tokenizer, max_len=64, eos_ids=[eos])
    truncated = [5, 9, 11, 13]
    ids, mask = collate_sequences(
        [to_reward(truncated), [*truncated, eos], truncated], tokenizer.pad_token_id
    )
    with torch.no_grad():
        scores = score(reward, ids, mask)
    assert scores[0].item() == pytest.approx(scores[1].item(), abs=1e-6)
    assert scores[0].item() != pytest.approx(scores[2].item(), abs=1e-4)  # what it used to read


def test_extra_checkpoint_files_are_written_before_publish_and_listed(tiny_model_dir, tmp_path):
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    reward = load_reward_model(tiny_model_dir, tokenizer.pad_token_id)
    out = tmp_path / "out"

    def extra(path):
        assert find_latest_complete(out) is None  # still hidden while the extra files are written
        save_reward_model(reward, tokenizer, path / "reward_model")
        torch.save({"x": 1}, path / "state" / "reward_optimizer.pt")

    final = save_checkpoint(
        out, 4, model=model, tokenizer=tokenizer, config={}, trainer_state={"global_step": 4}, extra=extra
    )
    assert final == find_latest_complete(out) and verify_checkpoint(final, check_sha256=True)
    import json

    listed = {f["path"] for f in json.loads((final / "manifest.json").read_text())["files"]}
    assert "reward_model/model.safetensors" in listed and "state/reward_optimizer.pt" in listed
    assert "model/model.safetensors" in listed


def test_freeze_lower_layers_trains_top_blocks_norm_and_head_only(tiny_model_dir, tokenizer):
    model = load_reward_model(tiny_model_dir, tokenizer.pad_token_id)
    total = sum(p.numel() for p in model.parameters())
    assert freeze_lower_layers(model, None) == total  # null: every weight trains

    n = freeze_lower_layers(model, 1)  # the tiny Llama has 2 blocks: the top one trains
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and n < total
    assert all(name.startswith(("model.layers.1.", "model.norm.", "score.")) for name in trainable)
    assert any(name.startswith("model.layers.1.") for name in trainable)
    assert {"model.norm.weight", "score.weight"} <= trainable

    # Gradients reach exactly the trainable weights; nothing below the top block is back-propagated.
    ids, mask = collate_sequences([[5, 6, 7, 3], [8, 9, 3]], tokenizer.pad_token_id)
    score(model, ids, mask).sum().backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable

    assert freeze_lower_layers(model, 0) == sum(
        p.numel() for name, p in model.named_parameters() if name.startswith(("model.norm.", "score."))
    )
    assert freeze_lower_layers(model, 1000) == total - model.model.embed_tokens.weight.numel()
