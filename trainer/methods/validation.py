"""The validation file of the reward-learning methods, shared by IRFT and RFT.

A preference file (prompt/chosen/rejected or OpenAI's input/preferred_output/non_preferred_output)
gives the paper's diagnostic, `eval/logp_gap` = mean log pi(chosen) - log pi(rejected), and its
accuracy; a demonstration file gives `eval/loss` (token-mean NLL, as SFT).
"""

from __future__ import annotations

from typing import Any

from trainer.collators import CompletionCollator
from trainer.evaluation import logp_gap
from trainer.methods.sft import _load_dataset, _report_data, evaluate, load_preference_pairs

Validation = tuple[str, list[Any]]  # ("preferences", triples) | ("demonstrations", examples)


def load_validation(path: str | None, tokenizer: Any, hp: Any, sink: Any) -> Validation | None:
    if not path:
        return None
    triples = load_preference_pairs(path, tokenizer, hp.max_seq_len, hp.generation.max_prompt_len)
    if triples is not None:
        sink.log_event(f"Loaded {len(triples)} preference validation pairs", data={"split": "validation"})
        return "preferences", triples
    examples, stats = _load_dataset(path, "validation_file", tokenizer, hp.max_seq_len)
    _report_data(sink, "validation", stats)
    return "demonstrations", examples


def evaluate_validation(
    model: Any, tokenizer: Any, validation: Validation, hp: Any, accelerator: Any
) -> dict[str, float]:
    kind, data = validation
    if kind == "demonstrations":
        collate = CompletionCollator(pad_token_id=tokenizer.pad_token_id)
        return {"eval/loss": evaluate(model, data, collate, accelerator, hp.batch_size)["eval/loss"]}
    return logp_gap(
        accelerator.unwrap_model(model),
        tokenizer,
        [],
        triples=data,
        max_seq_len=hp.max_seq_len,
        max_prompt_len=hp.generation.max_prompt_len,
        batch_size=hp.batch_size,
    )
