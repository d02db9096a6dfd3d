"""Tokenisation and label masking on the tiny ChatML tokenizer, checked by decoding."""

from __future__ import annotations

import pytest

from trainer.data import (
    CHATML_TEMPLATE,
    IGNORE_INDEX,
    load_sft_dataset,
    read_jsonl,
    row_to_example,
    tokenize_prompt_completion,
)


def trained_spans(tokenizer, example) -> list[str]:
    """Decode each maximal run of trained tokens."""
    runs, current = [], []
    for token, label in zip(example.input_ids, example.labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token  # labels are the input ids themselves, unshifted
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


CONVERSATION = {
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "What is two plus two?"},
        {"role": "assistant", "content": "Four.", "weight": 0},
        {"role": "user", "content": "Hello there!"},
        {"role": "assistant", "content": "How are you today?", "weight": 1},
    ]
}


def test_multi_turn_labels_only_on_trained_assistant_messages(tokenizer):
    example = row_to_example(tokenizer, CONVERSATION)
    # The ids are the full conversation exactly as the template renders and the tokenizer encodes it.
    text = tokenizer.apply_chat_template(
        [{k: m[k] for k in ("role", "content")} for m in CONVERSATION["messages"]], tokenize=False
    )
    assert example.input_ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    # Trained: each weight-1 assistant message and the <|im_end|> (EOS) that closes it; nothing else.
    assert trained_spans(tokenizer, example) == ["Paris.<|im_end|>", "How are you today?<|im_end|>"]
    # Everything else (system, user, template markers, role names, the weight-0 answer, newlines) is masked.
    masked = tokenizer.decode(
        [t for t, label in zip(example.input_ids, example.labels, strict=True) if label == IGNORE_INDEX]
    )
    assert masked == text.replace("Paris.<|im_end|>", "").replace("How are you today?<|im_end|>", "")
    assert "Four." in masked and "You are a helpful assistant." in masked


def test_prompt_completion_through_the_template(tokenizer):
    example = tokenize_prompt_completion(tokenizer, "Name a colour.", "Blue.")
    assert tokenizer.decode(example.input_ids) == (
        "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\nBlue.<|im_end|>\n"
    )
    assert trained_spans(tokenizer, example) == ["Blue.<|im_end|>"]


def test_prompt_completion_without_a_template_is_plain_text(tokenizer):
    tokenizer.chat_template = None
    example = tokenize_prompt_completion(tokenizer, "Name a colour.", " Blue.")
    assert example.input_ids[0] == tokenizer.bos_token_id
    assert example.input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(example.input_ids) == "<|bos|>Name a colour. Blue.<|im_end|>"
    assert trained_spans(tokenizer, example) == [" Blue.<|im_end|>"]
    n_prompt = 1 + len(tokenizer("Name a colour.", add_special_tokens=False)["input_ids"])
    assert example.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt


@pytest.mark.parametrize(
    "row",
    [
        {"prompt": "What is two plus two?", "chosen": "Four.", "rejected": "Five."},
        {
            "prompt": [{"role": "user", "content": "What is two plus two?"}],
            "chosen": [{"role": "assistant", "content": "Four."}],
            "rejected": [{"role": "assistant", "content": "Five."}],
        },
        {
            "input": {"messages": [{"role": "user", "content": "What is two plus two?"}]},
            "preferred_output": [{"role": "assistant", "content": "Four."}],
            "non_preferred_output": [{"role": "assistant", "content": "Five."}],
        },
    ],
)
def test_preference_rows_train_on_the_preferred_side(tokenizer, row):
    example = row_to_example(tokenizer, row)
    assert trained_spans(tokenizer, example) == ["Four.<|im_end|>"]
    assert "Five" not in tokenizer.decode(example.input_ids)


def test_assistant_turns_in_a_preference_prompt_are_not_trained(tokenizer):
    row = {
        "prompt": [
            {"role": "user", "content": "Hello there!"},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": "Name a colour."},
        ],
        "chosen": "Blue.",
        "rejected": "Seven.",
    }
    assert trained_spans(tokenizer, row_to_example(tokenizer, row)) == ["Blue.<|im_end|>"]


def test_default_chatml_template_is_set_and_reported(tmp_path, tokenizer, write_jsonl):
    tokenizer.chat_template = None
    path = write_jsonl(tmp_path / "d.jsonl", [CONVERSATION])
    examples, stats = load_sft_dataset(path, tokenizer, max_seq_len=512)
    assert stats.used_default_chat_template and tokenizer.chat_template == CHATML_TEMPLATE
    assert trained_spans(tokenizer, examples[0]) == ["Paris.<|im_end|>", "How are you today?<|im_end|>"]


def test_default_template_appends_eos_when_eos_is_not_im_end(tokenizer):
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.eos_token = "<|bos|>"  # any EOS other than <|im_end|>
    example = tokenize_prompt_completion(tokenizer, "Hi", "Blue.")
    assert trained_spans(tokenizer, example) == ["Blue.<|im_end|><|bos|>"]


def test_template_that_rewrites_history_is_rejected(tokenizer):
    # Prints the number of messages first, so a shorter conversation is not a prefix of a longer one.
    tokenizer.chat_template = "{{ messages | length }}" + CHATML_TEMPLATE
    with pytest.raises(ValueError, match="prefix"):
        row_to_example(tokenizer, CONVERSATION)


def test_truncation_keeps_the_start_and_drops_untrainable(tmp_path, tokenizer, write_jsonl):
    long_prompt = {"prompt": "The quick brown fox jumps over the lazy dog. " * 6, "completion": "Blue."}
    short = {"prompt": "Name a colour.", "completion": "Blue."}
    path = write_jsonl(tmp_path / "d.jsonl", [short, long_prompt])
    full = tokenize_prompt_completion(tokenizer, short["prompt"], short["completion"])
    n = len(full.input_ids)
    # Cut two tokens off the short example: it loses its last trained tokens but keeps its start.
    examples, stats = load_sft_dataset(path, tokenizer, max_seq_len=n - 2)
    assert stats.n_rows == 2 and stats.n_truncated == 2 and stats.n_dropped == 1 and stats.n_examples == 1
    assert examples[0].input_ids == full.input_ids[: n - 2]
    assert examples[0].labels == full.labels[: n - 2]
    assert stats.n_trained_tokens == examples[0].num_trained_tokens > 0


def test_weight_zero_only_conversation_is_dropped(tmp_path, tokenizer, write_jsonl):
    row = {
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hi", "weight": 0}]
    }
    examples, stats = load_sft_dataset(write_jsonl(tmp_path / "d.jsonl", [row]), tokenizer, 512)
    assert examples == [] and stats.n_dropped == 1


@pytest.mark.parametrize(
    "line, message",
    [
        (
            '{"messages": [{"role": "robot", "content": "x"}]}',
            r"line 3: messages\[0\]\.role: expected system, user",
        ),
        (
            '{"messages": [{"role": "assistant", "content": "x", "weight": 2}]}',
            r"line 3: .*weight: expected 0 or 1",
        ),
        ('{"text": "x"}', "line 3: unrecognised row"),
        (
            '{"messages": [{"role": "user"}]}',
            r"line 3: messages\[0\]: expected an object with 'role' and 'content'",
        ),
    ],
)
def test_bad_rows_name_the_line(tmp_path, tokenizer, line, message):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n\n' + line + "\n")  # blank line 2 is skipped
    with pytest.raises(ValueError, match=message):
        load_sft_dataset(path, tokenizer, 512)


def test_read_jsonl_reports_line_numbers(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n{not json}\n')
    with pytest.raises(ValueError, match="line 3: invalid JSON"):
        read_jsonl(path)


def test_mixed_file_loads_every_format(tmp_path, tokenizer, rows, write_jsonl):
    examples, stats = load_sft_dataset(write_jsonl(tmp_path / "d.jsonl", rows), tokenizer, 512)
    assert stats.n_examples == len(rows) and stats.formats == {"chat": 4, "prompt_completion": 2}
    assert [len(e.input_ids) == len(e.labels) for e in examples] == [True] * len(rows)
