"""Shared fixtures: a tiny Llama + tokenizer built locally, and JSONL writers. No downloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.testing import make_tiny_model_dir, make_tiny_tokenizer


def pytest_configure(config):
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars on every from_pretrained


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Read-only tiny base model shared by the session; copy it before changing files."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture
def tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture
def write_jsonl():
    """write_jsonl(path, rows) -> path"""

    def write(path: Path, rows: list[dict]) -> Path:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    return write


@pytest.fixture
def rows() -> list[dict]:
    """Six short examples in the two training formats, all in the tiny tokenizer's corpus."""
    return [dict(r) for r in ROWS]


ROWS = [
    {
        "messages": [
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "The capital of France is Paris."},
        ]
    },
    {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is two plus two?"},
            {"role": "assistant", "content": "Two plus two is four."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "Hello there!"},
            {"role": "assistant", "content": "How are you today?"},
        ]
    },
    {"prompt": "Name a colour.", "completion": "Blue."},
    {
        "messages": [
            {"role": "user", "content": "Translate to French: cat."},
            {"role": "assistant", "content": "Chat."},
        ]
    },
    {"prompt": "Name a number.", "completion": "Seven."},
]
