"""The user CLI's pure parts: --hp parsing, the job body, the SSE reader, the checkpoint unpacker."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from juice.cli import build_parser
from juice.live import sse_events
from juice.user_cli import (
    CliError,
    job_body,
    method_block,
    parse_hyperparameters,
    parse_value,
    read_grader,
    unpack_tar,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("3e-4", 3e-4),
        ("0.5", 0.5),
        ("true", True),
        ("null", None),
        ("auto", "auto"),  # not JSON: kept as text
        ("[1, 2]", [1, 2]),
        ('{"r": 8}', {"r": 8}),
        ('"3"', "3"),  # a quoted number stays a string
        ("NaN", "NaN"),  # not a JSON number: the API would refuse it as one
        ("Infinity", "Infinity"),
        ("", ""),
        ("q_proj,v_proj", "q_proj,v_proj"),
    ],
)
def test_parse_value(text: str, value: object) -> None:
    assert parse_value(text) == value
    assert type(parse_value(text)) is type(value)


def test_hyperparameters_nest_dotted_keys() -> None:
    hp = parse_hyperparameters(
        ["n_epochs=2", "learning_rate=3e-4", "lora.enabled=true", "lora.r=8", "batch_size=auto", "a.b.c=x"]
    )
    assert hp == {
        "n_epochs": 2,
        "learning_rate": 3e-4,
        "lora": {"enabled": True, "r": 8},
        "batch_size": "auto",
        "a": {"b": {"c": "x"}},
    }


def test_hyperparameters_value_may_hold_equals_signs() -> None:
    assert parse_hyperparameters(["stop=a=b"]) == {"stop": "a=b"}


def test_a_json_block_and_dotted_keys_merge() -> None:
    assert parse_hyperparameters(['lora={"r": 8}', "lora.alpha=16"]) == {"lora": {"r": 8, "alpha": 16}}


@pytest.mark.parametrize(
    ("pairs", "says"),
    [
        (["n_epochs"], "expected KEY=VALUE"),
        (["=3"], "expected KEY=VALUE"),
        (["lora..r=8"], "expected KEY=VALUE"),
        (["lora.=8"], "expected KEY=VALUE"),
        (["n_epochs=2", "n_epochs=3"], "n_epochs is given twice"),
        (["lora.r=8", "lora=1"], "lora is given twice"),
        (["lora=1", "lora.r=8"], "lora is given as a value, not a block"),
    ],
)
def test_bad_hyperparameters_are_refused_by_name(pairs: list[str], says: str) -> None:
    with pytest.raises(CliError, match=says) as err:
        parse_hyperparameters(pairs)
    assert repr(pairs[-1]) in str(err.value) or repr(pairs[0]) in str(err.value)


def test_job_body_is_openais_shape() -> None:
    body = job_body(
        "tiny-llama",
        "file-a",
        "dpo",
        {"beta": 0.1, "lora": {"r": 4}},
        validation_file=None,
        suffix="x",
        seed=0,
    )
    assert body == {
        "model": "tiny-llama",
        "training_file": "file-a",
        "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1, "lora": {"r": 4}}}},
        "suffix": "x",
        "seed": 0,  # 0 is a seed, not "unset"
    }
    assert method_block("supervised", {}) == {"type": "supervised"}  # the server's defaults, untouched


def test_a_grader_goes_into_the_method_block_from_json_or_a_file(tmp_path: Path) -> None:
    grader = {
        "type": "string_check",
        "name": "g",
        "input": "{{sample.output_text}}",
        "reference": "4",
        "operation": "eq",
    }
    path = tmp_path / "grader.json"
    path.write_text(json.dumps(grader))
    assert read_grader(str(path)) == read_grader(json.dumps(grader)) == grader and read_grader(None) is None
    assert method_block("reinforcement", {}, grader) == {
        "type": "reinforcement",
        "reinforcement": {"grader": grader},
    }
    body = job_body("tiny-llama", "file-a", "reinforcement", {"n_epochs": 1}, grader)
    assert body["method"]["reinforcement"] == {"hyperparameters": {"n_epochs": 1}, "grader": grader}
    with pytest.raises(CliError, match="--grader: neither a JSON file nor JSON"):
        read_grader(str(tmp_path / "missing.json"))
    with pytest.raises(CliError, match="a JSON object"):
        read_grader("[1]")


def test_parser_takes_hp_pairs_in_one_or_many_flags() -> None:
    args = build_parser().parse_args(
        ["jobs", "create", "--model", "m", "--training-file", "f", "--hp", "a=1", "b=2", "--hp", "c=x"]
    )
    assert args.hp == ["a=1", "b=2", "c=x"]
    assert args.method == "supervised" and args.watch is False and args.api_url is None
    args = build_parser().parse_args(
        ["jobs", "watch", "ftjob-1", "--api-url", "http://h/v1", "--api-key", "k"]
    )
    assert (args.job_id, args.api_url, args.api_key) == ("ftjob-1", "http://h/v1", "k")


def test_sse_events_reads_the_servers_stream() -> None:
    # exactly what api/routes/metrics.py::_metric_events writes, keep-alive included
    point = {"seq": 5, "step": 1, "created_at": 1.0, "values": {"train/loss": 2.5}}
    text = (
        "retry: 2000\n\n: keep-alive\n\n"
        f"id: 5\nevent: metric\ndata: {json.dumps(point)}\n\n"
        'event: status\ndata: {"status": "running"}\n\n'
        'event: end\ndata: {"status": "succeeded"}\n\n'
    )
    events = list(sse_events(iter(text.split("\n"))))
    assert events == [
        ("metric", json.dumps(point)),
        ("status", '{"status": "running"}'),
        ("end", '{"status": "succeeded"}'),
    ]


def _tar(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _chunks(data: bytes, size: int = 333) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_unpack_tar_drops_the_top_folder_and_streams(tmp_path: Path) -> None:
    data = _tar({"ftjob-x-step-4/config.json": b"{}", "ftjob-x-step-4/sub/model.safetensors": b"w" * 5000})
    count = unpack_tar(iter(_chunks(data)), tmp_path)  # odd-sized chunks: the reader reassembles them
    assert count == 2
    assert (tmp_path / "config.json").read_bytes() == b"{}"
    assert (tmp_path / "sub" / "model.safetensors").read_bytes() == b"w" * 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "sub"]


def test_unpack_tar_refuses_paths_out_of_the_folder(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(tarfile.TarError):
        unpack_tar(iter(_chunks(_tar({"top/../../evil.txt": b"x"}))), dest)
    assert not (tmp_path / "evil.txt").exists()


def test_user_commands_import_no_service_code() -> None:
    """`juice jobs ...` on a laptop without torch: parsing and the user module import none of it."""
    code = (
        "import sys, juice.cli, juice.user_cli; juice.cli.build_parser().parse_args(['jobs', 'list']);"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'trainer', 'worker', 'sqlalchemy')"
        " or m.startswith('api.db')); print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
