"""Sign-in sends the browser back only to a path of this origin (issue 10, finding 5).

The rule lives on the server (api/dashboard/routes.py safe_next): the sign-in page carries the checked
path in data-next, and its script goes there without reading the query itself.
"""

from __future__ import annotations

import html
import re

import pytest
from fastapi.testclient import TestClient

from api.dashboard.assets import STATIC_DIR


@pytest.fixture()
def anon(app_env) -> TestClient:
    from api.main import create_app

    return TestClient(create_app())


def next_of(anon: TestClient, target: str | None) -> str:
    r = anon.get("/sign-in", params={} if target is None else {"next": target})
    assert r.status_code == 200
    found = re.findall(r'<form id="sign-in-form"[^>]*\bdata-next="([^"]*)"', r.text)
    assert len(found) == 1, r.text
    return html.unescape(found[0])


@pytest.mark.parametrize(
    "target",
    ["/", "/jobs/ftjob-abc", "/compare?jobs=a,b&x=%2F%2Fy", "/new#top", '/jobs/x"><script>', "/a\\b"],
)
def test_paths_of_this_origin_are_kept(anon: TestClient, target: str) -> None:
    assert next_of(anon, target) == target  # escaped in the attribute, the same string once parsed


@pytest.mark.parametrize(
    "target",
    [
        "/\\evil.example",  # the finding: a browser reads "\" as "/", so this is //evil.example
        "//evil.example",
        "/\\/evil.example",
        "\\\\evil.example",
        "/\t/evil.example",  # browsers drop tab and newline from URLs: //evil.example
        "/\n/evil.example",
        "/\r/evil.example",
        "/\x00x",
        "/\x85x",
        " /jobs",
        "/jobs x",
        "https://evil.example/",
        "javascript:alert(1)",
        "jobs",
        "",
        "/" + "x" * 2048,
    ],
)
def test_anything_else_falls_back_to_the_dashboard_home(anon: TestClient, target: str) -> None:
    assert next_of(anon, target) == "/"


def test_no_next_is_home(anon: TestClient) -> None:
    assert next_of(anon, None) == "/"


def test_the_script_goes_where_the_server_said_and_never_reads_the_query() -> None:
    script = (STATIC_DIR / "js" / "sign_in.js").read_text()
    assert "location.assign(form.dataset.next" in script
    assert "location.search" not in script and "URLSearchParams" not in script
