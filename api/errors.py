"""Domain errors and their one mapping to OpenAI's error envelope.

    ApiError                      -> {"error": {"message", "type", "param", "code"}}
    ├── InvalidRequest   (400)    bad field: `param` names it
    ├── Unauthorized     (401)
    ├── Forbidden        (403)    a download link whose signature is wrong or expired
    ├── NotFound         (404)    also for another tenant's objects: existence is not leaked
    ├── Conflict         (409)    e.g. cancelling a finished job, reused idempotency key
    ├── PayloadTooLarge  (413)
    └── TooManyRequests  (429)    with Retry-After: a per-tenant cap or rate
    database unreachable (503)    with Retry-After: a lost connection or exhausted pool (handler below)

Services raise these; routes never build error bodies themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from api.schemas.errors import document_validation_errors

log = logging.getLogger(__name__)

# Seconds a client is told to wait while the database is away (a restart takes seconds).
DATABASE_RETRY_AFTER_S = 5


class ApiError(Exception):
    status_code = 500
    type = "api_error"
    headers: ClassVar[Mapping[str, str]] = {}  # shared by every instance: never mutated

    def __init__(self, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.code, self.param = message, code, param
        self.extra_headers: dict[str, str] = {}  # this instance's own headers, over the class's


class InvalidRequest(ApiError):
    status_code = 400
    type = "invalid_request_error"


class Unauthorized(ApiError):
    status_code = 401
    type = "authentication_error"


class Forbidden(ApiError):
    status_code = 403
    type = "permission_error"


class NotFound(ApiError):
    status_code = 404
    type = "invalid_request_error"

    def __init__(
        self, kind: str, object_id: str, *, param: str | None = None, message: str | None = None
    ) -> None:
        """`message`: where the object is known but what it stands for is gone, say so instead."""
        message = message or f"No {kind} found with id '{object_id}'."
        super().__init__(message, code=f"{kind}_not_found", param=param)


class Conflict(ApiError):
    status_code = 409
    type = "invalid_request_error"
    # The openai SDK retries 409 unless told not to; these conflicts never resolve by retrying.
    headers: ClassVar[Mapping[str, str]] = {"x-should-retry": "false"}


class PayloadTooLarge(ApiError):
    status_code = 413
    type = "invalid_request_error"


class TooManyRequests(ApiError):
    """429 with Retry-After: the caller may try again later (the openai SDK honours the header)."""

    status_code = 429
    type = "rate_limit_error"

    def __init__(self, message: str, *, code: str, retry_after_s: int, param: str | None = None) -> None:
        super().__init__(message, code=code, param=param)
        self.extra_headers["Retry-After"] = str(retry_after_s)


class ServiceUnavailable(ApiError):
    """503 with Retry-After: a part the API depends on (the inference server) is away or full."""

    status_code = 503
    type = "api_error"

    def __init__(self, message: str, *, code: str, retry_after_s: int) -> None:
        super().__init__(message, code=code)
        self.extra_headers["Retry-After"] = str(retry_after_s)


def error_body(message: str, type_: str, code: str | None, param: str | None) -> dict[str, object]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _param_of(loc: tuple[object, ...] | list[object], body: object = None) -> str | None:
    """Dotted field path, without the request-part root and pydantic's union-branch labels: its type
    labels, and a discriminated union's tag (`grader.text_similarity.pass_threshold` is the field
    `grader.pass_threshold` of a grader whose `type` is text_similarity; `body`, the request's JSON,
    tells a tag from a key)."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    parts = [
        p
        for p in parts
        if p.isdigit()
        or not (
            p in ("int", "float", "str", "bool", "none")
            or p.startswith(("function-", "literal[", "list[", "dict[", "constrained-", "nullable["))
        )
    ]
    out, node = [], body
    for p in parts:
        if isinstance(node, dict) and p not in node and node.get("type") == p:
            continue  # the tag of the branch this object was validated as
        out.append(p)
        if isinstance(node, dict):
            node = node.get(p)
        elif isinstance(node, list) and p.isdigit() and int(p) < len(node):
            node = node[int(p)]
        else:
            node = None
    return ".".join(out) or None


def install_error_handlers(app: FastAPI) -> None:
    document_validation_errors(app)  # the document says 400 with the envelope, as _validation does

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.message, exc.type, exc.code, exc.param),
            exc.status_code,
            headers={**exc.headers, **exc.extra_headers},
        )

    @app.exception_handler(DBAPIError)
    @app.exception_handler(SATimeoutError)
    async def _database_away(_: Request, exc: Exception) -> JSONResponse:
        # Only a lost or refused connection (or an exhausted pool) is the database being away; any
        # other driver error is a bug and stays a 500.
        if isinstance(exc, DBAPIError) and not isinstance(exc, OperationalError | InterfaceError):
            raise exc
        log.warning("database unavailable: %s", exc)
        return JSONResponse(
            error_body(
                "The database is unreachable right now; retry shortly.",
                "api_error",
                "database_unavailable",
                None,
            ),
            503,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            (_param_of(e.get("loc", ()), exc.body), e.get("msg", "invalid value")) for e in exc.errors()
        ]
        param = errors[0][0]
        # A union ("auto" or a number) fails once per branch: say every way the value could be right.
        reasons = list(dict.fromkeys(msg for p, msg in errors if p == param))
        message = " or ".join(reasons)
        message = f"{param}: {message}" if param else message
        return JSONResponse(error_body(message, "invalid_request_error", "invalid_value", param), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return JSONResponse(
            error_body(str(exc.detail), "invalid_request_error", code, None),
            exc.status_code,
            headers=headers or None,
        )


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path. Starlette's 405 names only the first route whose path
    matches (GET /v1/files/{id} hides DELETE): a client reading Allow must see them all."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, BaseRoute) and route.matches(request.scope)[0] != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)
