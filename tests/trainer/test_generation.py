"""generate_responses on the tiny model: greedy = hand argmax loop, EOS cut, batching, seeds."""

from __future__ import annotations

import pytest
import torch

from trainer.config import GenerationSettings
from trainer.generation import cut_at_eos, generate_responses
from trainer.testing import make_tiny_model, make_tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return make_tiny_tokenizer()


@pytest.fixture
def model(tok):
    return make_tiny_model(len(tok), seed=0)


@pytest.fixture
def prompts(tok):
    texts = ["Hello there!", "What is the capital of France?", "Blue.", "The quick brown fox jumps over"]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def _argmax_loop(model, prompt, n, eos):
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            ids.append(nxt)
            if nxt in eos:
                break
    return ids[len(prompt) :]


def test_greedy_equals_hand_argmax_loop_and_batching_is_invariant(model, tok, prompts):
    model.train()
    one = generate_responses(model, tok, prompts, GenerationSettings(max_new_tokens=6, batch_size=1))
    four = generate_responses(model, tok, prompts, GenerationSettings(max_new_tokens=6, batch_size=4))
    assert model.training  # mode restored
    model.eval()
    expected = [_argmax_loop(model, p, 6, {tok.eos_token_id}) for p in prompts]
    assert one == expected
    assert four == expected


def test_cut_after_first_eos_keeping_it(model, tok, prompts):
    free = generate_responses(model, tok, prompts[:1], GenerationSettings(max_new_tokens=6))[0]
    assert len(free) == 6 and tok.eos_token_id not in free  # never stopped: no EOS appended
    model.generation_config.eos_token_id = free[2]  # pretend the third token is an end of turn
    cut = generate_responses(model, tok, prompts[:1], GenerationSettings(max_new_tokens=6))[0]
    assert cut == free[:3]
    assert cut_at_eos([4, 5, 3, 3, 0], [3]) == [4, 5, 3]
    assert cut_at_eos([4, 5], [3]) == [4, 5]


def test_sampling_seeded_reproducible_prompt_major_and_rng_untouched(model, tok, prompts):
    settings = GenerationSettings(max_new_tokens=5, batch_size=3, temperature=1.0)
    before = torch.get_rng_state()
    a = generate_responses(model, tok, prompts, settings, num_return_sequences=2, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b = generate_responses(model, tok, prompts, settings, num_return_sequences=2, seed=7)
    c = generate_responses(model, tok, prompts, settings, num_return_sequences=2, seed=8)
    assert a == b and a != c
    assert len(a) == 2 * len(prompts)
    # Prompt-major: with greedy decoding both "samples" of prompt i are prompt i's greedy response.
    greedy = GenerationSettings(max_new_tokens=5, batch_size=4)
    single = generate_responses(model, tok, prompts, greedy)
    doubled = generate_responses(model, tok, prompts, greedy, num_return_sequences=2)
    assert doubled == [r for r in single for _ in range(2)]


def test_works_with_peft_model(model, tok, prompts):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules="all-linear"))
    plain = generate_responses(peft_model, tok, prompts, GenerationSettings(max_new_tokens=4, batch_size=2))
    assert len(plain) == len(prompts) and all(len(r) == 4 for r in plain)
