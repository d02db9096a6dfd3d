"""Tokenisation and label masking on the tiny ChatML tokenizer, checked by decoding."""

from __future__ import annotations

import pytest

from trainer.data import (
    CHATML_TEMPLATE,
    IGNORE_INDEX,
    detect_format,
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
        "chosen": [{"role": "assistant", "content": "Blue."}],  # a list, as the prompt is (the rules)
        "rejected": [{"role": "assistant", "content": "Seven."}],
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


@pytest.mark.parametrize(
    "row, reason",
    [
        (  # used to be dropped with no trained token
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hi", "weight": 0},
                ]
            },
            "messages has no assistant message to train on: every example needs at least one assistant "
            "message without weight 0",
        ),
        (  # used to be trained: the trailing user turn rendered and not trained
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hi"},
                    {"role": "user", "content": "?"},
                ]
            },
            "messages[2].role must be 'assistant': the last message must be an assistant message, got 'user'",
        ),
        (  # used to be trained: both outputs as the response
            {
                "input": {"messages": [{"role": "user", "content": "Hi"}]},
                "preferred_output": [
                    {"role": "assistant", "content": "A"},
                    {"role": "assistant", "content": "B"},
                ],
                "non_preferred_output": [{"role": "assistant", "content": "C"}],
            },
            "preferred_output must be a list of exactly one assistant message, got 2 messages",
        ),
    ],
)
def test_rows_upload_refuses_are_refused_with_the_validators_reason(
    tmp_path, tokenizer, write_jsonl, row, reason
):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a", "completion": "b"}, row])
    with pytest.raises(ValueError) as info:
        load_sft_dataset(path, tokenizer, 512)
    assert str(info.value) == f"{path}: line 2: {reason}"


@pytest.mark.parametrize(
    "line, message",
    [
        (
            '{"messages": [{"role": "robot", "content": "x"}]}',
            r"line 3: messages\[0\]\.role must be one of system, user, assistant, tool, function, got 'robot'$",
        ),
        (
            '{"messages": [{"role": "assistant", "content": "x", "weight": 2}]}',
            r"line 3: messages\[0\]\.weight must be the integer 0 or 1, got 2$",
        ),
        ('{"text": "x"}', "line 3: unrecognised row: the example matches no accepted format"),
        (
            '{"messages": [{"role": "user"}]}',
            r"line 3: messages\[0\] is missing the required key 'content'$",
        ),
    ],
)
def test_bad_rows_name_the_line(tmp_path, tokenizer, line, message):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n\n' + line + "\n")  # blank line 2 is skipped
    with pytest.raises(ValueError, match=message):
        load_sft_dataset(path, tokenizer, 512)
    with pytest.raises(ValueError, match=message):
        read_jsonl(path)  # what every reader of a file (SFT, IRFT, RFT, the evaluation) goes through


def test_read_jsonl_reports_line_numbers(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n\n{not json}\n')
    with pytest.raises(ValueError, match="line 3: the line is not valid JSON: "):
        read_jsonl(path)


@pytest.mark.parametrize(
    "message, what",
    [
        (
            {
                "role": "assistant",
                "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            "an assistant message with a call",
        ),
        (
            {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
            "an assistant message with a call",
        ),
    ],
)
def test_tool_calls_pass_the_rules_but_are_not_trained_yet(tokenizer, message, what):
    row = {"messages": [{"role": "user", "content": "Hi"}, message]}
    assert detect_format(row) == "chat"  # upload accepts it
    with pytest.raises(ValueError, match=rf"^messages\[1\] is {what}: the trainer cannot train tool"):
        row_to_example(tokenizer, row)


def test_content_parts_and_ignored_message_names(tokenizer):
    parts = [{"type": "text", "text": "Paris"}, {"type": "text", "text": "."}]
    row = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]},
            {"role": "assistant", "content": parts, "name": "bot"},
        ]
    }
    assert trained_spans(tokenizer, row_to_example(tokenizer, row)) == ["Paris.<|im_end|>"]


def test_mixed_file_loads_every_format(tmp_path, tokenizer, rows, write_jsonl):
    examples, stats = load_sft_dataset(write_jsonl(tmp_path / "d.jsonl", rows), tokenizer, 512)
    assert stats.n_examples == len(rows) and stats.formats == {"chat": 4, "prompt_completion": 2}
    assert [len(e.input_ids) == len(e.labels) for e in examples] == [True] * len(rows)
