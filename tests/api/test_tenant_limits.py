"""Per-tenant limits over real HTTP on the in-process app (SQLite): the queued-jobs cap (429, nothing
written), the request rate (token bucket, 429 with Retry-After, on every way in), and the running cap
as a worker's claim sees it. Other tenants are never affected by one tenant's limits."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.ratelimit import TokenBuckets
from tests.api.conftest import make_key
from tests.helpers import chat_jsonl, sft_job_body, upload

MakeClient = Callable[..., TestClient]


@pytest.fixture()
def make_client(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeClient]:
    """make_client(tenant, **settings): a client of a fresh app whose settings have these JUICE_ values."""
    from api.core.config import get_settings
    from api.main import create_app

    opened: list[TestClient] = []
    app = None

    def make(tenant: str, **settings: object) -> TestClient:
        nonlocal app
        if settings:
            for name, value in settings.items():
                monkeypatch.setenv(f"JUICE_{name.upper()}", str(value))
            get_settings.cache_clear()
            app = None
        if app is None:
            app = create_app()
        c = TestClient(app, base_url="http://testserver/v1")
        c.__enter__()
        c.headers["Authorization"] = f"Bearer {make_key(tenant)}"
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.__exit__(None, None, None)


def _counts() -> tuple[int, int]:
    """(jobs, job events) in the database."""
    from api.db.session import session_scope
    from api.db.tables import Job, JobEvent

    with session_scope() as s:
        return (
            s.scalar(select(func.count()).select_from(Job)) or 0,
            s.scalar(select(func.count()).select_from(JobEvent)) or 0,
        )


# ------------------------------------------------------------------------------------------------------
# Queued jobs per tenant
# ------------------------------------------------------------------------------------------------------


def test_queued_cap_refuses_with_429_and_writes_nothing(make_client: MakeClient) -> None:
    acme = make_client("acme", max_queued_jobs_per_tenant=3, rate_limit_per_s=0)
    train = upload(acme, chat_jsonl(4))
    jobs = [acme.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train["id"])) for _ in range(3)]
    assert [r.status_code for r in jobs] == [200, 200, 200]
    before = _counts()

    r = acme.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train["id"]))
    assert r.status_code == 429, r.text
    assert r.headers["Retry-After"] == "60"
    err = r.json()["error"]
    assert err["type"] == "rate_limit_error" and err["code"] == "too_many_queued_jobs"
    assert "3 queued" in err["message"] and "max_queued_jobs_per_tenant = 3" in err["message"]
    assert _counts() == before  # no job row, no event
    assert len(acme.get("/fine_tuning/jobs").json()["data"]) == 3

    # Another tenant is not counted against acme's cap.
    other = make_client("globex")
    other_train = upload(other, chat_jsonl(4))
    assert (
        other.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", other_train["id"])).status_code == 200
    )

    # A cancelled job leaves the queue: there is room again.
    assert acme.post(f"/fine_tuning/jobs/{jobs[0].json()['id']}/cancel").status_code == 200
    assert acme.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train["id"])).status_code == 200
    assert acme.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train["id"])).status_code == 429


def test_idempotent_replay_is_not_refused_by_the_cap(make_client: MakeClient) -> None:
    acme = make_client("acme", max_queued_jobs_per_tenant=1, rate_limit_per_s=0)
    train = upload(acme, chat_jsonl(4))
    body = sft_job_body("tiny-llama", train["id"])
    first = acme.post("/fine_tuning/jobs", json=body, headers={"Idempotency-Key": "k1"})
    again = acme.post("/fine_tuning/jobs", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 200
    assert first.json()["id"] == again.json()["id"]


def test_concurrent_creates_never_exceed_the_cap(make_client: MakeClient) -> None:
    acme = make_client("acme", max_queued_jobs_per_tenant=3, rate_limit_per_s=0)
    train = upload(acme, chat_jsonl(4))
    statuses: list[int] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        statuses.append(
            acme.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train["id"])).status_code
        )

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * 3 + [429] * 5
    assert _counts()[0] == 3


def test_zero_means_no_queued_cap(make_client: MakeClient) -> None:
    acme = make_client("acme", max_queued_jobs_per_tenant=0, rate_limit_per_s=0)
    train = upload(acme, chat_jsonl(4))
    for _ in range(5):
        assert acme.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train["id"])).status_code == 200


# ------------------------------------------------------------------------------------------------------
# Requests per second per tenant
# ------------------------------------------------------------------------------------------------------


def test_token_bucket_arithmetic() -> None:
    now = [100.0]
    buckets = TokenBuckets(2.0, 3, clock=lambda: now[0])
    assert [buckets.take(1) for _ in range(3)] == [0, 0, 0]  # the burst
    assert buckets.take(1) == 1  # 1 token at 2/s: 0.5 s, rounded up to a whole second
    assert buckets.take(2) == 0  # another key has its own bucket
    now[0] += 0.5
    assert buckets.take(1) == 0
    now[0] += 100
    assert [buckets.take(1) for _ in range(4)] == [0, 0, 0, 1]  # refills to the burst, no further
    slow = TokenBuckets(0.1, 1, clock=lambda: now[0])
    assert slow.take(1) == 0
    assert slow.take(1) == 10  # Retry-After is the whole wait
    with pytest.raises(ValueError):
        TokenBuckets(0, 1)


def test_rate_limit_429_with_retry_after_and_other_tenants_unaffected(make_client: MakeClient) -> None:
    acme = make_client("acme", rate_limit_per_s=0.5, rate_limit_burst=3)
    globex = make_client("globex")
    assert [acme.get("/models").status_code for _ in range(3)] == [200, 200, 200]
    r = acme.get("/models")
    assert r.status_code == 429, r.text
    err = r.json()["error"]
    assert err["type"] == "rate_limit_error" and err["code"] == "rate_limit_exceeded"
    retry_after = int(r.headers["Retry-After"])
    assert 1 <= retry_after <= 2  # one token at 0.5/s
    assert "0.5 requests per second" in err["message"]
    # Every authenticated route counts, the streaming and download ones too.
    job_path = "/fine_tuning/jobs/ftjob-doesnotexist"
    for path in (
        "/files",
        job_path,
        f"{job_path}/metrics/stream",
        f"{job_path}/checkpoints/ftckpt-x/content",
    ):
        assert acme.get(path).status_code == 429, path
    # Another tenant has its own bucket; an unauthenticated request is a 401, not counted.
    assert [globex.get("/models").status_code for _ in range(3)] == [200, 200, 200]
    assert acme.get("/models", headers={"Authorization": "Bearer nope"}).status_code == 401
    time.sleep(retry_after)
    assert acme.get("/models").status_code == 200


def test_signed_link_downloads_count_against_the_rate(make_client: MakeClient) -> None:
    """A signed link is admitted after its signature checks out: a bad one stays a 403 (not counted),
    a good one takes a token of the link key's tenant (whose bucket is empty here: 429)."""
    from api.core.config import get_settings
    from api.core.security import hash_api_key, server_secret, sign_checkpoint_link
    from api.db.session import session_scope
    from api.db.tables import ApiKey

    acme = make_client("acme", rate_limit_per_s=0.01, rate_limit_burst=1)
    bearer = acme.headers["Authorization"][7:]
    with session_scope() as s:
        key_id = s.scalar(select(ApiKey.id).where(ApiKey.key_hash == hash_api_key(bearer)))
    assert key_id is not None
    expires = int(time.time()) + 600
    job_id, ckpt_id = "ftjob-x", "ftckpt-x"
    sig = sign_checkpoint_link(
        server_secret(get_settings()), key_id, hash_api_key(bearer), job_id, ckpt_id, expires
    )
    path = f"/fine_tuning/jobs/{job_id}/checkpoints/{ckpt_id}/content"
    anonymous = TestClient(acme.app, base_url="http://testserver/v1")
    good = {"key": key_id, "expires": expires, "signature": sig}
    assert anonymous.get(path, params=good).status_code == 404  # admitted: the token is taken
    assert anonymous.get(path, params={**good, "signature": "00"}).status_code == 403
    r = anonymous.get(path, params=good)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert acme.get("/models").status_code == 429  # one bucket for the tenant, however it comes in


def test_rate_limit_zero_turns_it_off(make_client: MakeClient) -> None:
    acme = make_client("acme", rate_limit_per_s=0, rate_limit_burst=1)
    assert {acme.get("/models").status_code for _ in range(30)} == {200}


def test_default_rate_is_generous(make_client: MakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from api.core.config import Settings

    monkeypatch.delenv("JUICE_RATE_LIMIT_PER_S")  # app_env turns it off for the other API tests
    s = Settings()
    assert s.rate_limit_per_s >= 10 and s.rate_limit_burst >= 50
    acme = make_client("acme", rate_limit_burst=s.rate_limit_burst)  # the defaults, applied
    assert {acme.get("/models").status_code for _ in range(s.rate_limit_burst)} == {200}
    assert math.isclose(s.rate_limit_per_s, 20.0)


# ------------------------------------------------------------------------------------------------------
# Running jobs per tenant (the worker's claim)
# ------------------------------------------------------------------------------------------------------


def test_running_cap_parks_jobs_and_a_finish_releases_one(make_client: MakeClient) -> None:
    from api.core.config import get_settings
    from api.db.session import session_scope
    from api.db.tables import Job, JobEvent, JobStatus
    from worker import lifecycle

    acme = make_client("acme", max_running_jobs_per_tenant=2, rate_limit_per_s=0)
    globex = make_client("globex")
    train = upload(acme, chat_jsonl(4))
    a = [
        acme.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train["id"])).json()["id"]
        for _ in range(4)
    ]
    g_train = upload(globex, chat_jsonl(4))
    g = globex.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", g_train["id"])).json()["id"]
    settings = get_settings()

    def claim(job_id: str, worker: str = "w:1") -> bool:
        with session_scope() as s:
            return lifecycle.claim(s, job_id, worker, settings) is not None

    assert [claim(j) for j in a] == [True, True, False, False]
    assert claim(g)  # another tenant's job is not held back by acme's cap
    with session_scope() as s:
        rows = {j.id: j for j in s.scalars(select(Job).where(Job.id.in_(a)))}
        assert [rows[j].status for j in a] == ["running", "running", "queued", "queued"]
        assert rows[a[2]].enqueued_at is None and rows[a[3]].enqueued_at is None  # parked: no message
        waiting = s.scalars(select(JobEvent.message).where(JobEvent.job_id == a[2])).all()
        assert sum("Waiting for a place" in m for m in waiting) == 1
        # Nothing to release while acme is at its cap.
        assert lifecycle.release_parked(s, rows[a[0]].tenant_id, settings) == []
    assert not claim(a[2])  # a second delivery is refused again, without a second event
    with session_scope() as s:
        assert lifecycle.finish(s, a[0], "w:1", JobStatus.SUCCEEDED, event="done")
        tenant_id = s.scalar(select(Job.tenant_id).where(Job.id == a[0]))
        assert tenant_id is not None
        assert lifecycle.release_parked(s, tenant_id, settings) == [a[2]]  # the oldest, one place
        assert lifecycle.release_parked(s, tenant_id, settings) == []  # a[2] is sent: the place is taken
    assert claim(a[2])
    assert not claim(a[3])


def test_running_cap_zero_means_no_cap(make_client: MakeClient) -> None:
    from api.core.config import get_settings
    from api.db.session import session_scope
    from worker import lifecycle

    acme = make_client("acme", max_running_jobs_per_tenant=0, rate_limit_per_s=0)
    train = upload(acme, chat_jsonl(4))
    ids = [
        acme.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train["id"])).json()["id"]
        for _ in range(5)
    ]
    for job_id in ids:
        with session_scope() as s:
            assert lifecycle.claim(s, job_id, "w:1", get_settings()) is not None
