"""Dashboard pages. Each route returns a page shell; the page's script fetches everything it shows from
the public API with the API key the user signed in with, so the dashboard can never see more than
that key can."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from api.dashboard.assets import Asset, assets_version, own_asset, plotly_bundle, plotly_version
from api.db.status import JobStatus
from api.method_names import METHODS

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
IMMUTABLE = "public, max-age=31536000, immutable"


def _page(request: Request, template: str, title: str, **context: object) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        template,
        {"title": title, "assets": assets_version(), "plotly": plotly_version(), **context},
        headers={
            "Cache-Control": "no-cache",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; frame-ancestors 'none'",
        },
    )


@router.get("/", response_class=HTMLResponse)
def jobs_page(request: Request) -> HTMLResponse:
    return _page(request, "jobs.html", "Jobs", statuses=JobStatus.ALL, methods=METHODS)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str) -> HTMLResponse:
    return _page(request, "job.html", job_id, job_id=job_id)


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request) -> HTMLResponse:
    return _page(request, "compare.html", "Compare")


@router.get("/new", response_class=HTMLResponse)
def new_job_page(request: Request) -> HTMLResponse:
    return _page(request, "new.html", "New job")


# Where sign-in may send the browser: a path of this origin, nothing else. One "/" then anything but
# "/" or "\" ("//host" and "/\host" are other hosts to a browser, which reads "\" as "/"), and no
# whitespace or control character anywhere (a browser drops tab and newline from a URL, so "/<tab>/host"
# would become "//host"). A path carries no scheme, so "javascript:..." is refused too.
_SAME_ORIGIN_PATH = re.compile(r"/(?:[^/\\\x00-\x20\x7f-\x9f][^\x00-\x20\x7f-\x9f]*)?")
HOME = "/"


def safe_next(target: str | None) -> str:
    """`target` if it is a path of this origin (`_SAME_ORIGIN_PATH`, at most 2048 characters), else HOME."""
    if target and len(target) <= 2048 and _SAME_ORIGIN_PATH.fullmatch(target):
        return target
    return HOME


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_page(request: Request) -> HTMLResponse:
    # Checked here, the one place the rule lives; the page's script goes where data-next says.
    return _page(request, "sign_in.html", "Sign in", next_path=safe_next(request.query_params.get("next")))


def _serve(request: Request, asset: Asset | None, cache: str) -> Response:
    if asset is None:
        return Response(status_code=404)
    headers = {"Cache-Control": cache, "ETag": asset.etag, "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(
            asset.gzipped, media_type=asset.media_type, headers={**headers, "Content-Encoding": "gzip"}
        )
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@router.get("/static/vendor/plotly.min.js")
def plotly_js(request: Request) -> Response:
    # The URL carries ?v=<plotly version>, so the bundle can be cached for good.
    return _serve(request, plotly_bundle(), IMMUTABLE)


@router.get("/static/{name:path}")
def static_file(request: Request, name: str) -> Response:
    # Our own files carry ?v=<hash of static/> in the page; without it, revalidate each time.
    cache = IMMUTABLE if request.query_params.get("v") == assets_version() else "no-cache"
    return _serve(request, own_asset(name), cache)
