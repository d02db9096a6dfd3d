"""Signed checkpoint download links on the real app + SQLite: a browser downloads with no header."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import make_key
from tests.helpers import chat_jsonl, extract_tar, sft_job_body

WEIGHTS = bytes(range(256)) * 64


def add_checkpoint(job_id: str, tmp_path: Path, step: int = 4) -> str:
    """A checkpoint as the worker leaves it: files in the artifact store (manifest last), then its row."""
    from api.db.session import session_scope
    from api.db.tables import Checkpoint
    from api.storage import get_store
    from worker.sinks import checkpoint_key

    local = tmp_path / f"ckpt-{job_id}-{step}"
    (local / "model").mkdir(parents=True)
    (local / "model" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (local / "model" / "model.safetensors").write_bytes(WEIGHTS)
    (local / "manifest.json").write_text("{}")
    key = checkpoint_key(job_id, step)
    size = get_store().put_dir(local, key, last="manifest.json")
    with session_scope() as s:
        row = Checkpoint(
            job_id=job_id,
            step=step,
            kind="model",
            metrics={"train/loss": 1.0},
            storage_path=key,
            size_bytes=size,
        )
        s.add(row)
        s.flush()
        return row.id


def new_job(client: TestClient, headers: dict[str, str] | None = None) -> str:
    r = client.post(
        "/files",
        headers=headers,
        data={"purpose": "fine-tune"},
        files={"file": ("t.jsonl", chat_jsonl(4), "application/jsonl")},
    )
    assert r.status_code == 200, r.text
    r = client.post("/fine_tuning/jobs", headers=headers, json=sft_job_body("tiny-llama", r.json()["id"]))
    assert r.status_code == 200, r.text
    return r.json()["id"]


@pytest.fixture()
def ckpt(client: TestClient, tmp_path: Path) -> tuple[str, str]:
    job_id = new_job(client)
    return job_id, add_checkpoint(job_id, tmp_path)


def link_path(job_id: str, ckpt_id: str) -> str:
    return f"/fine_tuning/jobs/{job_id}/checkpoints/{ckpt_id}/link"


def create_link(
    client: TestClient, job_id: str, ckpt_id: str, headers: dict[str, str] | None = None, **body: int
) -> dict:
    r = client.post(link_path(job_id, ckpt_id), headers=headers, json=body or None)
    assert r.status_code == 200, r.text
    return r.json()


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def with_query(url: str, **changes: object) -> str:
    return urlsplit(url).path + "?" + urlencode(query_of(url) | {k: str(v) for k, v in changes.items()})


def fetch(client: TestClient, url: str) -> httpx.Response:
    """GET a root-relative link as a browser navigation does: same origin, no Authorization header."""
    return client.get(f"http://testserver{url}", headers={"Authorization": ""})


def error_of(r: httpx.Response) -> dict:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def test_link_downloads_the_checkpoint_without_a_header(
    client: TestClient, ckpt: tuple[str, str], tmp_path: Path
) -> None:
    job_id, ckpt_id = ckpt
    before = int(time.time())
    link = create_link(client, job_id, ckpt_id)
    assert set(link) == {"object", "url", "expires_at"}
    assert link["object"] == "fine_tuning.job.checkpoint.link"
    assert before + 900 <= link["expires_at"] <= int(time.time()) + 900  # the default lifetime
    parts = urlsplit(link["url"])
    assert parts.path == f"/v1/fine_tuning/jobs/{job_id}/checkpoints/{ckpt_id}/content" and not parts.netloc
    query = query_of(link["url"])
    assert set(query) == {"key", "expires", "signature"} and int(query["expires"]) == link["expires_at"]

    r = fetch(client, link["url"])
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
    assert int(r.headers["content-length"]) == len(r.content)
    top = extract_tar(r.content, tmp_path / "out")
    assert top.name == f"{job_id}-step-4" and (top / "model.safetensors").read_bytes() == WEIGHTS


def test_expires_in_is_honoured_and_bounded(client: TestClient, ckpt: tuple[str, str]) -> None:
    link = create_link(client, *ckpt, expires_in=60)
    assert abs(link["expires_at"] - (int(time.time()) + 60)) <= 2
    for bad in (9, 86401):
        r = client.post(link_path(*ckpt), json={"expires_in": bad})
        assert r.status_code == 400 and error_of(r)["param"] == "expires_in"


def test_tampered_links_are_403(client: TestClient, ckpt: tuple[str, str], tmp_path: Path) -> None:
    link = create_link(client, *ckpt)
    query = query_of(link["url"])
    other_ckpt = add_checkpoint(ckpt[0], tmp_path, step=8)
    tampered = [
        with_query(link["url"], signature="0" * 64),
        with_query(link["url"], signature="é"),  # non-ASCII must not crash the constant-time comparison
        with_query(link["url"], expires=int(query["expires"]) + 3600),  # a later expiry was never signed
        with_query(link["url"], key=int(query["key"]) + 1000),  # no such key
        link["url"].replace(ckpt[1], other_ckpt),  # the signature covers the checkpoint id
    ]
    for url in tampered:
        r = fetch(client, url)
        assert r.status_code == 403, url
        assert (error_of(r)["code"], error_of(r)["param"]) == ("invalid_signature", "signature"), url


def test_expired_link_is_403(client: TestClient, ckpt: tuple[str, str]) -> None:
    from sqlalchemy import select

    from api.core.config import get_settings
    from api.core.security import hash_api_key, server_secret
    from api.db.session import session_scope
    from api.db.tables import ApiKey
    from api.services.checkpoint_links import create_link as service_create_link

    job_id, ckpt_id = ckpt
    content_path = f"/v1/fine_tuning/jobs/{job_id}/checkpoints/{ckpt_id}/content"
    key_hash = hash_api_key(client.headers["Authorization"].removeprefix("Bearer "))
    with session_scope() as s:
        key = s.scalars(select(ApiKey).where(ApiKey.key_hash == key_hash)).one()
        # Correctly signed, issued 100 s ago for 10 s: only the expiry is wrong.
        link = service_create_link(
            s,
            secret=server_secret(get_settings()),
            tenant_id=key.tenant_id,
            key_id=key.id,
            key_hash=key_hash,
            job_id=job_id,
            checkpoint_id=ckpt_id,
            content_path=content_path,
            expires_in=10,
            now=int(time.time()) - 100,
        )
    r = fetch(client, link.url)
    assert r.status_code == 403 and (error_of(r)["code"], error_of(r)["param"]) == ("link_expired", "expires")


def test_revoking_the_key_kills_its_links(client: TestClient, ckpt: tuple[str, str]) -> None:
    from api.db.session import session_scope
    from api.services.keys import revoke_key

    second = make_key("acme")  # another key of the same tenant
    link = create_link(client, *ckpt, headers={"Authorization": f"Bearer {second}"})
    assert fetch(client, link["url"]).status_code == 200
    with session_scope() as s:
        assert revoke_key(s, second)
    r = fetch(client, link["url"])
    assert r.status_code == 403 and error_of(r)["code"] == "invalid_signature"
    # The tenant's other key still signs links that work.
    assert fetch(client, create_link(client, *ckpt)["url"]).status_code == 200


def test_another_tenant_can_neither_link_nor_reach_the_checkpoint(
    client: TestClient, ckpt: tuple[str, str], tmp_path: Path
) -> None:
    from api.core.config import get_settings
    from api.core.security import server_secret, sign_checkpoint_link
    from api.db.session import session_scope
    from api.db.tables import ApiKey

    job_id, ckpt_id = ckpt
    mallory = {"Authorization": f"Bearer {make_key('mallory')}"}
    r = client.post(link_path(job_id, ckpt_id), headers=mallory)
    assert r.status_code == 404 and error_of(r)["code"] == "fine_tuning_job_not_found"

    own_job = new_job(client, mallory)
    own = create_link(client, own_job, add_checkpoint(own_job, tmp_path), headers=mallory)
    assert fetch(client, own["url"]).status_code == 200
    # Even a link correctly signed for her key (say, by someone holding the server secret and its hash)
    # over acme's ids is refused: the key's tenant must own the job.
    key_id = int(query_of(own["url"])["key"])
    with session_scope() as s:
        key_hash = s.get(ApiKey, key_id).key_hash
    expires = int(time.time()) + 60
    forged = f"/v1/fine_tuning/jobs/{job_id}/checkpoints/{ckpt_id}/content?" + urlencode(
        {
            "key": key_id,
            "expires": expires,
            "signature": sign_checkpoint_link(
                server_secret(get_settings()), key_id, key_hash, job_id, ckpt_id, expires
            ),
        }
    )
    r = fetch(client, forged)
    assert r.status_code == 404 and error_of(r)["code"] == "fine_tuning_job_not_found"


def test_bearer_download_still_works_and_missing_credentials_are_401(
    client: TestClient, ckpt: tuple[str, str]
) -> None:
    path = f"/fine_tuning/jobs/{ckpt[0]}/checkpoints/{ckpt[1]}/content"
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
    r = client.get(path, headers={"Authorization": ""})
    assert r.status_code == 401 and error_of(r)["code"] == "missing_api_key"
    r = client.get(path, headers={"Authorization": ""}, params={"key": 1, "expires": int(time.time()) + 60})
    assert r.status_code == 403 and error_of(r)["code"] == "invalid_signature"  # a link missing a part


def test_link_creation_needs_a_key_and_a_real_checkpoint(client: TestClient, ckpt: tuple[str, str]) -> None:
    r = client.post(link_path(*ckpt), headers={"Authorization": ""})
    assert r.status_code == 401 and error_of(r)["code"] == "missing_api_key"
    r = client.post(link_path(ckpt[0], "ftckpt-nope"))
    assert r.status_code == 404 and error_of(r)["code"] == "checkpoint_not_found"
