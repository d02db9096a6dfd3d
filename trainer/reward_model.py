"""RFT's explicit reward model r_theta(x, y) (docs/methods.md §3.2): load, score, save, re-tokenise.

The reward model is a Hugging Face `AutoModelForSequenceClassification` with `num_labels=1` built
from a causal-LM base: the transformer trunk plus a new bias-free linear head (`score`), as the
reference code's `v_head`. By default the base is the policy's own base model;
`RFTHyperparameters.reward_model` may name another (e.g. smaller) model. The same network serves every
`RFTHyperparameters.divergence`: under "bt" its score is a Bradley-Terry reward, under "js" and
"reverse_kl" it is the logit of a discriminator D = sigmoid(score) (`losses.discriminator_loss`).

Where the score is read: at the LAST ATTENDED token of right-padded `prompt ++ response` (the
response's end-of-turn EOS), i.e. "scored at the last response token" (the reference code reads the
first EOS, which is the same token for our EOS-terminated responses). `score()` finds that position
from the attention mask. Hugging Face's own `forward` finds it as the rightmost token != pad_token_id,
which is the same position whenever pad_token_id != eos_token_id (true of the tiny test model and of
most chat tokenizers); when a tokenizer has no pad token and pad = EOS, HF's pooling would read the
token before the EOS instead, so always score through `score()`.

Tokenisation (`RewardTokens`). Every scored sequence ends in an EOS token, on both paths. When the
reward model has the policy's vocabulary (the default: same base), token ids pass through, with the
policy's EOS appended to a sample that never emitted one. Otherwise the policy's ids are decoded to text
and re-tokenised with the reward model's own tokenizer, its EOS appended: robust to any pair of
tokenizers, at the cost of a decode per sequence.

Checkpoints (`save_reward_model`): `reward_model/` is a plain HF directory (safetensors, config with
pad_token_id and num_labels=1, tokenizer) that `AutoModelForSequenceClassification.from_pretrained`
loads; the reward optimiser's state is `state/reward_optimizer.pt`. `save_checkpoint(..., extra=...)` writes these
into a checkpoint made by `checkpointing.save_checkpoint` while it is still staged, re-lists the
manifest, and only then renames it into place, so the checkpoint appears atomically with them.

Freezing (`freeze_lower_layers`, hyperparameter `reward_trainable_layers`, default 4): only the top n
transformer blocks, the trunk's final norm and the score head train. The reference trains the top 4 of
pythia-1.4b's 24 blocks but also the embeddings, which makes every backward run through the whole
trunk; freezing the embeddings too means autograd stops at the lowest trained block, so a reward step
costs one forward plus the backward of n blocks, and AdamW keeps state for those weights only.
"""

from __future__ import annotations

from pathlib import Path

import torch

from trainer.checkpointing import (
    _save_hf,
)

REWARD_DIR = "reward_model"
REWARD_OPTIMIZER = "reward_optimizer.pt"


def load_reward_model(
    name_or_path: str | Path, pad_token_id: int | None, *, seed: int = 0, dtype: torch.dtype = torch.float32
):
    """AutoModelForSequenceClassification(num_labels=1) from a causal-LM base or a saved reward model.

    The new `score` head is initialised from `seed` inside a forked RNG, so loading does not move the
    caller's random streams and the same seed gives the same head.
    """
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "Some weights ... newly initialized: ['score.weight']" is expected
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForSequenceClassification.from_pretrained(
                str(name_or_path), num_labels=1, dtype=dtype
            )
    finally:
        hf_logging.set_verbosity(verbosity)
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
    model.config.problem_type = "regression"
    return model


def freeze_lower_layers(model, n_trainable: int | None) -> int:
    """Leave only the top `n_trainable` blocks of the trunk, its other non-embedding weights (the
    final norm) and the head trainable; None leaves every weight trainable. Returns the number of
    trainable parameters.

    The blocks are the trunk's longest `nn.ModuleList` (`model.layers` of Llama, `h` of GPT-2), so
    this needs no per-architecture table; a trunk without one raises ValueError.
    """
    if n_trainable is not None:
        trunk = getattr(model, getattr(model, "base_model_prefix", ""), None)
        lists = (
            [m for m in trunk.modules() if isinstance(m, torch.nn.ModuleList)] if trunk is not None else []
        )
        if trunk is None or not lists:
            raise ValueError("reward_trainable_layers: the reward model has no list of transformer blocks")
        blocks = max(lists, key=len)
        in_blocks = {id(p) for p in blocks.parameters()}
        embeddings = {
            id(p) for m in trunk.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()
        }
        for p in trunk.parameters():  # the final norm stays trainable: neither a block nor an embedding
            p.requires_grad_(id(p) not in in_blocks and id(p) not in embeddings)
        kept = list(blocks)[len(blocks) - n_trainable :] if n_trainable else []
        for block in kept:
            block.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def score(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Scalar rewards of right-padded sequences, read at each row's last attended token.

    Args:
        input_ids: (B, T) prompt ++ response, right padded.
        attention_mask: (B, T) 1 on real tokens.

    Returns:
        (B,) float32 rewards (differentiable when the model is in grad mode).
    """
    last = attention_mask.long().sum(dim=-1) - 1  # (B,)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)
    head = getattr(model, "score", None)
    trunk = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if isinstance(head, torch.nn.Module) and isinstance(trunk, torch.nn.Module):
        hidden = trunk(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        picked = hidden[rows, last]  # (B, H)
        return head(picked).squeeze(-1).float()  # (B,)
    # Architectures with another head name: per-token logits are not exposed, use HF's pooling.
    return model(input_ids=input_ids, attention_mask=attention_mask).logits.squeeze(-1).float()


def collate_sequences(sequences: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists into (input_ids, attention_mask), both (B, T) long."""
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


class RewardTokens:
    """Maps policy token ids (prompt ++ response) to reward-model token ids that END IN AN EOS token.

    Every sequence the reward model scores ends in EOS, on both paths, as the reference code scores
    prompt + output + EOS: the score is read at that token (`score`), so a sample cut at max_new_tokens
    and a demonstration (which ends in the template's end-of-turn token) are read at the same kind of
    position. Before, a truncated sample was scored at its last generated token while every
    demonstration was scored at its EOS, so the reward model learned to detect "did it stop" and the
    policy collapsed to short EOS-terminated strings (issue 23). Whether a sample stopped is now RFT's
    explicit `missing_eos_penalty` instead.

    Same vocabulary (the default: the policy's own base): the ids pass through, and `eos_id` is
    appended when the sequence does not already end in one of `eos_ids`. Otherwise: decode with the
    policy's tokenizer, re-encode with the reward model's (no special tokens added), and append its EOS
    if the text does not end with one. Either way the last `max_len` tokens are kept, the EOS included.
    """

    def __init__(self, policy_tokenizer, reward_tokenizer, max_len: int, eos_ids: list[int]) -> None:
        self.policy, self.reward, self.max_len = policy_tokenizer, reward_tokenizer, max_len
        self.identity = policy_tokenizer.get_vocab() == reward_tokenizer.get_vocab()
        self.eos_ids = set(eos_ids)
        tokenizer_eos = policy_tokenizer.eos_token_id
        self.eos_id = tokenizer_eos if tokenizer_eos in self.eos_ids else min(self.eos_ids)

    def __call__(self, ids: list[int]) -> list[int]:
        if self.identity:
            out = list(ids)
            if not out or out[-1] not in self.eos_ids:
                out.append(self.eos_id)
            return out[-self.max_len :]
        text = self.policy.decode(ids, skip_special_tokens=False)
        out = self.reward(text, add_special_tokens=False)["input_ids"]
        eos = self.reward.eos_token_id
        if eos is not None and (not out or out[-1] != eos):
            out.append(eos)
        return out[-self.max_len :]


def save_reward_model(model, tokenizer, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write `model` (+ tokenizer) as a plain HF directory loadable by AutoModelForSequenceClassification."""
    from trainer.checkpointing import _cast_state_dict

    directory = Path(directory)
    _save_hf(model, directory, _cast_state_dict(model.state_dict(), {}, dtype))
    tokenizer.save_pretrained(directory)
    return directory
