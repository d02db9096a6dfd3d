"""GET /v1/fine_tuning/methods: derived from the hyperparameter models, and a form built from it is valid."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from api.schemas.hyperparameters import HYPERPARAMETERS
from tests.helpers import preference_jsonl, upload


def leaf_names(model: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            names += leaf_names(info.annotation, f"{prefix}{name}.")
        else:
            names.append(prefix + name)
    return names


@pytest.fixture()
def methods(client: TestClient) -> dict[str, dict]:
    r = client.get("/fine_tuning/methods")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list"
    return {m["id"]: m for m in body["data"]}


def spec(methods: dict[str, dict], method: str, name: str) -> dict:
    (found,) = [h for h in methods[method]["hyperparameters"] if h["name"] == name]
    return found


def test_every_method_and_every_field_is_described(methods: dict[str, dict]) -> None:
    assert list(methods) == ["sft", "irft", "rft", "dpo", "iql", "reinforcement"]
    assert methods["sft"]["aliases"] == ["supervised"] and methods["rft"]["aliases"] == []
    assert methods["dpo"]["aliases"] == []
    keys = {
        "name",
        "type",
        "default",
        "auto",
        "minimum",
        "maximum",
        "exclusive_minimum",
        "exclusive_maximum",
        "enum",
        "nullable",
        "description",
    }
    for method, model in HYPERPARAMETERS.items():
        m = methods[method]
        assert m["object"] == "fine_tuning.method" and m["description"].endswith(".")
        assert [h["name"] for h in m["hyperparameters"]] == leaf_names(model)
        for h in m["hyperparameters"]:
            assert set(h) == keys and h["description"], h
            assert h["type"] in ("integer", "number", "boolean", "string", "string_list")


def test_known_bounds_types_and_defaults(methods: dict[str, dict]) -> None:
    n_epochs = spec(methods, "sft", "n_epochs")
    assert {k: v for k, v in n_epochs.items() if k != "description"} == {
        "name": "n_epochs",
        "type": "integer",
        "default": "auto",
        "auto": True,
        "minimum": 1,
        "maximum": 50,
        "exclusive_minimum": False,
        "exclusive_maximum": False,
        "enum": None,
        "nullable": False,
    }
    lr = spec(methods, "sft", "learning_rate")
    assert (lr["type"], lr["minimum"], lr["exclusive_minimum"], lr["maximum"], lr["exclusive_maximum"]) == (
        "number",
        0,
        True,
        1,
        False,
    )
    warmup = spec(methods, "sft", "warmup_ratio")
    assert (warmup["minimum"], warmup["maximum"], warmup["exclusive_maximum"]) == (0, 1, True)
    steps = spec(methods, "sft", "warmup_steps")
    assert (steps["minimum"], steps["maximum"], steps["default"]) == (0, 10_000_000, 0)  # MAX_STEPS
    assert spec(methods, "sft", "lr_scheduler_type")["enum"] == [
        "linear",
        "cosine",
        "constant",
        "constant_with_warmup",
    ]
    assert spec(methods, "sft", "lora.enabled")["type"] == "boolean"
    assert spec(methods, "sft", "lora.enabled")["default"] is False
    target = spec(methods, "sft", "lora.target_modules")
    assert (target["type"], target["default"], target["enum"]) == ("string_list", "all-linear", None)
    assert spec(methods, "irft", "beta")["exclusive_minimum"] is True  # IRFT: gt=0
    assert spec(methods, "rft", "beta")["exclusive_minimum"] is False  # RFT: ge=0 (no KL penalty allowed)
    reward = spec(methods, "rft", "reward_model")
    assert (reward["type"], reward["nullable"], reward["default"]) == ("string", True, None)
    temp = spec(methods, "rft", "generation.temperature")
    assert (temp["type"], temp["minimum"], temp["maximum"]) == ("number", 0, 10)


def test_request_only_and_trainer_semantics(methods: dict[str, dict]) -> None:
    mult = spec(methods, "sft", "learning_rate_multiplier")
    assert (mult["auto"], mult["default"], mult["minimum"], mult["exclusive_minimum"]) == (
        True,
        "auto",
        0,
        True,
    )
    clip = spec(methods, "sft", "max_grad_norm")
    assert (clip["minimum"], clip["exclusive_minimum"], clip["default"]) == (0, False, 1.0)
    assert "no clipping" in clip["description"]
    assert spec(methods, "sft", "max_seq_len")["minimum"] == 16
    assert "policy step" in spec(methods, "rft", "n_epochs")["description"]
    assert "outer iteration" in spec(methods, "rft", "eval_interval")["description"]
    assert "outer iteration" in spec(methods, "irft", "checkpoint_interval")["description"]
    assert "epoch" in spec(methods, "sft", "eval_interval")["description"]


def test_nested_defaults_come_from_the_default_factory(methods: dict[str, dict]) -> None:
    assert spec(methods, "rft", "generation.temperature")["default"] == 1.0  # RFT's own factory
    assert spec(methods, "irft", "generation.temperature")["default"] == 1.0  # IRFT's sampled negatives
    assert spec(methods, "irft", "generation.max_new_tokens")["default"] == "auto"


def form_from_defaults(method: dict) -> dict[str, Any]:
    """What a generated form posts when the user changes nothing: every non-auto default, nested back."""
    out: dict[str, Any] = {}
    for h in method["hyperparameters"]:
        if h["auto"]:
            continue
        *parents, leaf = h["name"].split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = h["default"]
    return out


def test_each_method_says_which_training_files_it_takes(methods: dict[str, dict]) -> None:
    """The dashboard offers a preference file as DPO's training file, and a demonstration file elsewhere."""
    formats = {m: methods[m]["training_file_formats"] for m in methods}
    demonstrations = ["chat", "prompt_completion"]
    assert formats == {
        "sft": demonstrations,
        "irft": demonstrations,
        "rft": demonstrations,
        "dpo": ["preference"],
        "iql": demonstrations,
        "reinforcement": ["reinforcement"],
    }


def test_dpo_is_described_with_openais_auto_beta(methods: dict[str, dict]) -> None:
    beta = spec(methods, "dpo", "beta")
    assert (beta["type"], beta["auto"], beta["default"]) == ("number", True, "auto")
    assert (beta["minimum"], beta["exclusive_minimum"], beta["maximum"]) == (0, True, 100)
    assert spec(methods, "dpo", "loss_type")["enum"] == ["sigmoid", "hinge"]
    assert spec(methods, "dpo", "max_prompt_len")["default"] == 256
    assert spec(methods, "irft", "beta")["auto"] is False  # Juice's own methods: no "auto" beta
    assert "preference" in methods["dpo"]["description"]
    assert not any(h["name"].startswith("generation.") for h in methods["dpo"]["hyperparameters"])


@pytest.mark.parametrize("method_id", ["sft", "irft", "rft", "dpo", "iql"])
def test_a_form_of_defaults_validates_as_a_job(
    client: TestClient, train_file: dict, methods: dict[str, dict], method_id: str
) -> None:
    hp = form_from_defaults(methods[method_id])
    assert "lora" in hp and ("generation" in hp) == (method_id in ("irft", "rft"))
    method = {"type": method_id, method_id: {"hyperparameters": hp}}
    training = upload(client, preference_jsonl(4))["id"] if method_id == "dpo" else train_file["id"]
    r = client.post(
        "/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": training, "method": method}
    )
    assert r.status_code == 200, r.text
    stored = r.json()["method"][method_id]["hyperparameters"]
    for h in methods[method_id]["hyperparameters"]:
        if not h["auto"]:
            *parents, leaf = h["name"].split(".")
            node = stored
            for p in parents:
                node = node[p]
            assert node[leaf] == h["default"], h["name"]


def test_methods_need_a_key(client: TestClient) -> None:
    assert client.get("/fine_tuning/methods", headers={"Authorization": ""}).status_code == 401


class Undescribable(BaseModel):
    mapping: dict[str, int] = {}


class LengthBound(BaseModel):
    name: str = Field("x", max_length=8)


class MixedUnion(BaseModel):
    value: int | str = 1


class HiddenChoice(BaseModel):
    value: list[str] | Literal["all", "none"] = "all"


@pytest.mark.parametrize("model", [Undescribable, LengthBound, MixedUnion, HiddenChoice])
def test_what_cannot_be_described_faithfully_raises(model: type[BaseModel]) -> None:
    from api.services.methods import describe_model

    with pytest.raises(TypeError):
        describe_model(model, model())


def test_the_dashboards_alias_table_is_the_apis() -> None:
    """The dashboard maps a job's method type to the trainer's name with the API's one alias table."""
    import json
    import re
    from pathlib import Path

    from api.method_names import ALIASES

    js = (Path(__file__).resolve().parents[2] / "api/dashboard/static/js/api.js").read_text()
    found = re.search(r"export const METHOD_ALIASES = (\{.*?\});", js)
    assert found, "api.js no longer defines METHOD_ALIASES"
    assert json.loads(found.group(1)) == ALIASES
