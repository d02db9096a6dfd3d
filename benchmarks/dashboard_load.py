"""How fast the job page becomes interactive with a 100k-point metric series, in headless Chromium.

    .venv/bin/python benchmarks/dashboard_load.py [--steps 100000] [--runs 5]

A fresh embedded deployment (SQLite, `juice api` as a real process) holds two finished jobs written
straight into the database: a long one with `--steps` metric rows (train/loss, lr, grad_norm,
tokens_per_s every step; eval/loss every 100 steps) and, as the peer measured in the same run, a short
one with 100 rows of the same series. For each, Debian's Chromium (driven by Playwright) opens the job
page `--runs` times in a fresh browser context (cold: Plotly's bundle fetched too) and once more in the
same context (warm cache). Figures:
  ready   ms from navigation start until every chart is drawn and the controls are wired (the page
          sets body[data-ready]; its own performance.now() stamp)
  hover   ms from navigation start until a hover read-out appears over the loss chart
Medians are printed, with the ratio long job / short job.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def juice(args: list[str], env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-m", "juice.cli", *args],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def write_job(env: dict[str, str], tenant: str, steps: int) -> str:
    """A succeeded SFT job with `steps` metric rows, inserted in one transaction."""
    os.environ.update(env)
    from api.core.config import get_settings
    from api.db import session as db
    from api.db.tables import Job, JobMetric, JobStatus, Tenant

    get_settings.cache_clear(), db.get_engine.cache_clear(), db.get_sessionmaker.cache_clear()
    rng = random.Random(steps)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    with db.session_scope() as s:
        tenant_id = s.query(Tenant.id).filter(Tenant.name == tenant).scalar()
        job = Job(
            tenant_id=tenant_id,
            model="SmolLM2-135M-Instruct",
            training_file="file-bench",
            method_type="sft",
            hyperparameters={"n_epochs": 1, "batch_size": 8, "learning_rate": 2e-5},
            seed=0,
            status=JobStatus.SUCCEEDED,  # seeded as finished, not moved there
            total_steps=steps,
            current_step=steps,
            created_at=start,
            started_at=start,
            finished_at=start + timedelta(seconds=steps * 0.5),
        )
        s.add(job)
        s.flush()
        rows = []
        for i in range(1, steps + 1):
            loss = (
                2.5 * math.exp(-3 * i / steps)
                + 0.4
                + rng.gauss(0, 0.08)
                + (1.5 if rng.random() < 1e-4 else 0)
            )
            values = {
                "train/loss": loss,
                "train/lr": 2e-5 * (1 - i / steps),
                "train/grad_norm": abs(rng.gauss(1, 0.3)),
                "train/tokens_per_s": 9000 + rng.gauss(0, 500),
            }
            if i % 100 == 0:
                values["eval/loss"] = loss + 0.05
            rows.append(
                {
                    "job_id": job.id,
                    "step": i,
                    "values": values,
                    "created_at": start + timedelta(seconds=i * 0.5),
                }
            )
        s.execute(JobMetric.__table__.insert(), rows)
        return job.id


def measure(browser, base: str, key: str, job_id: str, context=None) -> tuple[float, float, object]:
    ctx = context or browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=base)
    ctx.add_init_script(f"window.sessionStorage.setItem('juice.apiKey', {key!r});")
    page = ctx.new_page()
    page.goto(f"/jobs/{job_id}")
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)
    ready = float(page.get_attribute("body", "data-ready-at") or "nan")
    box = page.locator("[data-chart='train/loss']").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5)
    page.wait_for_selector(
        "[data-chart='train/loss'] .hoverlayer .legend, [data-chart='train/loss'] .hovertext", timeout=30_000
    )
    hover = page.evaluate("() => performance.now()")
    page.close()
    return ready, hover, ctx


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--chromium", default=os.environ.get("JUICE_TEST_CHROMIUM", "/usr/bin/chromium"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as home:
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("JUICE_")},
            "JUICE_HOME": home,
            "JUICE_PORT": str(port),
        }
        juice(["db", "upgrade"], env)
        key = juice(["keys", "create", "--tenant", "bench"], env).strip().splitlines()[-1]
        t = time.perf_counter()
        jobs = {"long": write_job(env, "bench", args.steps), "short": write_job(env, "bench", 100)}
        print(f"wrote {args.steps} + 100 metric rows in {time.perf_counter() - t:.1f} s")
        api = subprocess.Popen(
            [sys.executable, "-m", "juice.cli", "api", "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            auth = {"Authorization": f"Bearer {key}"}
            for name, job_id in jobs.items():
                t = time.perf_counter()
                r = httpx.get(
                    f"{base}/v1/fine_tuning/jobs/{job_id}/metrics/series?max_points=2000", headers=auth
                )
                series = r.json()["series"]
                print(
                    f"{name:5s} job: series endpoint {1000 * (time.perf_counter() - t):.0f} ms, "
                    f"{len(r.content) / 1024:.0f} KiB, points sent per series "
                    f"{max(len(s['step']) for s in series.values())} of {max(s['total_points'] for s in series.values())}"
                )
            httpx.get(
                f"{base}/static/vendor/plotly.min.js", headers={"Accept-Encoding": "gzip"}
            )  # server-side gzip warm-up
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
                results: dict[str, dict[str, list[float]]] = {}
                for name, job_id in jobs.items():
                    measure(browser, base, key, job_id)  # first page load of the process: not counted
                    res = results[name] = {
                        "ready cold": [],
                        "hover cold": [],
                        "ready warm": [],
                        "hover warm": [],
                    }
                    for _ in range(args.runs):
                        ready, hover, ctx = measure(browser, base, key, job_id)
                        res["ready cold"].append(ready), res["hover cold"].append(hover)
                        ready, hover, _ = measure(browser, base, key, job_id, context=ctx)
                        res["ready warm"].append(ready), res["hover warm"].append(hover)
                        ctx.close()
                browser.close()
        finally:
            api.terminate()
            api.wait(10)
    print(f"\njob page in headless Chromium, median of {args.runs} (ms from navigation start)")
    print(f"{'':12s}{'long (' + str(args.steps) + ' steps)':>22s}{'short (100 steps)':>20s}{'ratio':>8s}")
    for metric in ("ready cold", "hover cold", "ready warm", "hover warm"):
        long_ms, short_ms = (statistics.median(results[n][metric]) for n in ("long", "short"))
        print(f"{metric:12s}{long_ms:22.0f}{short_ms:20.0f}{long_ms / short_ms:8.2f}x")


if __name__ == "__main__":
    main()
