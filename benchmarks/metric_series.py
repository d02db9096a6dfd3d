"""The downsampled series endpoint against reading the same rows through the paged `/metrics` endpoint.

    .venv/bin/python benchmarks/metric_series.py [--rows 100000] [--series 5] [--max-points 2000] [--no-pg]

A job with `--rows` metric rows of `--series` values each is written to a fresh SQLite database (and to a
fresh Postgres database when one answers at $JUICE_TEST_PG_ADMIN). Both endpoints are called through the
real app (TestClient, real auth and serialisation): the series endpoint once, the peer page by page
(limit 10000, its default) until `has_more` is false. The ratio is series time / paged time, same run.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient
from sqlalchemy import insert

from benchmarks.timing import best_of

PG_ADMIN = os.environ.get("JUICE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
CACHES = ("api.core.config:get_settings", "api.db.session:get_engine", "api.db.session:get_sessionmaker")
NAMES = (
    "train/loss",
    "train/lr",
    "train/grad_norm",
    "train/tokens_per_s",
    "train/token_accuracy",
    "eval/loss",
    "eval/token_accuracy",
    "train/tokens",
)


def clear_caches() -> None:
    for spec in CACHES:
        mod, name = spec.split(":")
        getattr(importlib.import_module(mod), name).cache_clear()


@contextmanager
def configured(database_url: str) -> Iterator[None]:
    """Point the app's settings at `database_url` (and a scratch JUICE_HOME) for the block."""
    with tempfile.TemporaryDirectory() as home:
        saved = {k: os.environ.get(k) for k in ("JUICE_HOME", "JUICE_DATABASE_URL")}
        os.environ["JUICE_HOME"] = home
        os.environ["JUICE_DATABASE_URL"] = database_url
        clear_caches()
        try:
            yield
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
            clear_caches()


@contextmanager
def fresh_postgres() -> Iterator[str | None]:
    """A new Postgres database's URL (dropped afterwards), or None when no server answers."""
    try:
        import psycopg

        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except Exception as exc:  # no server: the SQLite figure still stands on its own
        print(f"postgres: skipped ({type(exc).__name__}: {exc})".splitlines()[0])
        yield None
        return
    name = f"juice_bench_{uuid.uuid4().hex[:8]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed_job(rows: int, n_series: int) -> tuple[str, str]:
    """A tenant key and a job with `rows` metric rows, shaped like a real run's; returns (key, job_id)."""
    from api.db import migrate
    from api.db.session import get_engine, session_scope
    from api.db.tables import Job, JobMetric, JobStatus
    from api.services.keys import create_key

    migrate.upgrade()
    with session_scope() as s:
        key = create_key(s, "bench")
        job = Job(
            tenant_id=1,
            model="tiny-llama",
            training_file="file-x",
            method_type="sft",
            hyperparameters={"n_epochs": 1},
            seed=0,
            status=JobStatus.SUCCEEDED,  # seeded as finished, not moved there
        )
        s.add(job)
        s.flush()
        job_id = job.id
    rng = random.Random(0)
    names = NAMES[:n_series]
    t0 = datetime(2026, 11, 23, tzinfo=UTC)
    batch = []
    with get_engine().begin() as conn:
        for step in range(1, rows + 1):
            loss = 3.0 * math.exp(-step / (rows / 4)) + 0.3 + 0.05 * rng.random()
            values = {name: loss * (1 + i) for i, name in enumerate(names)}
            batch.append(
                {
                    "job_id": job_id,
                    "step": step,
                    "values": values,
                    "created_at": t0 + timedelta(seconds=step * 0.5),
                }
            )
            if len(batch) == 10000:
                conn.execute(insert(JobMetric), batch)
                batch = []
        if batch:
            conn.execute(insert(JobMetric), batch)
    return key, job_id


def measure(label: str, database_url: str, args: argparse.Namespace) -> None:
    with configured(database_url):
        t0 = time.perf_counter()
        key, job_id = seed_job(args.rows, args.series)
        seeded = time.perf_counter() - t0
        from api.main import create_app

        with TestClient(create_app(), base_url="http://bench/v1") as client:
            client.headers["Authorization"] = f"Bearer {key}"
            base = f"/fine_tuning/jobs/{job_id}/metrics"

            def series() -> None:
                r = client.get(f"{base}/series", params={"max_points": args.max_points})
                assert r.status_code == 200, r.text
                body = r.json()
                assert len(body["series"]) == args.series
                assert all(len(s["step"]) <= args.max_points for s in body["series"].values())

            def paged() -> None:
                after, seen = 0, 0
                while True:
                    page = client.get(base, params={"after_seq": after}).json()
                    seen += len(page["data"])
                    if not page["has_more"]:
                        break
                    after = page["next_after_seq"]
                assert seen == args.rows, seen

            series()  # warm: first-request imports and connection set-up are not the endpoint's cost
            t_series = best_of(args.repeat, series)
            t_paged = best_of(args.repeat, paged)
    print(
        f"{label:<9}{args.rows:>9}{args.series:>8}{args.max_points:>7}{t_series:>11.3f}{t_paged:>11.3f}"
        f"{t_series / t_paged:>8.3f}   (seeded in {seeded:.1f} s)"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--series", type=int, default=5, choices=range(1, len(NAMES) + 1))
    p.add_argument("--max-points", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=3, help="best of this many calls")
    p.add_argument("--no-pg", action="store_true", help="SQLite only")
    args = p.parse_args()
    print(f"{'database':<9}{'rows':>9}{'series':>8}{'max':>7}{'series s':>11}{'paged s':>11}{'ratio':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        measure("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}", args)
    if not args.no_pg:
        with fresh_postgres() as url:
            if url:
                measure("postgres", url, args)


if __name__ == "__main__":
    main()
