"""Tiny, deterministic models for tests: no downloads, built in about a second.

`make_tiny_model_dir(path)` writes a normal Hugging Face directory (safetensors weights, config,
tokenizer with a ChatML chat template) that `AutoModelForCausalLM.from_pretrained` and
`AutoTokenizer.from_pretrained` load like any hub model. Other test suites (worker, integration)
use it as the "base model" of a job, so its signature is fixed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from trainer.data import CHATML_TEMPLATE

# Ids 0..3 are fixed so tests can refer to them; <|im_end|> doubles as EOS, as in Qwen/SmolLM2,
# so the ChatML template ends assistant turns with EOS.
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|im_start|>", "<|im_end|>"]

# A small corpus so the byte-level BPE learns some whole words; the alphabet covers any text anyway.
_CORPUS = [
    "system user assistant system user assistant",
    "You are a helpful assistant.",
    "What is the capital of France? The capital of France is Paris.",
    "What is two plus two? Two plus two is four.",
    "Hello there! How are you today? I am fine, thank you.",
    "Translate to French: cat. Chat.",
    "The quick brown fox jumps over the lazy dog.",
    "Name a colour. Blue. Name a number. Seven.",
]


def make_tiny_tokenizer():
    """A byte-level BPE tokenizer (exact decode round trip) wrapped as a `PreTrainedTokenizerFast`."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def make_tiny_model(vocab_size: int, seed: int = 0):
    """A 2-layer Llama with hidden size 32 (about 30k parameters), float32, seeded init."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=3,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    # Seed a private generator state so building a model does not disturb the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.float().eval()  # not .to(float32): transformers types its wrapped `to` as unbound


def make_llama_dir(path, *, seed: int = 0, dtype: torch.dtype = torch.float32, **shape) -> tuple[Path, int]:
    """Write a Llama of the given LlamaConfig `shape` (hidden_size, vocab_size, ...) over the test
    tokenizer (whose ids must fit in vocab_size), seeded, in `dtype` (float32 or bfloat16), to `path`; returns (path, parameters).
    For models of a particular size: benchmarks, and tests that need a big one."""
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = make_tiny_tokenizer()
    config = LlamaConfig(
        **shape,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    # not .to(dtype): transformers types its wrapped `to` as unbound (see make_tiny_model)
    model = model.bfloat16() if dtype == torch.bfloat16 else model.float()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, sum(p.numel() for p in model.parameters())


def make_tiny_model_dir(path, seed=0) -> Path:
    """Write a tiny Llama model and its tokenizer to `path` (created if missing) and return it.

    Same seed, same files: the tokenizer is trained deterministically and the weights come from
    `torch.manual_seed(seed)`.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tiny_tokenizer()
    model = make_tiny_model(len(tokenizer), seed=seed)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
