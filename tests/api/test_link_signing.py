"""Link signing with the server secret: what reading the database no longer lets anyone do, the lifetime
cap on every use, and where the secret comes from (JUICE_SECRET_KEY, or the embedded home's file)."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import clear_caches, make_key
from tests.api.test_download_links import add_checkpoint, create_link, error_of, fetch, new_job, query_of
from tests.conftest import REPO

YEAR = 365 * 24 * 3600


@pytest.fixture()
def ckpt(client: TestClient, tmp_path: Path) -> tuple[str, str]:
    job_id = new_job(client)
    return job_id, add_checkpoint(job_id, tmp_path)


def content_url(job_id: str, ckpt_id: str, **query: object) -> str:
    return f"/v1/fine_tuning/jobs/{job_id}/checkpoints/{ckpt_id}/content?" + urlencode(query)


def key_row(key_id: int) -> tuple[int, str]:
    from api.db.session import session_scope
    from api.db.tables import ApiKey

    with session_scope() as s:
        row = s.get(ApiKey, key_id)
        assert row is not None
        return row.id, row.key_hash


def secret() -> bytes:
    from api.core.config import get_settings
    from api.core.security import server_secret

    return server_secret(get_settings())


def minted(job_id: str, ckpt_id: str, key_id: int, key_hash: str, expires: int) -> str:
    """A link signed by hand with the server secret, as only a holder of that secret can."""
    from api.core.security import sign_checkpoint_link

    signature = sign_checkpoint_link(secret(), key_id, key_hash, job_id, ckpt_id, expires)
    return content_url(job_id, ckpt_id, key=key_id, expires=expires, signature=signature)


def test_a_link_minted_from_the_database_alone_is_refused(client: TestClient, ckpt: tuple[str, str]) -> None:
    from api.core.security import sign_checkpoint_link

    job_id, ckpt_id = ckpt
    key_id = int(query_of(create_link(client, *ckpt)["url"])["key"])
    _, key_hash = key_row(key_id)  # everything a database reader has
    expires = int(time.time()) + 600
    forgeries = [
        # The old scheme: HMAC keyed by the stored hash over job:checkpoint:expires.
        hmac.new(key_hash.encode(), f"{job_id}:{ckpt_id}:{expires}".encode(), hashlib.sha256).hexdigest(),
        # The new message with the hash (or nothing) standing in for the server secret.
        sign_checkpoint_link(key_hash.encode(), key_id, key_hash, job_id, ckpt_id, expires),
        sign_checkpoint_link(b"", key_id, key_hash, job_id, ckpt_id, expires),
    ]
    for signature in forgeries:
        r = fetch(client, content_url(job_id, ckpt_id, key=key_id, expires=expires, signature=signature))
        assert r.status_code == 403 and (error_of(r)["code"], error_of(r)["param"]) == (
            "invalid_signature",
            "signature",
        )
    # The same link signed with the server secret opens: only the secret was missing.
    assert fetch(client, minted(job_id, ckpt_id, key_id, key_hash, expires)).status_code == 200


def test_the_signature_binds_the_key_id(client: TestClient, ckpt: tuple[str, str]) -> None:
    """A link signed for one key of the tenant does not open when it names another key of the tenant."""
    job_id, ckpt_id = ckpt
    second = {"Authorization": f"Bearer {make_key('acme')}"}
    first_link = create_link(client, *ckpt)
    second_key = int(query_of(create_link(client, *ckpt, headers=second)["url"])["key"])
    q = query_of(first_link["url"])
    swapped = content_url(job_id, ckpt_id, key=second_key, expires=q["expires"], signature=q["signature"])
    r = fetch(client, swapped)
    assert r.status_code == 403 and error_of(r)["code"] == "invalid_signature"


def test_the_lifetime_cap_holds_on_every_use(client: TestClient, ckpt: tuple[str, str]) -> None:
    from api.core.security import LINK_CLOCK_SKEW_S, MAX_LINK_LIFETIME_S

    job_id, ckpt_id = ckpt
    key_id, key_hash = key_row(int(query_of(create_link(client, *ckpt)["url"])["key"]))
    now = int(time.time())
    for expires in (now + 100 * YEAR, now + MAX_LINK_LIFETIME_S + LINK_CLOCK_SKEW_S + 30):
        r = fetch(client, minted(job_id, ckpt_id, key_id, key_hash, expires))  # a valid signature
        assert r.status_code == 403, expires
        assert (error_of(r)["code"], error_of(r)["param"]) == ("link_lifetime_exceeded", "expires")
    # The longest link the API hands out still works, and an expired one is still refused.
    assert (
        fetch(client, minted(job_id, ckpt_id, key_id, key_hash, now + MAX_LINK_LIFETIME_S)).status_code == 200
    )
    assert fetch(client, create_link(client, *ckpt, expires_in=MAX_LINK_LIFETIME_S)["url"]).status_code == 200
    r = fetch(client, minted(job_id, ckpt_id, key_id, key_hash, now - 1))
    assert r.status_code == 403 and error_of(r)["code"] == "link_expired"


def test_the_cap_is_the_creation_bound() -> None:
    from api.core.security import MAX_LINK_LIFETIME_S
    from api.schemas.checkpoint_links import CheckpointLinkCreate

    bounds = [getattr(m, "le", None) for m in CheckpointLinkCreate.model_fields["expires_in"].metadata]
    assert MAX_LINK_LIFETIME_S in bounds


def test_revoking_the_key_kills_even_a_hand_minted_link(client: TestClient, ckpt: tuple[str, str]) -> None:
    from api.db.session import session_scope
    from api.services.keys import revoke_key

    job_id, ckpt_id = ckpt
    other = make_key("acme")
    link = create_link(client, *ckpt, headers={"Authorization": f"Bearer {other}"})
    key_id, key_hash = key_row(int(query_of(link["url"])["key"]))
    by_hand = minted(job_id, ckpt_id, key_id, key_hash, int(time.time()) + 600)
    assert fetch(client, link["url"]).status_code == 200 and fetch(client, by_hand).status_code == 200
    with session_scope() as s:
        assert revoke_key(s, other)
    for url in (link["url"], by_hand):
        r = fetch(client, url)
        assert r.status_code == 403 and error_of(r)["code"] == "invalid_signature"


def test_changing_the_secret_invalidates_links(
    client: TestClient, ckpt: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    link = create_link(client, *ckpt)
    assert fetch(client, link["url"]).status_code == 200
    monkeypatch.setenv("JUICE_SECRET_KEY", "another-secret-" + "x" * 32)
    from api.core.config import get_settings

    get_settings.cache_clear()
    r = fetch(client, link["url"])
    assert r.status_code == 403 and error_of(r)["code"] == "invalid_signature"
    assert fetch(client, create_link(client, *ckpt)["url"]).status_code == 200


# --- where the secret comes from -------------------------------------------------------------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_embedded_secret_is_made_once_0600_and_shared(tmp_path: Path) -> None:
    from api.core.config import Settings
    from api.core.security import server_secret

    home = tmp_path / "fresh-home"  # does not exist yet
    first, second = Settings(home=home), Settings(home=home)
    assert first.is_sqlite and first.secret_key.get_secret_value() == ""
    value = server_secret(first)
    assert len(value) == 64  # 32 random bytes, hex
    assert server_secret(second) == value == server_secret(Settings(home=home))
    path = home / "secret_key"
    assert path.read_text().strip() == value.decode()
    assert mode_of(path) == 0o600 and mode_of(home) == 0o700
    assert [p.name for p in home.iterdir()] == ["secret_key"]  # no temporary file left behind


def test_processes_starting_at_once_agree_on_the_secret(tmp_path: Path) -> None:
    from api.core.security import load_or_create_secret_file

    path = tmp_path / "home" / "secret_key"
    barrier = threading.Barrier(8)
    found: list[str] = []

    def start() -> None:
        barrier.wait()
        found.append(load_or_create_secret_file(path))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 8 and set(found) == {path.read_text().strip()}
    assert sorted(p.name for p in path.parent.iterdir()) == ["secret_key"]


def test_a_configured_secret_wins_and_must_be_long_enough(tmp_path: Path) -> None:
    from api.core.config import Settings
    from api.core.security import SecretKeyError, server_secret

    strong = "s" * 40
    configured = Settings(home=tmp_path / "h", secret_key=strong)
    assert server_secret(configured) == strong.encode()
    assert strong not in repr(configured)  # SecretStr: never in a repr, hence never in a log
    assert not (tmp_path / "h").exists()  # nothing generated when one is configured
    with pytest.raises(SecretKeyError, match="JUICE_SECRET_KEY is too short"):
        server_secret(Settings(home=tmp_path / "h", secret_key="short"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "secret_key").write_text("\n")
    with pytest.raises(SecretKeyError, match="holds no usable secret"):
        server_secret(Settings(home=tmp_path / "bad"))


PG = "postgresql+psycopg://nobody@127.0.0.1:1/nothing"


def test_production_without_a_secret_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.core.config import Settings
    from api.core.security import SecretKeyError, server_secret

    with pytest.raises(SecretKeyError, match="JUICE_SECRET_KEY is not set"):
        server_secret(Settings(home=tmp_path / "h", database_url=PG))
    assert not (tmp_path / "h").exists()  # no per-process secret was generated

    # The app's startup refuses...
    monkeypatch.setenv("JUICE_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("JUICE_DATABASE_URL", PG)
    monkeypatch.delenv("JUICE_SECRET_KEY", raising=False)
    clear_caches()
    try:
        from api.main import create_app

        with pytest.raises(SecretKeyError, match="JUICE_SECRET_KEY"), TestClient(create_app()):
            pass
    finally:
        clear_caches()

    # ...and so does `juice api`, with the message and before binding a port.
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUICE_")}
    env.update(JUICE_HOME=str(tmp_path / "h"), JUICE_DATABASE_URL=PG, JUICE_PORT="1")
    out = subprocess.run(
        [sys.executable, "-m", "juice.cli", "api"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "JUICE_SECRET_KEY is not set" in out.stderr and "non-SQLite" in out.stderr
