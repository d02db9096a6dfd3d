"""Webhooks against a real HTTP receiver on loopback: job events are signed per the Standard Webhooks
spec (checked with the `standardwebhooks` reference library), retried with backoff under the same
webhook-id until a 2xx, given up after the last attempt, recorded as job events, filtered by event type
and tenant; receivers on private addresses are refused unless allowed."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.api.conftest import make_key
from tests.helpers import chat_jsonl, sft_job_body, upload


class Receiver:
    """Records every POST; answers with the next status of `script` (then 200)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.script: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's name for it
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.script.pop(0) if receiver.script else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture()
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUICE_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def _deliver() -> int:
    from api.db.session import session_scope
    from api.services.webhooks import deliver_due

    with session_scope() as s:
        return deliver_due(s)


def _messages(client: TestClient, job_id: str) -> list[str]:
    data = client.get(f"/fine_tuning/jobs/{job_id}/events", params={"limit": 200}).json()["data"]
    return [e["message"] for e in data]


def test_a_succeeded_job_is_announced_signed(
    allow_loopback: None, client: TestClient, receiver: Receiver
) -> None:
    from worker.runner import run_job

    created = client.post("/webhooks", json={"url": receiver.url})
    assert created.status_code == 200, created.text
    secret = created.json()["secret"]
    assert secret.startswith("whsec_") and created.json()["events"][0] == "fine_tuning.job.succeeded"
    assert (
        "secret" not in client.get("/webhooks").json()["data"][0]
        or not client.get("/webhooks").json()["data"][0]["secret"]
    )

    train = upload(client, chat_jsonl(4))
    job = client.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train["id"], n_epochs=1)).json()
    assert run_job(job["id"]) == "succeeded"
    assert receiver.requests == []  # sent by the dispatcher, not inside the job's transaction
    assert _deliver() == 1 and _deliver() == 0
    headers, body = receiver.requests[0]
    payload = Webhook(secret).verify(body, headers)  # the reference implementation accepts it
    assert payload["type"] == "fine_tuning.job.succeeded" and payload["data"] == {"id": job["id"]}
    assert payload["object"] == "event" and payload["id"] == headers["webhook-id"]
    assert f"Webhook fine_tuning.job.succeeded to {receiver.url} delivered (attempt 1)." in _messages(
        client, job["id"]
    )
    with pytest.raises(WebhookVerificationError):  # a tampered body does not verify
        Webhook(secret).verify(body.replace(b"succeeded", b"failed"), headers)


def test_failures_retry_with_backoff_under_one_id_then_give_up(
    allow_loopback: None, client: TestClient, receiver: Receiver
) -> None:
    from sqlalchemy import update

    from api.db.session import session_scope
    from api.db.tables import WebhookDelivery
    from api.services.webhooks import MAX_ATTEMPTS, RETRY_DELAYS_S

    client.post("/webhooks", json={"url": receiver.url, "events": ["fine_tuning.job.cancelled"]})
    train = upload(client, chat_jsonl(4))

    def due_now() -> None:
        with session_scope() as s:
            s.execute(update(WebhookDelivery).values(next_attempt_at=WebhookDelivery.created_at))
            s.commit()

    job = client.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train["id"])).json()
    client.post(f"/fine_tuning/jobs/{job['id']}/cancel")  # queued: cancelled at once, and announced
    receiver.script = [500, 503]
    assert _deliver() == 1 and _deliver() == 0  # the retry waits RETRY_DELAYS_S[0]
    due_now()
    assert _deliver() == 1
    due_now()
    assert _deliver() == 1
    ids = {h["webhook-id"] for h, _ in receiver.requests}
    assert len(receiver.requests) == 3 and len(ids) == 1  # one event, three attempts
    messages = _messages(client, job["id"])
    assert any(f"failed (HTTP 500); retrying in {RETRY_DELAYS_S[0]} s." in m for m in messages)
    assert any(f"failed (HTTP 503); retrying in {RETRY_DELAYS_S[1]} s." in m for m in messages)
    assert any("delivered (attempt 3)." in m for m in messages)

    # a receiver that never answers 2xx: given up after MAX_ATTEMPTS
    job = client.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train["id"])).json()
    client.post(f"/fine_tuning/jobs/{job['id']}/cancel")
    receiver.script = [500] * MAX_ATTEMPTS
    for _ in range(MAX_ATTEMPTS):
        due_now()
        assert _deliver() == 1
    due_now()
    assert _deliver() == 0
    assert any(f"given up after {MAX_ATTEMPTS} attempts" in m for m in _messages(client, job["id"]))


def test_event_filters_tenants_and_pause(
    allow_loopback: None, client: TestClient, receiver: Receiver
) -> None:
    other_key = make_key("neighbour")
    other = {"Authorization": f"Bearer {other_key}"}
    client.post("/webhooks", json={"url": receiver.url, "events": ["fine_tuning.job.paused"]})
    theirs = client.post("/webhooks", json={"url": receiver.url + "/theirs"}, headers=other).json()
    train = upload(client, chat_jsonl(4))
    job = client.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train["id"])).json()
    client.post(f"/fine_tuning/jobs/{job['id']}/pause")  # queued: paused at once
    client.post(f"/fine_tuning/jobs/{job['id']}/cancel")  # not subscribed: no event
    assert _deliver() == 1
    ((_, body),) = receiver.requests
    assert json.loads(body)["type"] == "fine_tuning.job.paused"
    # the neighbour's endpoint got nothing of ours, and is not ours to see or delete
    assert [e["id"] for e in client.get("/webhooks").json()["data"]] != [theirs["id"]]
    assert client.delete(f"/webhooks/{theirs['id']}").status_code == 404
    assert client.delete(f"/webhooks/{theirs['id']}", headers=other).status_code == 200


def test_private_receivers_are_refused_by_default(client: TestClient) -> None:
    for url in (
        "http://127.0.0.1:9/x",
        "http://10.0.0.8/x",
        "http://[::1]/x",
        "ftp://example.com/x",
        "https://t[x;gS]",  # found by the schemathesis run: urlsplit raises "Invalid IPv6 URL"
        "https://example.com:port/x",
    ):
        r = client.post("/webhooks", json={"url": url})
        assert r.status_code == 400 and r.json()["error"]["param"] == "url", (url, r.text)
    r = client.post(
        "/webhooks", json={"url": "https://example.com/x", "events": ["fine_tuning.job.exploded"]}
    )
    assert r.status_code in (400, 422)


def test_a_malformed_receiver_fails_alone(
    allow_loopback: None, client: TestClient, receiver: Receiver
) -> None:
    """A URL httpx cannot even parse (stored before today's checks, say) is that delivery's failure; the
    others in the pass still go out."""
    from sqlalchemy import update

    from api.db.session import session_scope
    from api.db.tables import WebhookEndpoint

    bad = client.post("/webhooks", json={"url": "http://placeholder.example/x"}).json()
    with session_scope() as s:
        s.execute(
            update(WebhookEndpoint).where(WebhookEndpoint.id == bad["id"]).values(url="http://exa mple.com/x")
        )
        s.commit()
    client.post("/webhooks", json={"url": receiver.url})
    train = upload(client, chat_jsonl(4))
    job = client.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train["id"])).json()
    client.post(f"/fine_tuning/jobs/{job['id']}/cancel")
    assert _deliver() == 2 and len(receiver.requests) == 1
    messages = _messages(client, job["id"])
    assert any("to http://exa mple.com/x failed" in m and "retrying in" in m for m in messages), messages
    assert any(f"to {receiver.url} delivered" in m for m in messages)
