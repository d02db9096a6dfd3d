"""inference.decoding: the inference server's decoding loop, checked against Hugging Face `generate`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inference.decoding import ChatModel, Sampling, _Decoder, _pick
from trainer.config import GenerationSettings
from trainer.generation import generate_responses
from trainer.testing import make_tiny_tokenizer

MESSAGES = [{"role": "user", "content": "What is two plus two?"}]


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir: Path) -> Path:
    """The tiny model's folder: tests/conftest.py's `tiny_model_dir` is a model root that holds it."""
    return tiny_model_dir / "tiny-llama"


def _reply(model: ChatModel, sampling: Sampling) -> tuple[str, str, int]:
    pieces = list(model.complete(model.prompt_ids(MESSAGES), sampling))
    assert all(p.finish_reason is None for p in pieces[:-1])
    return "".join(p.text for p in pieces), pieces[-1].finish_reason or "", pieces[-1].completion_tokens


def test_greedy_reply_is_hugging_faces_greedy_generate(model_dir: Path) -> None:
    model = ChatModel(model_dir, device="cpu")
    prompt = model.prompt_ids(MESSAGES)
    ref = generate_responses(
        model.model, model.tokenizer, [prompt], GenerationSettings(max_new_tokens=12, temperature=0.0)
    )[0]
    text, finish, n = _reply(model, Sampling(max_tokens=12, temperature=0.0))
    ended = ref[-1] in model.eos_ids
    assert text == model.tokenizer.decode(ref, skip_special_tokens=True)
    assert finish == ("stop" if ended else "length")
    assert n == len(ref)  # every generated token counts, the EOS included


def test_seeded_sampling_repeats_and_differs_across_seeds(model_dir: Path) -> None:
    model = ChatModel(model_dir, device="cpu")
    before = torch.random.get_rng_state()
    a = _reply(model, Sampling(max_tokens=16, temperature=1.0, seed=7))
    assert torch.equal(torch.random.get_rng_state(), before)  # the process RNG is untouched
    assert _reply(model, Sampling(max_tokens=16, temperature=1.0, seed=7)) == a
    others = {_reply(model, Sampling(max_tokens=16, temperature=1.0, seed=s))[0] for s in range(8, 12)}
    assert others - {a[0]}


def test_max_tokens_ends_with_length(model_dir: Path) -> None:
    model = ChatModel(model_dir, device="cpu")
    pieces = list(model.complete(model.prompt_ids(MESSAGES), Sampling(max_tokens=3, temperature=1.0, seed=1)))
    # an untrained model rarely says EOS in 3 tokens; if it did, the count is below 3 and says "stop"
    assert (pieces[-1].finish_reason, pieces[-1].completion_tokens) in (
        ("length", 3),
        ("stop", 0),
        ("stop", 1),
        ("stop", 2),
    )


def test_top_p_keeps_the_smallest_nucleus() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    g = torch.Generator().manual_seed(0)
    picks = {_pick(logits, Sampling(max_tokens=1, temperature=1.0, top_p=0.75), g) for _ in range(300)}
    assert picks == {0, 1}  # 0.5 < 0.75 <= 0.5 + 0.3
    assert {_pick(logits, Sampling(max_tokens=1, temperature=1.0, top_p=0.1), g) for _ in range(50)} == {0}
    assert _pick(logits, Sampling(max_tokens=1, temperature=0.0), g) == 0
    # Found by the schemathesis run: a top_p or temperature under float32's range picked from nothing.
    assert _pick(logits, Sampling(max_tokens=1, temperature=1.0, top_p=2.2e-309), g) == 0
    assert _pick(logits, Sampling(max_tokens=1, temperature=1e-308), g) == 0


def test_stop_strings_are_cut_and_never_half_sent() -> None:
    tok = make_tiny_tokenizer()
    ids = tok.encode("Two plus two is four. Seven.", add_special_tokens=False)
    decoder = _Decoder(tok, ["is four"])
    sent = []
    for t in ids:
        text, stopped = decoder.push(t)
        sent.append(text)
        if stopped:
            break
    assert stopped and "".join(sent) == "Two plus two "
    first = _Decoder(tok, ["four", "two is"])  # the earliest match wins, not the first listed
    out = [first.push(t) for t in ids]
    assert (
        "".join(text for text, _ in out[: next(i for i, (_, hit) in enumerate(out) if hit) + 1])
        == "Two plus "
    )
    plain = _Decoder(tok, [])
    assert "".join(plain.push(t)[0] for t in ids) + plain.flush() == "Two plus two is four. Seven."
