"""The text_similarity grader's metrics (graders/text_similarity.py) on hand-checkable cases."""

from __future__ import annotations

import pytest

from graders.errors import GraderError
from graders.schemas import SIMILARITY_METRICS
from graders.text_similarity import similarity, tokens

METRICS = [m for m in SIMILARITY_METRICS if m != "cosine"]  # cosine is refused (below)


@pytest.mark.parametrize("metric", METRICS)
def test_identical_texts_score_one_and_unrelated_ones_low(metric: str) -> None:
    text = "the quick brown fox jumps over the lazy dog"
    assert similarity(metric, text, text) == pytest.approx(1.0, abs=2e-3)  # METEOR's fragmentation: 0.9990
    # characters are shared by any two English texts: fuzzy matching is never near 0
    assert similarity(metric, "zebra umbrella", text) < (0.4 if metric == "fuzzy_match" else 0.1)


def test_hand_computed_values() -> None:
    # ROUGE-1 F: 3 of 3 hypothesis words in a 4-word reference: P = 1, R = 3/4, F = 6/7
    assert similarity("rouge_1", "the cat sat", "the cat sat down") == pytest.approx(6 / 7)
    # ROUGE-2 F: bigrams (the cat), (cat sat) both in the reference's 3: P = 1, R = 2/3, F = 0.8
    assert similarity("rouge_2", "the cat sat", "the cat sat down") == pytest.approx(0.8)
    # fuzzy: Indel similarity of "kitten" and "sitting": 1 - 5 / 13
    assert similarity("fuzzy_match", "kitten", "sitting") == pytest.approx(1 - 5 / 13)
    # GLEU: 1..4-grams of hyp (3+2+1 = 6) and ref (4+3+2+1 = 10), 6 shared: min(6/6, 6/10)
    assert similarity("gleu", "the cat sat", "the cat sat down") == pytest.approx(0.6)


def test_word_metrics_ignore_case_and_split_punctuation() -> None:
    assert tokens("Answer: 42.") == ["answer", ":", "42", "."]
    assert similarity("bleu", "Answer: 42.", "answer : 42 .") == pytest.approx(1.0)


def test_stems_match_in_meteor_but_synonyms_do_not() -> None:
    stem = similarity("meteor", "the cats sat", "the cat sat")
    synonym = similarity("meteor", "the feline sat", "the cat sat")
    assert stem > synonym > 0


def test_cosine_is_refused_with_the_reason() -> None:
    with pytest.raises(GraderError, match="evaluation_metric: cosine needs an embedding model"):
        similarity("cosine", "a", "b")
