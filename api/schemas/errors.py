"""The error envelope in the OpenAPI document: every non-2xx status a route can answer, with its schema.

Every error the API sends is `{"error": {"message", "type", "param", "code"}}` (api/errors.py), whatever
raised it: a service's ApiError, a request that fails validation (400, never FastAPI's 422), a rate or
stream cap (429), the database being away (503). Routes declare theirs with `error_responses(...)`:

    @router.get("/{file_id}", response_model=FileObject, responses=error_responses(401, 404, 429, 503))

so a client generated from the document types every error, and schemathesis' status-code and schema
checks hold the server to it (tests/api/test_openapi_contract.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field


class ErrorObject(BaseModel):
    message: str = Field(description="What went wrong, for a person.")
    type: str = Field(description="OpenAI's error type, e.g. invalid_request_error, authentication_error.")
    param: str | None = Field(description="The request field at fault, if one is.")
    code: str | None = Field(description="A stable machine-readable code, e.g. file_not_found.")


class ErrorResponse(BaseModel):
    error: ErrorObject


ERROR_SCHEMA_REF = f"#/components/schemas/{ErrorResponse.__name__}"

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Whole seconds to wait before retrying (the openai SDK honours it).",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}

DESCRIPTIONS: dict[int, str] = {
    400: "Invalid request: a parameter, header or body field is wrong (`param` names it).",
    401: "Missing or invalid API key.",
    403: (
        "Not permitted: a download link whose signature is wrong, expired or outlives the lifetime cap, or"
        " a change to an object the caller does not own (a base model)."
    ),
    404: "No such object for this organization (another organization's objects are not found either).",
    409: "Conflicts with the object's current state, e.g. cancelling a finished job.",
    413: "The upload exceeds the server's size limit.",
    429: "A per-organization rate or cap was reached; retry after Retry-After seconds.",
    503: "The database is unreachable right now; retry after Retry-After seconds.",
}

HEADERS: dict[int, dict[str, Any]] = {
    409: {
        "x-should-retry": {
            "description": "Always `false`: the openai SDK must not retry a conflict.",
            "required": True,
            "schema": {"type": "string", "enum": ["false"]},
        }
    },
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}

# Every route behind an API key: the key is checked (401), counted against the tenant's rate (429), and
# looked up in the database (503 while it is away).
AUTHENTICATED = (401, 429, 503)


def error_responses(*statuses: int, json_route: bool = True) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route that answers these error statuses, each with the envelope.

    `json_route=False` for a route whose success is not JSON (a download, a stream): FastAPI documents a
    response `model` under the route's own media type, so there the envelope is given as JSON explicitly
    (its component is registered by the JSON routes' `model`)."""
    unknown = set(statuses) - DESCRIPTIONS.keys()
    if unknown:
        raise ValueError(f"no description for status {sorted(unknown)}")
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted(set(statuses)):
        entry: dict[str, Any] = {"description": DESCRIPTIONS[status]}
        if json_route:
            entry["model"] = ErrorResponse
        else:
            entry["content"] = {"application/json": {"schema": {"$ref": ERROR_SCHEMA_REF}}}
        if status in HEADERS:
            entry["headers"] = HEADERS[status]
        responses[status] = entry
    return responses


def binary_response(description: str, *media_types: str) -> dict[int | str, dict[str, Any]]:
    """A 200 whose body is bytes of one of `media_types` (a download or a stream), not JSON."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {200: {"description": description, "content": dict.fromkeys(media_types, binary)}}


# Documents the Bearer key in the OpenAPI document (components.securitySchemes, each operation's
# `security`). It checks nothing itself (auto_error=False): api.deps authenticates, with the envelope.
bearer_auth = HTTPBearer(
    scheme_name="bearer",
    description="An API key: `Authorization: Bearer <key>` (`juice keys create`).",
    auto_error=False,
)


def document_validation_errors(app: FastAPI) -> None:
    """Make the app's OpenAPI document say what the server answers to a request that fails validation:
    400 with the envelope (api/errors.py's handler), which routes declare with `error_responses(400)`,
    not the 422 `HTTPValidationError` FastAPI adds to every operation with parameters (the handler
    leaves no 422 to answer)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        schema = generate()  # FastAPI caches the document it returns: this edits it once
        if fresh:
            _drop_validation_422(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to adjust the document


def _drop_validation_422(schema: dict[str, Any]) -> None:
    fastapi_422 = "#/components/schemas/HTTPValidationError"
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            ref = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if ref.get("$ref") != fastapi_422:
                continue
            del responses["422"]
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
