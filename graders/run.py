"""Running a grader on model samples: the reward, the sub-graders' rewards, and OpenAI's error flags.

`grade_batch(grader, samples, items)` scores many samples at once (a python grader's batch is one
sandboxed process; a `multi` grader runs each sub-grader over the whole batch, then its formula per
sample). A sample that a grader cannot score gets reward 0 and the error flag OpenAI's
`graders/run` reports for it (`metadata.errors`): a template naming what the item or sample lacks is
an `invalid_variable_error`, a formula without a value a `formula_parse_error`, a python grader that
raised a `python_grader_runtime_error` with its details, a sandbox that cannot run one a
`python_grader_server_error`. A batch never fails as a whole: the caller decides what share of errors
fails a job (the reinforcement method's `max_grader_error_share`).

`score_model` and `label_model` graders need a judge model: not offered yet (`unsupported`), so the API
refuses them when they are given rather than scoring every sample 0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from graders import sandbox, string_check, text_similarity
from graders.errors import GraderError
from graders.schemas import MultiGrader, PythonGrader, StringCheckGrader, TextSimilarityGrader
from graders.templates import sample_of

ERROR_FLAGS = (
    "formula_parse_error",
    "invalid_variable_error",
    "model_grader_parse_error",
    "model_grader_refusal_error",
    "model_grader_server_error",
    "other_error",
    "python_grader_runtime_error",
    "python_grader_server_error",
    "sample_parse_error",
    "truncated_observation_error",
    "unresponsive_reward_error",
)


@dataclass
class Outcome:
    """One sample's grade, in the terms of OpenAI's graders/run response."""

    reward: float
    sub_rewards: dict[str, float] = field(default_factory=dict)
    errors: dict[str, Any] = field(default_factory=dict)  # the flags that are set, with their details

    @property
    def failed(self) -> bool:
        return bool(self.errors)

    def error_metadata(self) -> dict[str, Any]:
        """OpenAI's `metadata.errors`: every flag, false unless set, and the detail fields."""
        out: dict[str, Any] = {flag: bool(self.errors.get(flag)) for flag in ERROR_FLAGS}
        out["model_grader_server_error_details"] = None
        out["python_grader_runtime_error_details"] = self.errors.get("python_grader_runtime_error_details")
        out["python_grader_server_error_type"] = self.errors.get("python_grader_server_error_type")
        return out


def unsupported(grader: Any) -> str | None:
    """Why this server cannot run `grader` (or one of a multi grader's), or None when it can."""
    if grader.type in ("score_model", "label_model"):
        return f"{grader.type} graders need a judge model, which this server does not offer yet"
    if grader.type == "text_similarity" and grader.evaluation_metric == "cosine":
        return "text_similarity's cosine needs an embedding model, which this server does not offer"
    if grader.type == "multi":
        return next((why for g in grader.graders.values() if (why := unsupported(g))), None)
    return None


def _failed(error: GraderError) -> Outcome:
    flag = "formula_parse_error" if error.param == "calculate_output" else "invalid_variable_error"
    return Outcome(0.0, errors={flag: True, "message": str(error)})


def _simple(grader: StringCheckGrader | TextSimilarityGrader, context: dict[str, Any]) -> Outcome:
    try:
        if isinstance(grader, StringCheckGrader):
            return Outcome(string_check.grade(grader, context))
        return Outcome(text_similarity.grade(grader, context))
    except GraderError as exc:
        return _failed(exc)


def _python(grader: PythonGrader, contexts: list[dict[str, Any]], limits: sandbox.Limits) -> list[Outcome]:
    why = sandbox.available(limits.python)
    if why is not None:
        error = {"python_grader_server_error": True, "python_grader_server_error_type": "sandbox_unavailable"}
        return [Outcome(0.0, errors={**error, "message": why}) for _ in contexts]
    results = sandbox.run(grader.source, [(c["sample"], c["item"]) for c in contexts], limits)
    return [
        Outcome(r)
        if isinstance(r, float)
        else Outcome(
            0.0, errors={"python_grader_runtime_error": True, "python_grader_runtime_error_details": r}
        )
        for r in results
    ]


def _batch(grader: Any, contexts: list[dict[str, Any]], limits: sandbox.Limits) -> list[Outcome]:
    if isinstance(grader, PythonGrader):
        return _python(grader, contexts, limits)
    if isinstance(grader, StringCheckGrader | TextSimilarityGrader):
        return [_simple(grader, c) for c in contexts]
    if isinstance(grader, MultiGrader):
        from graders.formula import parse

        formula = parse(grader.calculate_output, set(grader.graders))  # checked when the grader was given
        parts = {name: _batch(sub, contexts, limits) for name, sub in grader.graders.items()}
        out = []
        for i in range(len(contexts)):
            subs = {name: outcomes[i] for name, outcomes in parts.items()}
            errors = {k: v for o in subs.values() for k, v in o.errors.items()}
            rewards = {name: o.reward for name, o in subs.items()}
            if errors:
                out.append(Outcome(0.0, rewards, errors))
                continue
            try:
                out.append(Outcome(formula.value(rewards), rewards))
            except GraderError as exc:
                out.append(Outcome(0.0, rewards, _failed(exc).errors))
        return out
    raise GraderError("type", unsupported(grader) or f"cannot run a {grader.type} grader")


def grade_batch(
    grader: Any, samples: list[str], items: list[dict[str, Any]], limits: sandbox.Limits | None = None
) -> list[Outcome]:
    """Each model sample (its text) graded with its item."""
    contexts = [{"sample": sample_of(s), "item": i} for s, i in zip(samples, items, strict=True)]
    return _batch(grader, contexts, limits or sandbox.Limits())


def run_one(
    grader: Any, sample: str, item: dict[str, Any], limits: sandbox.Limits | None = None
) -> dict[str, Any]:
    """OpenAI's graders/run response for one sample."""
    start = time.perf_counter()
    [outcome] = grade_batch(grader, [sample], [item], limits)
    scores: dict[str, Any] = (
        dict(outcome.sub_rewards) if outcome.sub_rewards else {grader.name: outcome.reward}
    )
    return {
        "reward": outcome.reward,
        "metadata": {
            "name": grader.name,
            "type": grader.type,
            "errors": outcome.error_metadata(),
            "execution_time": time.perf_counter() - start,
            "scores": scores,
            "token_usage": None,
            "sampled_model_name": None,
        },
        "sub_rewards": dict(outcome.sub_rewards),
        "model_grader_token_usage_per_model": {},
    }
