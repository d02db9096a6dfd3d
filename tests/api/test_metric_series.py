"""GET /fine_tuning/jobs/{id}/metrics/series on the real app + SQLite, and its series builder."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.services.metric_series import collect
from tests.api.conftest import make_key
from tests.helpers import sft_job_body

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture()
def job_id(client: TestClient, train_file: dict) -> str:
    r = client.post("/fine_tuning/jobs", json=sft_job_body("tiny-llama", train_file["id"]))
    assert r.status_code == 200, r.text
    return r.json()["id"]


def add_metrics(job_id: str, rows: list[tuple[int, dict[str, float]]]) -> list[int]:
    """Metric rows as the worker writes them, one second apart; their seqs."""
    from api.db.session import session_scope
    from api.db.tables import JobMetric

    with session_scope() as s:
        added = [
            JobMetric(job_id=job_id, step=step, values=values, created_at=T0 + timedelta(seconds=i))
            for i, (step, values) in enumerate(rows)
        ]
        s.add_all(added)
        s.flush()
        return [m.seq for m in added]


def series_of(client: TestClient, job_id: str, **params: Any) -> dict[str, Any]:
    r = client.get(f"/fine_tuning/jobs/{job_id}/metrics/series", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_shape_and_values_match_the_metrics_rows(client: TestClient, job_id: str) -> None:
    rows = [(s, {"train/loss": 3.0 - s / 10, "train/lr": 1e-4}) for s in range(1, 11)]
    rows.insert(5, (5, {"eval/loss": 2.5}))  # eval logged in its own row, at a train step
    seqs = add_metrics(job_id, rows)
    body = series_of(client, job_id)
    assert set(body) == {"object", "job_id", "last_seq", "series"}
    assert body["object"] == "fine_tuning.job.metric_series" and body["job_id"] == job_id
    assert body["last_seq"] == max(seqs)
    assert list(body["series"]) == ["eval/loss", "train/loss", "train/lr"]
    loss = body["series"]["train/loss"]
    assert set(loss) == {"step", "time", "value", "total_points", "downsampled"}
    assert loss["step"] == list(range(1, 11)) and loss["total_points"] == 10 and loss["downsampled"] is False
    assert loss["value"] == pytest.approx([3.0 - s / 10 for s in range(1, 11)])
    assert body["series"]["eval/loss"] == {
        "step": [5],
        "time": [(T0 + timedelta(seconds=5)).timestamp()],
        "value": [2.5],
        "total_points": 1,
        "downsampled": False,
    }
    # Each point's time is its row's created_at, as the paged endpoint reports it.
    paged = client.get(f"/fine_tuning/jobs/{job_id}/metrics", params={"names": "train/loss"}).json()["data"]
    assert loss["time"] == [p["created_at"] for p in paged]


def test_series_are_ordered_by_step_not_by_arrival(client: TestClient, job_id: str) -> None:
    add_metrics(job_id, [(1, {"a": 1.0}), (3, {"a": 3.0}), (2, {"a": 2.0}), (4, {"a": 4.0})])
    a = series_of(client, job_id)["series"]["a"]
    assert a["step"] == [1, 2, 3, 4] and a["value"] == [1.0, 2.0, 3.0, 4.0]
    assert a["time"] == [(T0 + timedelta(seconds=i)).timestamp() for i in (0, 2, 1, 3)]


def test_a_step_repeated_after_a_resume_keeps_the_latest_row(client: TestClient, job_id: str) -> None:
    # Attempt 1 reached step 6; attempt 2 resumed from step 3 and replayed 4..8.
    first = [(s, {"train/loss": 10.0 + s}) for s in range(1, 7)]
    second = [(s, {"train/loss": 20.0 + s}) for s in range(4, 9)]
    seqs = add_metrics(job_id, first + second)
    body = series_of(client, job_id)
    loss = body["series"]["train/loss"]
    assert loss["step"] == list(range(1, 9)) and loss["total_points"] == 8
    assert loss["value"] == [11.0, 12.0, 13.0, 24.0, 25.0, 26.0, 27.0, 28.0]
    assert loss["time"][3] == (T0 + timedelta(seconds=6)).timestamp()  # the replayed row's time
    assert body["last_seq"] == max(seqs)


def test_non_finite_values_are_dropped(client: TestClient, job_id: str) -> None:
    add_metrics(
        job_id,
        [
            (1, {"x": 1.0, "y": 1.0}),
            (2, {"x": math.nan, "y": 2.0}),
            (3, {"x": math.inf}),
            (4, {"x": -math.inf, "y": 4.0}),
            (5, {"x": 5.0}),
        ],
    )
    series = series_of(client, job_id)["series"]
    assert series["x"]["step"] == [1, 5] and series["x"]["value"] == [1.0, 5.0]
    assert series["x"]["total_points"] == 2
    assert series["y"]["step"] == [1, 2, 4]


def test_downsampling_keeps_the_ends_and_a_spike(client: TestClient, job_id: str) -> None:
    values = [1.0 + 0.001 * (s % 7) for s in range(1, 1001)]
    values[536] = 40.0  # step 537 diverged
    add_metrics(
        job_id,
        [(s, {"train/loss": v, "train/lr": 1e-4}) for s, v in zip(range(1, 1001), values, strict=True)],
    )
    loss = series_of(client, job_id, max_points=10)["series"]["train/loss"]
    assert len(loss["step"]) == len(loss["time"]) == len(loss["value"]) == 10
    assert loss["step"][0] == 1 and loss["step"][-1] == 1000 and 537 in loss["step"]
    assert loss["value"][loss["step"].index(537)] == 40.0
    assert loss["step"] == sorted(loss["step"])
    assert loss["total_points"] == 1000 and loss["downsampled"] is True
    whole = series_of(client, job_id, max_points=1000)["series"]["train/loss"]
    assert whole["downsampled"] is False and whole["step"] == list(range(1, 1001))


def test_names_filter_keeps_those_series_and_the_full_cursor(client: TestClient, job_id: str) -> None:
    seqs = add_metrics(
        job_id,
        [
            (1, {"train/loss": 1.0, "train/lr": 0.1}),
            (1, {"eval/loss": 2.0}),
            (2, {"train/loss": 0.5, "train/lr": 0.1}),
        ],
    )
    body = series_of(client, job_id, names="train/loss, eval/loss,nope")
    assert list(body["series"]) == ["eval/loss", "train/loss"]
    # The cursor counts rows of every series: a follower streaming after it misses nothing.
    assert body["last_seq"] == max(seqs)
    only = series_of(client, job_id, names="nope")
    assert only["series"] == {} and only["last_seq"] == max(seqs)


def test_last_seq_is_the_last_metrics_row_seq(client: TestClient, job_id: str) -> None:
    add_metrics(job_id, [(s, {"train/loss": float(s)}) for s in range(1, 30)])
    rows = client.get(f"/fine_tuning/jobs/{job_id}/metrics").json()["data"]
    assert series_of(client, job_id)["last_seq"] == rows[-1]["seq"]
    # The live stream resumes exactly there: nothing after it yet.
    tail = client.get(f"/fine_tuning/jobs/{job_id}/metrics", params={"after_seq": rows[-1]["seq"]}).json()
    assert tail["data"] == []


def test_empty_job(client: TestClient, job_id: str) -> None:
    body = series_of(client, job_id)
    assert body == {"object": "fine_tuning.job.metric_series", "job_id": job_id, "last_seq": 0, "series": {}}


@pytest.mark.parametrize("value", ["9", "20001", "-1", "lots"])
def test_max_points_out_of_bounds_is_a_400_naming_it(client: TestClient, job_id: str, value: str) -> None:
    r = client.get(f"/fine_tuning/jobs/{job_id}/metrics/series", params={"max_points": value})
    assert r.status_code == 400
    assert set(r.json()) == {"error"}
    err = r.json()["error"]
    assert err["param"] == "max_points" and err["code"] == "invalid_value"
    assert err["type"] == "invalid_request_error"


def test_another_tenants_job_is_a_404(client: TestClient, job_id: str) -> None:
    add_metrics(job_id, [(1, {"train/loss": 1.0})])
    r = client.get(
        f"/fine_tuning/jobs/{job_id}/metrics/series",
        headers={"Authorization": f"Bearer {make_key('mallory')}"},
    )
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "fine_tuning_job_not_found"
    assert client.get("/fine_tuning/jobs/ftjob-nope/metrics/series").status_code == 404
    assert (
        client.get(
            f"/fine_tuning/jobs/{job_id}/metrics/series", headers={"Authorization": "Bearer sk-juice-nope"}
        ).status_code
        == 401
    )


def reference_collect(
    steps: list[int], points: list[dict[str, float]], names: frozenset[str] | None
) -> dict[str, tuple[list[int], list[float], list[int]]]:
    """The contract spelled out point by point: the fast column-wise `collect` must agree with it."""
    latest: dict[str, dict[int, tuple[float, int]]] = {}
    for row, (step, point) in enumerate(zip(steps, points, strict=True)):  # rows come sorted by (step, seq)
        for name, value in point.items():
            if (names is None or name in names) and value is not None and math.isfinite(value):
                latest.setdefault(name, {})[step] = (value, row)
    return {
        name: (
            sorted(by_step),
            [by_step[s][0] for s in sorted(by_step)],
            [by_step[s][1] for s in sorted(by_step)],
        )
        for name, by_step in sorted(latest.items())
    }


@pytest.mark.parametrize("seed", range(30))
def test_collect_matches_the_point_by_point_reference(seed: int) -> None:
    rng = random.Random(seed)
    steps = sorted(rng.randint(1, 60) for _ in range(rng.randint(0, 120)))  # repeats: resumes, eval rows
    specials = [math.nan, math.inf, -math.inf, None]
    points = [
        {
            name: (rng.choice(specials) if rng.random() < 0.1 else rng.gauss(0, 1))
            for name in ("a", "b", "c")
            if rng.random() < 0.7
        }
        for _ in steps
    ]
    names = rng.choice([None, frozenset({"a"}), frozenset({"b", "zzz"})])
    got = {name: (s.steps, s.values, s.rows) for name, s in collect(steps, points, names).items()}
    assert got == reference_collect(steps, points, names)
    assert list(got) == sorted(got)
