"""The text_similarity grader: how close the rendered input is to the reference, in [0, 1].

Each metric is the standard library implementation OpenAI's documentation names or the field uses, on
the same tokens for every word-level metric (lower-cased words and punctuation marks, `tokens`):

    fuzzy_match   rapidfuzz's normalised Indel similarity of the two strings (`fuzz.ratio` / 100)
    bleu          NLTK's sentence BLEU-4 with smoothing method 4 (Chen and Cherry 2014), so a short
                  answer with no 4-gram in common is not scored 0
    gleu          NLTK's sentence GLEU (Google BLEU: min of n-gram precision and recall, n = 1..4)
    meteor        NLTK's METEOR with exact and Porter-stem matching; its WordNet-synonym stage is left
                  out, because the WordNet data is not installable from the package registries (a
                  synonym then counts as a miss: scores are at most what full METEOR gives)
    rouge_1..5    Google's rouge-score F-measure of 1..5-grams (its own tokenizer and no stemming)
    rouge_l       rouge-score's longest-common-subsequence F-measure
    cosine        refused: it needs an embedding model (OpenAI offers it for evals only)

With `pass_threshold`, the grader also says whether the score passes (at or above it).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from graders import templates
from graders.errors import GraderError
from graders.schemas import TextSimilarityGrader

WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def tokens(text: str) -> list[str]:
    return WORD.findall(text.lower())


class _NoWordNet:
    """METEOR's synonym stage with no synonyms (see the module docstring)."""

    def synsets(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []


@cache
def _rouge(metric: str) -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([metric.replace("_", "").replace("rougel", "rougeL")])


def similarity(metric: str, value: str, reference: str) -> float:
    """The `metric` similarity of `value` to `reference`, in [0, 1]."""
    if metric == "fuzzy_match":
        from rapidfuzz import fuzz

        return fuzz.ratio(value, reference) / 100.0
    if metric.startswith("rouge_"):
        name = metric.replace("_", "").replace("rougel", "rougeL")
        return float(_rouge(metric).score(reference, value)[name].fmeasure)
    hyp, ref = tokens(value), tokens(reference)
    if not hyp or not ref:
        return float(hyp == ref)  # two empty texts are the same; one empty is nothing alike
    if metric == "bleu":
        from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

        return float(sentence_bleu([ref], hyp, smoothing_function=SmoothingFunction().method4))
    if metric == "gleu":
        from nltk.translate.gleu_score import sentence_gleu

        return float(sentence_gleu([ref], hyp))
    if metric == "meteor":
        from nltk.translate.meteor_score import meteor_score

        return float(meteor_score([ref], hyp, wordnet=_NoWordNet()))
    if metric == "cosine":
        raise GraderError(
            "evaluation_metric", "cosine needs an embedding model, which this server does not offer"
        )
    raise GraderError("evaluation_metric", f"unknown metric {metric!r}")


def grade(grader: TextSimilarityGrader, context: dict[str, Any]) -> float:
    value = templates.render(grader.input, context, "input")
    reference = templates.render(grader.reference, context, "reference")
    return similarity(grader.evaluation_metric, value, reference)
