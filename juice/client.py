"""A client of Juice's public REST API (/v1) over plain HTTP: the one the `juice files|jobs` commands
(juice/user_cli.py, juice/live.py) and the experiment harnesses (experiments/run_grid.py) talk through.

It imports nothing of the service (no torch, trainer, worker or database), so it runs from any machine
against any Juice, and it turns every failure into a ClientError whose message is one line fit for a
user. It retries nothing itself: a caller that rides out an outage (`juice jobs watch`) asks
`transient(e)` whether asking again may work.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

# A metrics stream sends a keep-alive every 15 s, so a 60 s read timeout only fires on a dead link.
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


class ClientError(Exception):
    """A call to Juice's API failed or could not be made, as the client sees it; the message is one line
    for a user.

    The client side's error, not the server's: `api.errors.ApiError` is what the service raises to
    answer with an error envelope; a client gets that answer as a StatusError."""


class StatusError(ClientError):
    """The API answered with an error status (its OpenAI error envelope, made into one line)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ConnectionLost(ClientError):
    """The API did not answer, or the connection broke."""


def transient(e: ClientError) -> bool:
    """Whether asking again later may work: a broken connection, a rate limit, a server error (a restart,
    the database away). Everything else (a refusal, a missing job) stays as it is."""
    return isinstance(e, ConnectionLost) or (
        isinstance(e, StatusError) and (e.status == 429 or e.status >= 500)
    )


def error_line(r: httpx.Response) -> str:
    """The API's own message from the OpenAI error envelope, with the status, code and field it names."""
    try:
        err = r.json().get("error")
    except (ValueError, AttributeError):
        err = None
    if isinstance(err, dict) and err.get("message"):
        message = str(err["message"])
        details = [f"HTTP {r.status_code}", *(str(err[k]) for k in ("code", "param") if err.get(k))]
    else:  # not Juice answering (a proxy, another server): show what it said, shortly
        message = r.text.strip()[:300] or r.reason_phrase
        details = [f"HTTP {r.status_code}"]
    hint = "; check --api-key or JUICE_API_KEY" if r.status_code == 401 else ""
    return f"{message} ({', '.join(details)}){hint}"


class JuiceClient:
    """An authenticated client of one Juice API (its /v1 URL); every failure comes out as a ClientError.

    Not safe to share across threads (one httpx.Client each): a thread of its own takes a `clone()`."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        user_agent: str = "juice-cli",
    ) -> None:
        self.url, self.key = url.rstrip("/"), key
        self.timeout, self.user_agent = timeout, user_agent
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key}", "User-Agent": user_agent},
            timeout=timeout,
        )

    def clone(self) -> JuiceClient:
        """A client of its own, for another thread, with the same URL, key and settings."""
        return JuiceClient(self.url, self.key, timeout=self.timeout, user_agent=self.user_agent)

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """A request whose answer is JSON: that JSON."""
        with self._transport_errors():
            r = self.http.request(method, path, **kwargs)
        self._check(r)
        try:
            return r.json()
        except ValueError:
            raise ClientError(f"{r.url} did not answer JSON; is {self.url} the API's /v1 URL?") from None

    @contextmanager
    def stream(self, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A GET whose body is read as it arrives (a metrics stream, a checkpoint tar)."""
        with self._transport_errors(), self.http.stream("GET", path, **kwargs) as r:
            if r.is_error:
                r.read()
            self._check(r)
            yield r

    def upload(self, path: Path, purpose: str = "fine-tune") -> str:
        """Upload a JSONL file; its id. The API validates every line and names the first bad one."""
        try:
            f = path.open("rb")
        except OSError as e:
            raise ClientError(f"cannot read {path}: {e.strerror}") from None
        with f:
            files = {"file": (path.name, f, "application/jsonl")}
            return str(self.call("POST", "/files", files=files, data={"purpose": purpose})["id"])

    def list_all(
        self, path: str, params: dict[str, Any] | None = None, *, limit: int = 100
    ) -> Iterator[dict[str, Any]]:
        """Every item of the paginated list at `path` (the API's order), `limit` a page."""
        params = {**(params or {}), "limit": limit}
        while True:
            page = self.call("GET", path, params=params)
            yield from (dict(item) for item in page["data"])
            if not page.get("has_more") or not page["data"]:
                return
            params["after"] = page["data"][-1]["id"]

    def _check(self, r: httpx.Response) -> None:
        if not r.is_error:
            return
        # The likeliest cause of a 404 on every call: a URL without the /v1 the routes live under.
        hint = "; the API's URL ends in /v1" if r.status_code == 404 and not self.url.endswith("/v1") else ""
        raise StatusError(error_line(r) + hint, r.status_code)

    @contextmanager
    def _transport_errors(self) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectError as e:
            raise ConnectionLost(
                f"{self.url} did not answer ({e}); start Juice with `juice up`, "
                "or point --api-url / JUICE_API_URL at a running one"
            ) from None
        except httpx.TransportError as e:
            raise ConnectionLost(f"the connection to {self.url} failed: {e or type(e).__name__}") from None
