"""Graders in OpenAI's shapes (string_check, text_similarity, score_model, label_model, python, multi):
one library that the `reinforcement` method trains against, that graded evaluation scores checkpoints
with, and that `POST /v1/fine_tuning/alpha/graders/run` runs for a user.

Pure Python, no torch and nothing else of Juice's: the trainer, the worker and the API all import it
(tests/test_import_rules.py). Built so far:

    schemas.py    the six grader shapes as OpenAI's API takes them, every rule checked when given
    string_check.py  eq / ne / like / ilike of two rendered templates
    text_similarity.py  fuzzy_match, bleu, gleu, meteor, rouge_1..5, rouge_l (cosine refused)
    sandbox.py    where `python` graders run: a process per batch, no network namespace, user nobody,
                  CPU/memory/file/process limits, empty environment, on an interpreter of its own
    formula.py    calculate_output of a `multi` grader: parsed into an AST over the allowed operators and
                  functions, never eval'd
    templates.py  {{sample.output_text}}, {{sample.output_json.x}}, {{item.field}} rendered as OpenAI does
    errors.py     GraderError: what a grader's user is told, with the field it concerns
"""
