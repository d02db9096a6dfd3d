"""TrainConfig: nested construction, validation messages, YAML and override precedence."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from trainer.config import (
    HYPERPARAMETERS,
    IRFTHyperparameters,
    LoraSettings,
    RFTHyperparameters,
    SFTHyperparameters,
    TrainConfig,
    load_config,
)
from trainer.spec.hyperparameters import NegativeGenerationSettings, error_message

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
            r"^hyperparameters\.learning_rate: expected a number in \(0\.0, 1\.0\], got -1$",
        ),
        (
            {**BASE, "hyperparameters": {"n_epochs": 0}},
            r"^hyperparameters\.n_epochs: expected an integer in \[1, 50\], got 0$",
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
            r"^hyperparameters\.lora\.r: expected an integer in \[1, 1024\], got 0$",
        ),
        (
            {**BASE, "hyperparameters": {"lora": {"target_modules": []}}},
            r"^hyperparameters\.lora\.target_modules: expected",
        ),
        ({**BASE, "hyperparameters": "fast"}, r"^hyperparameters: expected a mapping"),
        (
            {**BASE, "method": "ppo"},
            r"^method: expected one of sft, irft, rft, dpo, iql, reinforcement, got 'ppo'",
        ),
        ({**BASE, "device": "tpu"}, r"^device: expected one of auto, cpu, cuda"),
        ({**BASE, "mixed_precision": "fp8"}, r"^mixed_precision: expected one of"),
        ({**BASE, "model": ""}, r"^model: expected a non-empty string"),
    ],
)
def test_validation_errors_name_the_field(data, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(data)


def test_direct_construction_validates_too():
    with pytest.raises(ValidationError) as exc:  # pydantic's own error (a ValueError) ...
        SFTHyperparameters(max_grad_norm=-1.0)
    # ... which error_message words as the config's errors are
    assert error_message(exc.value, SFTHyperparameters) == (
        "max_grad_norm: expected a number in [0.0, 1000000.0], got -1.0"
    )
    with pytest.raises(ValueError, match=r"^hyperparameters\.logging_interval: expected"):
        TrainConfig(**BASE, hyperparameters={"logging_interval": 0})


def test_several_errors_are_all_named():
    with pytest.raises(ValueError) as exc:
        TrainConfig.from_dict({**BASE, "seed": -1, "hyperparameters": {"n_epochs": 0, "lora": {"r": 0}}})
    assert str(exc.value) == (
        "hyperparameters.n_epochs: expected an integer in [1, 50], got 0; "
        "hyperparameters.lora.r: expected an integer in [1, 1024], got 0"
    )  # the method's hyperparameters are checked first, then the rest
    with pytest.raises(ValueError, match=r"^seed: expected an integer in \[0, 4294967295\], got -1$"):
        TrainConfig.from_dict({**BASE, "seed": -1})


def test_max_grad_norm_zero_means_no_clipping():
    assert SFTHyperparameters(max_grad_norm=0).max_grad_norm == 0.0


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("n_epochs", "2", 2),
        ("batch_size", "32", 32),
        ("max_seq_len", "64", 64),
        ("learning_rate", "1e-4", 1e-4),
    ],
)
def test_numbers_refuse_booleans_but_take_numeric_strings(name, text, value):
    with pytest.raises(
        ValueError, match=rf"^hyperparameters\.{name}: expected an? (integer|number) .*got True$"
    ):
        TrainConfig.from_dict({**BASE, "hyperparameters": {name: True}})
    got = getattr(TrainConfig.from_dict({**BASE, "hyperparameters": {name: text}}).hyperparameters, name)
    assert got == pytest.approx(value) and type(got) is type(value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_numbers_are_finite(bad):
    with pytest.raises(ValueError, match=r"^hyperparameters\.weight_decay: expected a number"):
        TrainConfig.from_dict({**BASE, "hyperparameters": {"weight_decay": bad}})


def test_max_seq_len_lower_bound():
    assert (
        TrainConfig.from_dict({**BASE, "hyperparameters": {"max_seq_len": 16}}).hyperparameters.max_seq_len
        == 16
    )
    with pytest.raises(ValueError, match=r"^hyperparameters\.max_seq_len: expected an integer in \[16, "):
        TrainConfig.from_dict({**BASE, "hyperparameters": {"max_seq_len": 15}})


def test_each_method_gets_its_own_class():
    assert type(TrainConfig(**BASE, method="irft").hyperparameters) is IRFTHyperparameters
    cfg = TrainConfig(**BASE, method="rft", hyperparameters=SFTHyperparameters(n_epochs=1))
    assert type(cfg.hyperparameters) is RFTHyperparameters and cfg.hyperparameters.n_epochs == 1
    with pytest.raises(ValueError, match=r"^hyperparameters\.beta: unknown key"):
        TrainConfig.from_dict({**BASE, "hyperparameters": {"beta": 0.1}})  # SFT has no beta
    assert set(HYPERPARAMETERS) == {"sft", "irft", "rft", "dpo", "iql", "reinforcement"}


@pytest.mark.parametrize(("method", "temperature"), [("rft", 1.0), ("irft", 1.0)])
def test_a_partial_nested_block_merges_over_the_methods_default(method, temperature):
    """RFT and IRFT sample at temperature 1.0 by default; giving only max_new_tokens must keep that (a
    fresh GenerationSettings would be greedy: RFT's k samples of a prompt would all be the same, and
    IRFT's negatives one fixed string per prompt)."""
    cfg = TrainConfig.from_dict(
        {**BASE, "method": method, "hyperparameters": {"generation": {"max_new_tokens": 24}}}
    )
    gen = cfg.hyperparameters.generation
    assert (gen.max_new_tokens, gen.temperature) == (24, temperature)
    assert gen.top_p == 1.0 and gen.max_prompt_len == 256  # the other defaults stay too
    assert HYPERPARAMETERS[method](generation={"max_new_tokens": 24}).generation == gen
    lora = TrainConfig.from_dict({**BASE, "method": method, "hyperparameters": {"lora": {"r": 4}}})
    assert lora.hyperparameters.lora == LoraSettings(r=4)
    # an instance is taken as it is: the caller built all of it
    explicit = IRFTHyperparameters(generation=NegativeGenerationSettings(max_new_tokens=24, temperature=0.7))
    assert explicit.generation.temperature == 0.7


def test_rft_refuses_greedy_generation():
    """Greedy decoding makes a prompt's k samples identical: every RLOO advantage and gradient is 0."""
    with pytest.raises(ValueError, match=r"^hyperparameters\.generation\.temperature: "):
        TrainConfig.from_dict(
            {**BASE, "method": "rft", "hyperparameters": {"generation": {"temperature": 0}}}
        )
    irft = TrainConfig.from_dict(
        {**BASE, "method": "irft", "hyperparameters": {"generation": {"temperature": 0}}}
    )
    assert irft.hyperparameters.generation.temperature == 0.0  # IRFT generates one sample: greedy is fine


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


REQUIRED = ["model=m", "training_file=t", "output_dir=o"]


def test_override_values_are_strings_the_field_converts():
    """Finding 7: values were parsed as YAML, so the documented `mixed_precision=no` became False."""
    cfg = load_config(
        None,
        [
            *REQUIRED,
            "mixed_precision=no",
            "hyperparameters.lora.target_modules=[q_proj,v_proj]",
            "learning_rate=1e-4",
            "lora.enabled=true",
            "method=rft",
            "reward_model=null",
            "generation.temperature=0.7",
            "seed=3",
        ],
    )
    assert cfg.mixed_precision == "no"
    assert cfg.hyperparameters.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.hyperparameters.learning_rate == pytest.approx(1e-4)
    assert cfg.hyperparameters.lora.enabled is True
    assert isinstance(cfg.hyperparameters, RFTHyperparameters) and cfg.hyperparameters.reward_model is None
    assert cfg.hyperparameters.generation.temperature == 0.7
    assert cfg.seed == 3
    # a string field keeps what was typed, even what YAML would read as a number or boolean
    assert load_config(None, [*REQUIRED, "model=1e-4"]).model == "1e-4"
    assert (
        load_config(None, [*REQUIRED, "method=rft", "reward_model=yes"]).hyperparameters.reward_model == "yes"
    )
    with pytest.raises(
        ValueError, match=r"^mixed_precision: expected one of auto, no, bf16, fp16, got 'maybe'"
    ):
        load_config(None, [*REQUIRED, "mixed_precision=maybe"])
    with pytest.raises(ValueError, match=r"^hyperparameters\.lora\.enabled: expected true or false"):
        load_config(None, [*REQUIRED, "lora.enabled=perhaps"])


def test_yaml_file_no_is_mixed_precision_no(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: m\ntraining_file: t\noutput_dir: o\nmixed_precision: no\n")
    assert load_config(path).mixed_precision == "no"
    path.write_text("model: m\ntraining_file: t\noutput_dir: o\nmixed_precision: true\n")
    with pytest.raises(ValueError, match=r"^mixed_precision: expected one of"):
        load_config(path)
