"""TrainConfig: nested construction, validation messages, YAML and override precedence."""

from __future__ import annotations

import pytest

from trainer.config import LoraSettings, SFTHyperparameters, TrainConfig, load_config

BASE = {"model": "m", "training_file": "t.jsonl", "output_dir": "out"}


def test_defaults_and_nested_from_dict():
    cfg = TrainConfig.from_dict(
        {**BASE, "hyperparameters": {"learning_rate": 3e-4, "lora": {"enabled": True, "r": 4}}}
    )
    assert isinstance(cfg.hyperparameters, SFTHyperparameters)
    assert isinstance(cfg.hyperparameters.lora, LoraSettings)
    assert cfg.hyperparameters.learning_rate == 3e-4
    assert cfg.hyperparameters.lora.r == 4 and cfg.hyperparameters.lora.alpha == 16
    assert cfg.hyperparameters.n_epochs == 3 and cfg.method == "sft" and cfg.device == "auto"


def test_to_dict_round_trip():
    cfg = TrainConfig.from_dict(
        {**BASE, "seed": 3, "hyperparameters": {"lora": {"target_modules": ["q_proj"]}}}
    )
    d = cfg.to_dict()
    assert d["hyperparameters"]["lora"]["target_modules"] == ["q_proj"]
    assert TrainConfig.from_dict(d) == cfg


@pytest.mark.parametrize(
    "data, message",
    [
        ({**BASE, "learning_rate": 1e-4}, r"^learning_rate: unknown key"),
        ({**BASE, "hyperparameters": {"lr": 1e-4}}, r"^hyperparameters\.lr: unknown key"),
        ({**BASE, "hyperparameters": {"lora": {"rank": 4}}}, r"^hyperparameters\.lora\.rank: unknown key"),
        ({"training_file": "t", "output_dir": "o"}, r"^model: required"),
        (
            {**BASE, "hyperparameters": {"learning_rate": -1}},
            r"^hyperparameters\.learning_rate: expected .*got -1",
        ),
        (
            {**BASE, "hyperparameters": {"n_epochs": 0}},
            r"^hyperparameters\.n_epochs: expected an integer >= 1, got 0",
        ),
        ({**BASE, "hyperparameters": {"n_epochs": 2.5}}, r"^hyperparameters\.n_epochs: expected an integer"),
        (
            {**BASE, "hyperparameters": {"batch_size": True}},
            r"^hyperparameters\.batch_size: expected an integer",
        ),
        (
            {**BASE, "hyperparameters": {"lr_scheduler_type": "step"}},
            r"^hyperparameters\.lr_scheduler_type: expected one of",
        ),
        (
            {**BASE, "hyperparameters": {"warmup_ratio": 1.0}},
            r"^hyperparameters\.warmup_ratio: expected a number in \[0.0, 1.0\)",
        ),
        (
            {**BASE, "hyperparameters": {"lora": {"r": 0}}},
            r"^hyperparameters\.lora\.r: expected an integer >= 1, got 0",
        ),
        (
            {**BASE, "hyperparameters": {"lora": {"target_modules": []}}},
            r"^hyperparameters\.lora\.target_modules: expected",
        ),
        ({**BASE, "hyperparameters": "fast"}, r"^hyperparameters: expected a mapping"),
        ({**BASE, "method": "dpo"}, r"^method: expected one of sft, irft, rft, got 'dpo'"),
        ({**BASE, "device": "tpu"}, r"^device: expected one of auto, cpu, cuda"),
        ({**BASE, "mixed_precision": "fp8"}, r"^mixed_precision: expected one of"),
        ({**BASE, "model": ""}, r"^model: expected a non-empty string"),
    ],
)
def test_validation_errors_name_the_field(data, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(data)


def test_direct_construction_validates_too():
    with pytest.raises(ValueError, match=r"^max_grad_norm: expected"):
        SFTHyperparameters(max_grad_norm=-1.0)
    with pytest.raises(ValueError, match=r"^hyperparameters\.logging_interval: expected"):
        TrainConfig(**BASE, hyperparameters={"logging_interval": 0})


def test_load_config_precedence(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "model: from-yaml\n"
        "training_file: t.jsonl\n"
        "output_dir: out\n"
        "seed: 5\n"
        "hyperparameters:\n"
        "  learning_rate: 1e-4\n"  # YAML 1.1 reads this as a string; it is coerced to float
        "  n_epochs: 2\n"
        "  lora:\n"
        "    enabled: true\n"
    )
    cfg = load_config(path, [])
    assert cfg.model == "from-yaml" and cfg.seed == 5
    assert cfg.hyperparameters.learning_rate == pytest.approx(1e-4)
    assert cfg.hyperparameters.n_epochs == 2 and cfg.hyperparameters.batch_size == 8  # default kept
    cfg = load_config(
        path,
        [
            "seed=7",
            "hyperparameters.learning_rate=3e-4",
            "n_epochs=1",
            "hyperparameters.lora.r=4",
            "hyperparameters.lora.target_modules=[q_proj, v_proj]",
            "validation_file=v.jsonl",
            "--model=flag",
        ],
    )
    assert cfg.seed == 7 and cfg.model == "flag" and cfg.validation_file == "v.jsonl"
    assert cfg.hyperparameters.learning_rate == pytest.approx(3e-4)
    assert cfg.hyperparameters.n_epochs == 1
    assert cfg.hyperparameters.lora.r == 4 and cfg.hyperparameters.lora.enabled is True
    assert cfg.hyperparameters.lora.target_modules == ["q_proj", "v_proj"]


def test_load_config_without_file_and_errors(tmp_path):
    cfg = load_config(None, ["model=m", "training_file=t", "output_dir=o", "resume_from=null"])
    assert cfg.resume_from is None
    with pytest.raises(ValueError, match="expected key=value"):
        load_config(None, ["model"])
    with pytest.raises(ValueError, match=r"^hyperparameters\.batch_size: expected an integer"):
        load_config(None, ["model=m", "training_file=t", "output_dir=o", "batch_size=big"])
    with pytest.raises(ValueError, match=r"^typo: unknown key"):
        load_config(None, ["model=m", "training_file=t", "output_dir=o", "typo=1"])
