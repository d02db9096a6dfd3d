"""OpenAI's grader endpoints through the API and through the official SDK's own request code (the openai
client over this app's ASGI transport): run a multi grader with a sandboxed python part, validate, and
the 400s that name the grader."""

from __future__ import annotations

import openai
import pytest
from fastapi.testclient import TestClient

from tests.graders.examples import EXACT, MULTI


def test_run_and_validate(client: TestClient) -> None:
    r = client.post(
        "/fine_tuning/alpha/graders/run",
        json={"grader": MULTI, "model_sample": '{"answer": "7"}', "item": {"answer": "42"}},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["reward"] == 0.5 and body["sub_rewards"] == {"exact": 0.0, "short": 1.0}
    assert body["metadata"]["type"] == "multi" and not any(
        v for k, v in body["metadata"]["errors"].items() if k.endswith("_error")
    )
    r = client.post(
        "/fine_tuning/alpha/graders/run",
        json={"grader": EXACT, "model_sample": "not json", "item": {"answer": "42"}},
    )
    assert r.json()["reward"] == 0.0 and r.json()["metadata"]["errors"]["invalid_variable_error"] is True
    r = client.post("/fine_tuning/alpha/graders/validate", json={"grader": MULTI})
    assert r.status_code == 200 and r.json()["grader"]["calculate_output"] == "(exact + short) / 2"


@pytest.mark.parametrize(
    ("grader", "param", "says"),
    [
        ({**MULTI, "calculate_output": "exact + nope"}, "grader", "'nope', which is not one of the graders"),
        ({**EXACT, "input": "{{ secrets.key }}"}, "grader", "must start with sample. or item."),
        (
            {"type": "score_model", "name": "j", "model": "m", "input": [{"role": "user", "content": "x"}]},
            "grader",
            "judge model",
        ),
        (
            {
                "type": "text_similarity",
                "name": "c",
                "input": "a",
                "reference": "b",
                "evaluation_metric": "cosine",
            },
            "grader",
            "embedding model",
        ),
    ],
)
def test_graders_this_server_cannot_run_are_400s_naming_the_grader(
    client: TestClient, grader: dict, param: str, says: str
) -> None:
    for path, extra in (("run", {"model_sample": "x"}), ("validate", {})):
        r = client.post(f"/fine_tuning/alpha/graders/{path}", json={"grader": grader, **extra})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"].startswith(param) and says in error["message"], error


def test_the_openai_sdk_runs_and_validates_graders(client: TestClient) -> None:
    """The SDK's own request code against this app (ASGI transport): the same calls a user makes."""
    sdk = openai.OpenAI(
        api_key=client.headers["Authorization"].removeprefix("Bearer "),
        base_url="http://testserver/v1",
        http_client=client,  # a TestClient is an httpx.Client over the app
        max_retries=0,
    )
    result = sdk.fine_tuning.alpha.graders.run(
        grader=MULTI, model_sample='{"answer": "42"}', item={"answer": "42"}
    )
    assert result.reward == 1.0 and result.sub_rewards == {"exact": 1.0, "short": 1.0}
    assert result.metadata.errors.python_grader_runtime_error is False
    validated = sdk.fine_tuning.alpha.graders.validate(grader=EXACT)
    assert validated.grader is not None and validated.grader.type == "string_check"
