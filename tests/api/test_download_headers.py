"""File names in, download headers out (issue 10, finding 4).

Uploads refuse names no real file has (control characters, empty, over 255 bytes). Downloads build
Content-Disposition one way (api/downloads.py) from whatever name is stored, rows older than that
check included, and the header is read back here the way a browser reads it (RFC 6266: `filename*`
wins over the ASCII `filename`). Over a real socket: the in-process TestClient never encodes headers.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from tests.api.conftest import make_key
from tests.api.live import live_client
from tests.helpers import chat_jsonl, sft_job_body, upload

DATA = chat_jsonl(2)


def error_of(r: httpx.Response) -> dict:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


@pytest.fixture()
def live(app_env: Path) -> Iterator[httpx.Client]:
    with live_client(make_key("acme")) as client:
        yield client


def raw_upload(client: httpx.Client, filename: bytes) -> httpx.Response:
    """A multipart upload with `filename` as raw bytes in its part header. httpx's own encoder would
    percent-escape control characters and quotes; an attacker's client does not."""
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="purpose"\r\n\r\n'
        f"fine-tune\r\n--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="file"; filename="'
        + filename
        + b'"\r\nContent-Type: application/jsonl\r\n\r\n'
        + DATA
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return client.post(
        "/files", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )


# RFC 6266 as a browser parses it: the type, then `; name=value` pairs, a value a token or a quoted-string.
_PARAM = r';\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[!#$%&\'*+.^_`|~0-9A-Za-z-]+)'
_ATTR_VALUE = re.compile(r"UTF-8''((?:[A-Za-z0-9!#$&+\-.^_`|~]|%[0-9A-F]{2})*)")


def parse_disposition(header: str) -> tuple[str, str]:
    """(the ASCII fallback, the decoded `filename*`), after checking the header is exactly one
    attachment with one `filename` and one `filename*` and nothing else."""
    assert re.fullmatch(rf"attachment(?:{_PARAM})*", header), header
    params = re.findall(_PARAM, header)
    assert [name.lower() for name, _ in params] == ["filename", "filename*"], params
    fallback = params[0][1]
    assert fallback.startswith('"') and fallback.endswith('"')
    fallback = fallback[1:-1]
    assert re.fullmatch(r"[\x20-\x7e]*", fallback) and not set(fallback) & set('"\\%'), fallback
    encoded = _ATTR_VALUE.fullmatch(params[1][1])
    assert encoded, params[1][1]
    return fallback, unquote(encoded.group(1), errors="strict")


def set_stored_name(file_id: str, name: str) -> None:
    """What an upload before the name check could have stored."""
    from sqlalchemy import update

    from api.db.session import session_scope
    from api.db.tables import File

    with session_scope() as s:
        s.execute(update(File).where(File.id == file_id).values(filename=name))


@pytest.mark.parametrize(
    "name",
    [
        b"nul\x00.jsonl",
        b"tab\t.jsonl",
        b"bell\x07.jsonl",
        b"del\x7f.jsonl",
        b"c1-\xc2\x85.jsonl",  # U+0085 (NEL), a C1 control, in UTF-8
        b"lf\n.jsonl",
        b"",
        b"x" * 250 + b".jsonl",  # 256 bytes
        "é".encode() * 125 + b".jsonl",  # 131 characters, 256 bytes
    ],
)
def test_upload_refuses_names_with_control_characters_empty_or_too_long(
    live: httpx.Client, name: bytes
) -> None:
    r = raw_upload(live, name)
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert (err["param"], err["code"]) == ("file", "invalid_filename"), err
    assert err["message"].startswith("Invalid file name: ")
    assert live.get("/files").json()["data"] == []


def test_upload_keeps_a_255_byte_unicode_name(live: httpx.Client) -> None:
    name = "é" * 124 + "x.jsonl"  # 248 + 7 = 255 bytes
    assert upload(live, DATA, name)["filename"] == name


@pytest.mark.parametrize(
    "name",
    [
        "données 日本語 ✓.jsonl",  # not Latin-1: was a 500
        "evil\"; filename*=UTF-8''evil.exe",  # a quote: was a second filename*
        "back\\slash and 100%41 and ;=.jsonl",
        "nul\x00inside.jsonl",  # control characters in a row stored before uploads checked names
        "crlf\r\nSet-Cookie: a=b.jsonl",
        "\x85\x9f\x7f.jsonl",
        "plain.jsonl",
    ],
)
def test_any_stored_name_downloads_with_a_well_formed_header(live: httpx.Client, name: str) -> None:
    f = upload(live, DATA, "ok.jsonl")
    set_stored_name(f["id"], name)
    r = live.get(f"/files/{f['id']}/content")
    assert r.status_code == 200 and r.content == DATA
    headers = r.headers.get_list("content-disposition")
    assert len(headers) == 1 and "set-cookie" not in r.headers
    fallback, exact = parse_disposition(headers[0])
    assert exact == name  # what a browser saves the file as
    assert len(fallback) == len(name.encode("ascii", "replace"))  # one "_" per character it stands in for


def test_a_plain_name_is_its_own_fallback(live: httpx.Client) -> None:
    f = upload(live, DATA, "my-data_v2.jsonl")
    fallback, exact = parse_disposition(live.get(f"/files/{f['id']}/content").headers["content-disposition"])
    assert fallback == exact == "my-data_v2.jsonl"


def test_checkpoint_downloads_use_the_same_header(live: httpx.Client, tmp_path: Path) -> None:
    from api.db.session import session_scope
    from api.db.tables import Checkpoint
    from api.storage import get_store
    from worker.sinks import checkpoint_key

    job = live.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", upload(live, DATA)["id"])).json()
    local = tmp_path / "ckpt"
    (local / "model").mkdir(parents=True)
    (local / "model" / "config.json").write_text("{}")
    (local / "manifest.json").write_text("{}")
    key = checkpoint_key(job["id"], 3)
    size = get_store().put_dir(local, key, last="manifest.json")
    with session_scope() as s:
        row = Checkpoint(
            job_id=job["id"], step=3, kind="model", metrics={}, storage_path=key, size_bytes=size
        )
        s.add(row)
        s.flush()
        ckpt_id = row.id
    r = live.get(f"/fine_tuning/jobs/{job['id']}/checkpoints/{ckpt_id}/content")
    assert r.status_code == 200, r.text
    fallback, exact = parse_disposition(r.headers["content-disposition"])
    assert fallback == exact == f"{job['id']}-step-3.tar"
