"""The dashboard's pages and assets as served by the app (the browser tests in tests/dashboard use them)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from api.dashboard.assets import STATIC_DIR, assets_version

PAGES = ["/", "/jobs/ftjob-anything", "/compare?jobs=a,b", "/new", "/sign-in"]


@pytest.fixture()
def anon(app_env) -> TestClient:
    from api.main import create_app

    return TestClient(create_app())


@pytest.mark.parametrize("path", PAGES)
def test_pages_are_shells_that_need_no_key_and_hold_no_data(anon: TestClient, path: str) -> None:
    r = anon.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]  # no CDN, no inline script
    assert r.headers["x-frame-options"] == "DENY"
    html = r.text
    assert "<script>" not in html and "https://" not in html
    for src in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        assert anon.get(src).status_code == 200, src


def test_job_page_carries_the_job_id_escaped(anon: TestClient) -> None:
    html = anon.get('/jobs/x"><b>').text
    assert 'data-job-id="x&#34;&gt;&lt;b&gt;"' in html or 'data-job-id="x&quot;&gt;&lt;b&gt;"' in html


def test_jobs_page_filters_by_exactly_the_job_statuses(anon: TestClient) -> None:
    from api.db.status import JobStatus

    select = re.search(r'<select id="filter-status">(.*?)</select>', anon.get("/").text, re.DOTALL)
    assert select, "no status filter on the jobs page"
    assert re.findall(r"<option>([a-z_]+)</option>", select.group(1)) == list(JobStatus.ALL)


def test_jobs_page_filters_by_every_method(anon: TestClient) -> None:
    from api.method_names import METHODS

    select = re.search(r'<select id="filter-method">(.*?)</select>', anon.get("/").text, re.DOTALL)
    assert select, "no method filter on the jobs page"
    assert re.findall(r"<option>([a-z_]+)</option>", select.group(1)) == list(METHODS)
    assert "dpo" in METHODS


def test_plotly_comes_from_the_installed_package_gzipped_and_immutable(anon: TestClient) -> None:
    from importlib.metadata import version

    html = anon.get("/jobs/x").text
    assert f"/static/vendor/plotly.min.js?v={version('plotly')}" in html
    r = anon.get("/static/vendor/plotly.min.js", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert "immutable" in r.headers["cache-control"]
    assert int(r.headers["content-length"]) < 0.4 * len(r.content)  # httpx decoded it; the wire carried gzip
    assert r.content.startswith(b"/**\n* plotly.js v")
    again = anon.get("/static/vendor/plotly.min.js", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    plain = anon.get("/static/vendor/plotly.min.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == r.content


def test_own_assets_are_versioned_and_never_leave_the_static_folder(anon: TestClient) -> None:
    v = assets_version()
    r = anon.get(f"/static/js/job.js?v={v}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert "immutable" in r.headers["cache-control"]
    assert anon.get("/static/js/job.js").headers["cache-control"] == "no-cache"  # unversioned: revalidate
    body = anon.get("/static/juice.css", headers={"Accept-Encoding": "gzip"})
    assert body.headers.get("content-encoding") == "gzip"
    assert body.content == (STATIC_DIR / "juice.css").read_bytes()
    for bad in (
        "/static/../routes.py",
        "/static/%2e%2e/routes.py",
        "/static/js/../../routes.py",
        "/static/nope.js",
    ):
        assert anon.get(bad).status_code == 404, bad


def test_dashboard_routes_stay_out_of_the_openapi_schema(anon: TestClient) -> None:
    paths = anon.get("/openapi.json").json()["paths"]
    assert all(p.startswith(("/v1/", "/healthz", "/readyz")) for p in paths), sorted(paths)
