"""An `after` cursor is looked up among the caller's own rows (issue 10, finding 9).

Another tenant's real id must answer exactly as a made-up one does, on every list, or the cursor is an
oracle for which ids exist elsewhere. Events and checkpoints are scoped to the job being listed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import make_key
from tests.api.live import live_client
from tests.helpers import chat_jsonl, sft_job_body, upload


@pytest.fixture()
def live(app_env: Path) -> Iterator[httpx.Client]:
    with live_client(make_key("acme")) as client:
        yield client


def new_job(client: httpx.Client, headers: dict[str, str] | None = None) -> str:
    f = client.post(
        "/files",
        headers=headers,
        files={"file": ("t.jsonl", chat_jsonl(2), "application/jsonl")},
        data={"purpose": "fine-tune"},
    )
    r = client.post("/fine_tuning/jobs", headers=headers, json=sft_job_body("tiny-llama", f.json()["id"]))
    assert r.status_code == 200, r.text
    return r.json()["id"]


def add_checkpoint(job_id: str, step: int) -> str:
    from api.db.session import session_scope
    from api.db.tables import Checkpoint

    with session_scope() as s:
        row = Checkpoint(
            job_id=job_id,
            step=step,
            kind="model",
            metrics={},
            storage_path=f"x/{job_id}/{step}",
            size_bytes=1,
        )
        s.add(row)
        s.flush()
        return row.id


def first_event(client: httpx.Client, job_id: str, headers: dict[str, str] | None = None) -> str:
    return client.get(f"/fine_tuning/jobs/{job_id}/events", headers=headers).json()["data"][0]["id"]


def assert_answers_like_a_bogus_id(client: httpx.Client, path: str, foreign_id: str) -> None:
    bogus_id = foreign_id[: foreign_id.index("-") + 1] + "0" * 24
    foreign = client.get(path, params={"after": foreign_id})
    bogus = client.get(path, params={"after": bogus_id})
    assert foreign.status_code == bogus.status_code == 404, (foreign.text, bogus.text)
    expected = bogus.json()["error"]
    expected["message"] = expected["message"].replace(bogus_id, foreign_id)  # the one difference: the id
    assert foreign.json() == {"error": expected} and expected["param"] == "after"


def test_another_tenants_ids_are_no_cursor_on_any_list(live: httpx.Client) -> None:
    other = {"Authorization": f"Bearer {make_key('globex')}"}
    mine, theirs = new_job(live), new_job(live, other)
    my_file = live.get("/files").json()["data"][0]["id"]
    their_file = live.get("/files", headers=other).json()["data"][0]["id"]
    my_ckpt, their_ckpt = add_checkpoint(mine, 1), add_checkpoint(theirs, 1)
    add_checkpoint(mine, 2)

    # Each list still pages by its own ids...
    def ids_after(path: str, cursor: str) -> list[str]:
        return [row["id"] for row in live.get(path, params={"after": cursor}).json()["data"]]

    assert ids_after("/files", upload(live, chat_jsonl(2))["id"]) == [my_file]
    assert ids_after("/fine_tuning/jobs", new_job(live)) == [mine]
    checkpoints = f"/fine_tuning/jobs/{mine}/checkpoints"
    assert ids_after(checkpoints, live.get(checkpoints).json()["data"][0]["id"]) == [my_ckpt]
    live.post(f"/fine_tuning/jobs/{mine}/cancel")  # a second event
    events = f"/fine_tuning/jobs/{mine}/events"
    assert len(ids_after(events, first_event(live, mine))) == 1

    # ...and another tenant's real ids are as unknown as made-up ones.
    assert_answers_like_a_bogus_id(live, "/files", their_file)
    assert_answers_like_a_bogus_id(live, "/fine_tuning/jobs", theirs)
    assert_answers_like_a_bogus_id(live, checkpoints, their_ckpt)
    assert_answers_like_a_bogus_id(live, events, first_event(live, theirs, other))


def test_a_cursor_from_another_of_my_jobs_is_no_position_in_this_one(live: httpx.Client) -> None:
    first, second = new_job(live), new_job(live)
    ckpt = add_checkpoint(second, 1)
    assert_answers_like_a_bogus_id(live, f"/fine_tuning/jobs/{first}/events", first_event(live, second))
    assert_answers_like_a_bogus_id(live, f"/fine_tuning/jobs/{first}/checkpoints", ckpt)


def test_a_cursor_outside_the_filters_is_still_a_position(live: httpx.Client) -> None:
    """Filters narrow the page, not the cursor: a job that left the filtered status since the last
    page (cancelled here) still marks where the next page starts."""
    older, cursor = new_job(live), new_job(live)
    page = live.get("/fine_tuning/jobs", params={"status": "queued", "limit": 1}).json()
    assert page["data"][0]["id"] == cursor
    live.post(f"/fine_tuning/jobs/{cursor}/cancel")
    r = live.get("/fine_tuning/jobs", params={"status": "queued", "after": cursor})
    assert r.status_code == 200 and [j["id"] for j in r.json()["data"]] == [older]
