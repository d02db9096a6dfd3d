"""Every number a request can carry is finite and bounded (issue 10, finding 7).

The walk below finds every numeric field by introspecting the request models themselves (the job body,
every method's hyperparameters, nested blocks such as lora and generation, the legacy block, the link
body) and every numeric query parameter of every route, so a field added later is covered without
touching this file. Each is sent NaN, ±Infinity (as the JSON literals Python's json module writes and
reads) and a huge value over real HTTP, and must get a 400 in OpenAI's error envelope whose `param`
names that very field, with no job created.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import annotated_types
import httpx
import pytest
from pydantic import BaseModel

from api.schemas.checkpoint_links import CheckpointLinkCreate
from api.schemas.jobs import JobCreate
from tests.api.conftest import make_key
from tests.api.live import live_client
from tests.helpers import FUZZY_GRADER, chat_jsonl, preference_jsonl, prompts_jsonl, sft_job_body, upload
from trainer.spec.hyperparameters import _members  # the one definition of "a union's alternatives"

# Raw JSON text: Python's json.loads (and so FastAPI) reads NaN and Infinity although JSON has neither.
BAD_NUMBERS = {
    "inf": "Infinity",
    "-inf": "-Infinity",
    "nan": "NaN",
    "1e308": "1e308",
    "10**30": str(10**30),
}
PLACEHOLDER = "@@BAD_NUMBER@@"


def numeric_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The dotted path of every int or float field of `model`, recursing into nested models."""
    for name, field in model.model_fields.items():
        members = _members(field.annotation)
        if int in members or float in members:
            yield (*prefix, name)
        for member in members:
            if isinstance(member, type) and issubclass(member, BaseModel):
                yield from numeric_paths(member, (*prefix, name))


JOB_PATHS = sorted(numeric_paths(JobCreate))


def test_the_walk_reaches_every_kind_of_field() -> None:
    """The walk is what the tests below trust: it must see top-level, method, nested and legacy fields."""
    dotted = {".".join(p) for p in JOB_PATHS}
    expected = {
        "seed",
        "hyperparameters.learning_rate_multiplier",
        "method.sft.hyperparameters.max_grad_norm",
        "method.supervised.hyperparameters.warmup_steps",
        "method.sft.hyperparameters.lora.r",
        "method.irft.hyperparameters.generation.temperature",
        "method.rft.hyperparameters.generation.max_new_tokens",
        "method.rft.hyperparameters.reward_learning_rate",
        "method.dpo.hyperparameters.beta",
        "method.dpo.hyperparameters.checkpoint_interval",
    }
    assert expected <= dotted, expected - dotted
    assert len(JOB_PATHS) > 80


def _nest(path: tuple[str, ...], value: object) -> dict[str, Any]:
    out: dict[str, Any] = {path[-1]: value}
    for part in reversed(path[:-1]):
        out = {part: out}
    return out


# A valid grader for a grader's numeric field to sit in: the shape that has it
GRADER_OF = {
    "pass_threshold": FUZZY_GRADER,
    "sampling_params": {
        "type": "score_model",
        "name": "j",
        "model": "m",
        "input": [{"role": "user", "content": "x"}],
    },
}


def job_body(path: tuple[str, ...], files: dict[str, str]) -> dict[str, Any]:
    """A valid job request but for the field at `path`, which holds PLACEHOLDER."""
    body = sft_job_body("tiny-llama", files["chat"])
    del body["method"]
    if path[0] == "method":  # method.<type>.hyperparameters... or .grader...: that type's block alone
        block = _nest(path[2:], PLACEHOLDER)
        if path[2] == "grader":  # inside a grader of the shape that has the field
            block["grader"] = {**GRADER_OF[path[3]], **block["grader"]}
        elif path[1] == "reinforcement":  # its block needs its grader
            block["grader"] = FUZZY_GRADER
        body["method"] = {"type": path[1], path[1]: block}
        if path[1] == "dpo":
            body["training_file"] = files["preference"]
        if path[1] == "reinforcement":
            body["training_file"] = files["prompts"]
    else:
        body.update(_nest(path, PLACEHOLDER))
    return body


def post_raw(client: httpx.Client, url: str, body: dict[str, Any], literal: str) -> httpx.Response:
    text = json.dumps(body).replace(json.dumps(PLACEHOLDER), literal)
    return client.post(url, content=text, headers={"Content-Type": "application/json"})


def refusal_problem(r: httpx.Response, param: str) -> str | None:
    """None if `r` is a 400 in the error envelope naming `param`, else what is wrong with it."""
    if r.status_code != 400:
        return f"HTTP {r.status_code}: {r.text[:200]}"
    body = r.json()
    if set(body) != {"error"} or set(body["error"]) != {"message", "type", "param", "code"}:
        return f"not OpenAI's error envelope: {body}"
    if body["error"]["param"] != param:
        return f"param {body['error']['param']!r}: {body['error']['message']}"
    return None


def job_rows() -> int:
    from sqlalchemy import func, select

    from api.db.session import session_scope
    from api.db.tables import Job

    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(Job)) or 0


@pytest.fixture()
def live(app_env: Path) -> Iterator[httpx.Client]:
    with live_client(make_key("acme")) as client:
        yield client


@pytest.mark.parametrize("bad", BAD_NUMBERS)
def test_every_numeric_job_field_refuses_non_finite_and_huge_numbers(live: httpx.Client, bad: str) -> None:
    files = {
        "chat": upload(live, chat_jsonl(4))["id"],
        "preference": upload(live, preference_jsonl(4))["id"],
        "prompts": upload(live, prompts_jsonl(4))["id"],
    }
    problems = {}
    for path in JOB_PATHS:
        param = ".".join(path)
        r = post_raw(live, "/fine_tuning/jobs", job_body(path, files), BAD_NUMBERS[bad])
        if problem := refusal_problem(r, param):
            problems[param] = problem
    assert not problems, json.dumps(problems, indent=1)
    assert job_rows() == 0
    assert live.get("/fine_tuning/jobs").json()["data"] == []


def test_the_same_bodies_with_good_numbers_are_accepted(live: httpx.Client) -> None:
    """The refusals above are about the numbers: the same bodies with a value in range create jobs."""
    files = {"chat": upload(live, chat_jsonl(4))["id"], "preference": upload(live, preference_jsonl(4))["id"]}
    for path in [("seed",), ("method", "sft", "hyperparameters", "max_grad_norm")]:
        r = post_raw(live, "/fine_tuning/jobs", job_body(path, files), "1")
        assert r.status_code == 200, r.text


@pytest.mark.parametrize("bad", BAD_NUMBERS)
def test_the_link_body_refuses_non_finite_and_huge_numbers(live: httpx.Client, bad: str) -> None:
    for path in numeric_paths(CheckpointLinkCreate):
        r = post_raw(
            live,
            "/fine_tuning/jobs/ftjob-x/checkpoints/ftckpt-y/link",
            _nest(path, PLACEHOLDER),
            BAD_NUMBERS[bad],
        )
        assert refusal_problem(r, ".".join(path)) is None, r.text


def _numeric_query_params() -> list[tuple[str, str, dict[str, Any]]]:
    """(path, name, schema) of every numeric query parameter, from the app's own OpenAPI description."""
    from api.main import create_app

    found = []
    for path, operations in create_app().openapi()["paths"].items():
        for param in operations.get("get", {}).get("parameters", []):
            schema = param["schema"]
            options = schema.get("anyOf", [schema])
            numeric = [o for o in options if o.get("type") in ("integer", "number")]
            if param["in"] == "query" and numeric:
                found.append((path, param["name"], numeric[0]))
    return found


QUERY_PARAMS = _numeric_query_params()


# The live metrics stream's after_seq still lacks its upper bound (routes/metrics.py's MAX_SEQ): that route
# is being rewritten in another change, which owns the fix. A stream given a cursor that fails to bind
# does not answer with an error, so the HTTP walk below leaves it out too.
UNBOUNDED_FOR_NOW: set[tuple[str, str]] = set()


def test_the_query_walk_finds_the_list_and_metric_cursors_and_each_has_bounds() -> None:
    assert {
        ("/v1/files", "limit"),
        ("/v1/fine_tuning/jobs/{job_id}/events", "limit"),
        ("/v1/fine_tuning/jobs/{job_id}/metrics", "after_seq"),
        ("/v1/fine_tuning/jobs/{job_id}/metrics/series", "max_points"),
    } <= {(path, name) for path, name, _ in QUERY_PARAMS}
    unbounded = {
        (path, name)
        for path, name, schema in QUERY_PARAMS
        if not {"minimum", "exclusiveMinimum"} & set(schema)
        or not {"maximum", "exclusiveMaximum"} & set(schema)
    }
    assert unbounded == UNBOUNDED_FOR_NOW


@pytest.mark.parametrize("bad", ["inf", "-inf", "nan", "1e308", str(10**30)])
def test_every_numeric_query_parameter_refuses_non_finite_and_huge_numbers(
    live: httpx.Client, bad: str
) -> None:
    job = live.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", upload(live, chat_jsonl(4))["id"]))
    real = {"job_id": job.json()["id"], "checkpoint_id": "ftckpt-none"}  # the caller's own job: past its 404
    problems = {}
    for path, name, _ in QUERY_PARAMS:
        if (path, name) in UNBOUNDED_FOR_NOW:
            continue
        url = re.sub(r"\{(\w+)\}", lambda m: real[m.group(1)], path.removeprefix("/v1"))
        if problem := refusal_problem(live.get(url, params={name: bad}), name):
            problems[f"{path}?{name}"] = problem
    assert not problems, json.dumps(problems, indent=1)


def test_every_spec_number_has_an_upper_and_a_lower_bound() -> None:
    """The trainer's classes, where the API's request models come from, and its run config: no field
    without both bounds, so no future knob can take 1e308 (or 10**30) as these did."""
    from trainer.config import TrainConfig
    from trainer.spec import hyperparameters as spec

    def bounds(field: Any) -> set[str]:
        kinds = {
            annotated_types.Ge: "low",
            annotated_types.Gt: "low",
            annotated_types.Le: "high",
            annotated_types.Lt: "high",
        }
        # on the field, or inside the Annotated member of a union (max_new_tokens: a bounded int or "auto")
        items = list(field.metadata)
        for member in typing.get_args(field.annotation):
            if typing.get_origin(member) is Annotated:
                items += [
                    m for info in typing.get_args(member)[1:] for m in getattr(info, "metadata", [info])
                ]
        return {kind for item in items for cls, kind in kinds.items() if isinstance(item, cls)}

    missing = []
    classes = [
        spec.LoraSettings,
        spec.GenerationSettings,
        spec.NegativeGenerationSettings,
        spec.SampledGenerationSettings,
    ]
    for cls in [TrainConfig, *spec.HYPERPARAMETERS.values(), *classes]:
        for name, field in cls.model_fields.items():
            if {int, float} & set(_members(field.annotation)) and bounds(field) != {"low", "high"}:
                missing.append(f"{cls.__name__}.{name}")
    assert not missing
    assert TrainConfig.model_config.get("allow_inf_nan") is False
