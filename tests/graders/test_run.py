"""Running graders (graders/run.py): a multi grader over string_check, text_similarity and a sandboxed python
grader, OpenAI's error flags per sample, and the graders/run response as the openai SDK parses it."""

from __future__ import annotations

from openai.types.fine_tuning.alpha import GraderRunResponse
from pydantic import TypeAdapter

from graders.run import grade_batch, run_one, unsupported
from graders.sandbox import Limits
from graders.schemas import Grader
from tests.graders.examples import EXACT, MULTI, PYTHON, SHORT

LIMITS = Limits(python=PYTHON, cpu_s=5, wall_s=30)
MULTI = {**MULTI, "calculate_output": "0.75 * exact + 0.25 * short"}


def grader(shape: dict):
    return TypeAdapter(Grader).validate_python(shape)


def test_a_multi_grader_combines_its_graders_per_sample() -> None:
    samples = ['{"answer": "42"}', '{"answer": "41"}', '{"answer": "42", "pad": "' + "x" * 60 + '"}']
    outcomes = grade_batch(grader(MULTI), samples, [{"answer": "42"}] * 3, LIMITS)
    assert [o.reward for o in outcomes] == [1.0, 0.25, 0.75]
    assert outcomes[1].sub_rewards == {"exact": 0.0, "short": 1.0} and not outcomes[1].failed


def test_each_failure_is_that_samples_flag_with_reward_zero() -> None:
    missing = grade_batch(grader(EXACT), ['{"answer": "42"}'], [{"solution": "42"}], LIMITS)[0]
    assert missing.reward == 0.0 and missing.error_metadata()["invalid_variable_error"] is True
    raising = {**SHORT, "source": "def grade(sample, item):\n    return 1 / 0\n"}
    [broken] = grade_batch(grader(raising), ["x"], [{}], LIMITS)
    meta = broken.error_metadata()
    assert meta["python_grader_runtime_error"] is True
    assert meta["python_grader_runtime_error_details"].startswith("ZeroDivisionError")
    undefined = {**MULTI, "calculate_output": "exact / short"}
    [nan] = grade_batch(
        grader(undefined), ['{"answer": "42", "pad": "' + "x" * 60 + '"}'], [{"answer": "42"}], LIMITS
    )
    assert nan.reward == 0.0 and nan.error_metadata()["formula_parse_error"] is True
    assert nan.sub_rewards == {"exact": 1.0, "short": 0.0}
    gone = grade_batch(grader(SHORT), ["x"], [{}], Limits(python="/nonexistent/python"))[0]
    assert gone.error_metadata()["python_grader_server_error"] is True


def test_the_run_response_is_openais() -> None:
    response = GraderRunResponse.model_validate(
        run_one(grader(MULTI), '{"answer": "42"}', {"answer": "42"}, LIMITS)
    )
    assert response.reward == 1.0 and response.sub_rewards == {"exact": 1.0, "short": 1.0}
    assert response.metadata.type == "multi" and response.metadata.errors.formula_parse_error is False
    single = GraderRunResponse.model_validate(
        run_one(grader(EXACT), '{"answer": "7"}', {"answer": "42"}, LIMITS)
    )
    assert single.reward == 0.0 and single.metadata.scores == {"exact": 0.0}


def test_judge_model_graders_are_not_offered_yet() -> None:
    judge = {"type": "score_model", "name": "j", "model": "m", "input": [{"role": "user", "content": "x"}]}
    assert "judge model" in unsupported(grader(judge))
    assert "judge model" in unsupported(grader({**MULTI, "graders": {"exact": EXACT, "short": judge}}))
    assert unsupported(grader(MULTI)) is None
