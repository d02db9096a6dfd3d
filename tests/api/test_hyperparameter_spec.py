"""One definition of each method's hyperparameters: the API's request models are derived from the
trainer's classes (trainer/spec/hyperparameters.py), differ only by OpenAI's "auto" and the multiplier,
and a job stores exactly what the trainer runs."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from api.db.tables import Job
from api.schemas.hyperparameters import (
    AUTO_FIELDS,
    EXTRA_AUTO_FIELDS,
    HYPERPARAMETERS,
    TRAINER_HYPERPARAMETERS,
    auto_fields,
    learning_rate_multiplier,
)
from api.services.hyperparameters import resolve
from api.services.methods import describe_model
from trainer.spec import plan
from trainer.spec.hyperparameters import GenerationSettings, LoraSettings, SpecModel

REQUEST_ONLY = {"learning_rate_multiplier"}
METHODS = list(TRAINER_HYPERPARAMETERS)  # every method the trainer has, a new one included by itself


def test_the_walk_covers_every_method() -> None:
    assert METHODS == ["sft", "irft", "rft", "dpo", "iql", "reinforcement"]


def nested_model(info: FieldInfo) -> type[BaseModel] | None:
    ann = info.annotation
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def bounds(info: FieldInfo) -> list[str]:
    """Every constraint of a field: on the field, and inside Annotated members of a union."""
    found = [repr(m) for m in info.metadata]
    for member in typing.get_args(info.annotation):
        if typing.get_origin(member) is typing.Annotated:
            found += [repr(m) for m in typing.get_args(member)[1:]]
    return sorted(found)


def walk(
    api: type[BaseModel],
    trainer: type[BaseModel],
    api_default: Any,
    trainer_default: Any,
    autos: tuple[str, ...],
    prefix: str = "",
) -> list[str]:
    """Compare two models field by field, recursing into nested blocks; returns the leaf names seen.
    `autos`: the top-level fields that also accept "auto" (and default to it)."""
    expected_names = set(trainer.model_fields) | (REQUEST_ONLY if not prefix else set())
    assert set(api.model_fields) == expected_names, prefix
    seen = []
    for name, t in trainer.model_fields.items():
        a = api.model_fields[name]
        path = prefix + name
        assert a.description == t.description and t.description, path
        assert bounds(a) == bounds(t), path
        if nested_model(t) is not None:
            assert nested_model(a) is nested_model(t), path  # the very same block class
            seen += walk(
                nested_model(a),
                nested_model(t),
                getattr(api_default, name),
                getattr(trainer_default, name),
                (),
                f"{path}.",
            )
            continue
        if name in autos:
            auto, typed = typing.get_args(a.annotation)
            assert auto == Literal["auto"] and typing.get_args(typed)[0] is t.annotation, path
            assert getattr(api_default, name) == "auto", path
        else:
            assert a.annotation == t.annotation, path
            assert getattr(api_default, name) == getattr(trainer_default, name), path
        seen.append(path)
    return seen


@pytest.mark.parametrize("method", METHODS)
def test_request_model_and_trainer_class_agree_field_by_field(method: str) -> None:
    api, trainer = HYPERPARAMETERS[method], TRAINER_HYPERPARAMETERS[method]
    assert issubclass(api, trainer)  # derived, not restated
    seen = walk(api, trainer, api(), trainer(), auto_fields(method))
    assert "lora.target_modules" in seen
    assert ("generation.temperature" in seen) == (method in ("irft", "rft", "reinforcement"))


@pytest.mark.parametrize("method", METHODS)
def test_described_the_same_but_for_auto(method: str) -> None:
    """What /v1/fine_tuning/methods says of a request field is what it says of the trainer's."""
    api, trainer = HYPERPARAMETERS[method], TRAINER_HYPERPARAMETERS[method]
    asked = {s.name: s for s in describe_model(api, api())}
    trained = {s.name: s for s in describe_model(trainer, trainer())}
    assert set(asked) == set(trained) | REQUEST_ONLY
    for name, t in trained.items():
        a = asked[name]
        if name in auto_fields(method):
            assert (a.auto, a.default, t.auto) == (True, "auto", False), name
            a = a.model_copy(update={"auto": False, "default": t.default})
        assert a == t, name


def test_one_method_table() -> None:
    from api.method_names import METHODS, canonical_method, names_of

    assert METHODS == tuple(TRAINER_HYPERPARAMETERS) == tuple(HYPERPARAMETERS)
    assert [canonical_method(t) for t in ("supervised", "sft", "irft", "rft", "dpo", "iql")] == [
        "sft",
        "sft",
        "irft",
        "rft",
        "dpo",
        "iql",
    ]
    assert names_of("supervised") == names_of("sft") == ("sft", "supervised") and names_of("rft") == ("rft",)


def test_every_class_follows_the_shared_rules() -> None:
    for cls in [*TRAINER_HYPERPARAMETERS.values(), LoraSettings, GenerationSettings]:
        assert issubclass(cls, SpecModel) and cls.model_config["extra"] == "forbid"
    assert TRAINER_HYPERPARAMETERS["rft"]().generation.temperature == 1.0


@pytest.mark.parametrize("method", METHODS)
def test_resolve_returns_exactly_the_trainers_fields(method: str) -> None:
    hp = HYPERPARAMETERS[method](learning_rate_multiplier=3)
    stored = resolve(hp, 40)
    trainer = TRAINER_HYPERPARAMETERS[method]
    assert set(stored) == set(trainer.model_fields)
    assert trainer.model_validate(stored).model_dump() == stored
    assert stored["learning_rate"] == pytest.approx(3 * 2e-5) and learning_rate_multiplier(stored) == 3.0
    # auto: one pass for the methods that sample at every step; else OpenAI's rule, 40 * 3 >= 100
    epochs = 1 if method in ("rft", "reinforcement") else 3
    assert (stored["n_epochs"], stored["batch_size"]) == (epochs, 1)  # batch: ceil(0.002 * 40)
    for name in EXTRA_AUTO_FIELDS.get(method, ()):  # DPO's beta: "auto" is the trainer's default
        assert stored[name] == trainer.model_fields[name].default, name


def test_extra_auto_fields_are_openais() -> None:
    """OpenAI's DPO takes beta: "auto" | number, its reinforcement compute_multiplier, eval_interval and
    eval_samples; nothing else gains an "auto" beyond the three."""
    assert EXTRA_AUTO_FIELDS == {
        "dpo": ("beta",),
        "reinforcement": ("compute_multiplier", "eval_interval", "eval_samples"),
    }
    assert auto_fields("dpo") == (*AUTO_FIELDS, "beta") and auto_fields("irft") == AUTO_FIELDS
    assert HYPERPARAMETERS["dpo"]().beta == "auto"  # the request model's default
    assert HYPERPARAMETERS["dpo"](beta=0.3).beta == 0.3
    with pytest.raises(ValueError, match="beta"):
        HYPERPARAMETERS["irft"](beta="auto")  # IRFT's beta is Juice's own: no "auto"


def test_resolve_names_a_field_the_trainer_refuses() -> None:
    with pytest.raises(ValueError, match=r"^learning_rate: expected a number in \(0\.0, 1\.0\]") as err:
        resolve(HYPERPARAMETERS["sft"](learning_rate=1.0).model_copy(update={"learning_rate": 2.0}), 10)
    assert err.value.field == "learning_rate"  # the API's param: method.<type>.hyperparameters.learning_rate
    assert err.value.message("method.sft.hyperparameters").startswith(
        "method.sft.hyperparameters.learning_rate: "
    )


def test_multiplier_of_a_stored_job() -> None:
    assert learning_rate_multiplier({"learning_rate": 2e-5 * 50}) == 50.0
    assert learning_rate_multiplier({"learning_rate": 4e-4, "lora": {"enabled": True}}) == 2.0
    assert learning_rate_multiplier({}) is None


def post_job(client: TestClient, train_file: dict, method: str, hp: dict[str, Any]) -> Any:
    return client.post(
        "/fine_tuning/jobs",
        json={
            "model": "tiny-llama",
            "training_file": train_file["id"],
            "method": {"type": method, method: {"hyperparameters": hp}},
        },
    )


@pytest.mark.parametrize(("method", "temperature"), [("rft", 1.0), ("irft", 1.0)])
def test_a_partial_generation_block_keeps_the_methods_defaults(
    client: TestClient, train_file: dict, method: str, temperature: float
) -> None:
    """RFT's default generation samples at temperature 1.0; a request giving only max_new_tokens must
    keep it (it used to become 0.0, greedy: RFT's k samples identical, the policy never moving)."""
    r = post_job(client, train_file, method, {"generation": {"max_new_tokens": 24}, "lora": {"r": 4}})
    assert r.status_code == 200, r.text
    stored = r.json()["method"][method]["hyperparameters"]
    assert stored["generation"]["max_new_tokens"] == 24
    assert stored["generation"]["temperature"] == temperature
    assert stored["generation"]["top_p"] == 1.0 and stored["generation"]["max_prompt_len"] == 256
    assert stored["lora"] == {**LoraSettings().model_dump(), "r": 4}


def test_the_job_stores_what_trains_and_shows_openais_three(client: TestClient, train_file: dict) -> None:
    r = post_job(
        client,
        train_file,
        "sft",
        {"learning_rate_multiplier": 2, "lora": {"enabled": True}, "max_grad_norm": 0, "n_epochs": "2"},
    )
    assert r.status_code == 200, r.text
    job = r.json()
    stored = job["method"]["sft"]["hyperparameters"]
    assert "learning_rate_multiplier" not in stored and set(stored) == set(
        TRAINER_HYPERPARAMETERS["sft"].model_fields
    )
    assert stored["learning_rate"] == pytest.approx(4e-4) and stored["max_grad_norm"] == 0.0
    assert job["hyperparameters"] == {"n_epochs": 2, "batch_size": 1, "learning_rate_multiplier": 2.0}


@pytest.mark.parametrize(
    ("hp", "param"),
    [
        ({"n_epochs": True}, "method.rft.hyperparameters.n_epochs"),
        ({"batch_size": False}, "method.rft.hyperparameters.batch_size"),
        ({"max_grad_norm": -0.5}, "method.rft.hyperparameters.max_grad_norm"),
        ({"generation": {"temperature": 11}}, "method.rft.hyperparameters.generation.temperature"),
        ({"generation": {"typo": 1}}, "method.rft.hyperparameters.generation.typo"),
        ({"reward_model": ""}, "method.rft.hyperparameters.reward_model"),
        ({"lora": {"target_modules": []}}, "method.rft.hyperparameters.lora.target_modules"),
        ({"generation": {"temperature": 0}}, "method.rft.hyperparameters.generation.temperature"),
    ],
)
def test_refused_like_the_trainer_refuses(client: TestClient, train_file: dict, hp: dict, param: str) -> None:
    r = post_job(client, train_file, "rft", hp)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_the_worker_trains_the_stored_dict_as_it_is(
    client: TestClient, train_file: dict, tiny_model_dir: Path
) -> None:
    from api.core.config import get_settings
    from worker.runner import build_train_config, total_steps

    r = post_job(client, train_file, "rft", {"n_epochs": 2, "batch_size": 3, "outer_iterations": 2})
    stored = r.json()["method"]["rft"]["hyperparameters"]
    job = Job(model="tiny-llama", method_type="rft", hyperparameters=stored, seed=1)
    config = build_train_config(
        job,
        get_settings(),
        training_file=Path("train.jsonl"),
        validation_file=None,
        output_dir=Path("out"),
        resume_from=None,
    )
    assert config["hyperparameters"] == stored and config["method"] == "rft"
    hp = TRAINER_HYPERPARAMETERS["rft"].model_validate(stored)
    assert total_steps(job, 10) == plan.total_steps("rft", hp, 10) == 2 * 2 * 2  # T * ceil(5 / 3) * n_epochs
    sft = Job(
        model="tiny-llama", method_type="supervised", hyperparameters=resolve(HYPERPARAMETERS["sft"](), 10)
    )
    assert total_steps(sft, 10) == 10 * 10  # auto: 10 epochs of batch 1


def test_auto_epochs_is_one_rft_pass_and_openais_rule_elsewhere(client: TestClient, train_file: dict) -> None:
    """An RFT pass samples fresh continuations at every policy step: its "auto" is one pass."""
    for method, want in (("rft", 1), ("irft", resolve(HYPERPARAMETERS["sft"](), 10)["n_epochs"])):
        r = post_job(client, train_file, method, {})
        assert r.status_code == 200, r.text
        assert r.json()["method"][method]["hyperparameters"]["n_epochs"] == want
