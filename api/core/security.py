"""API keys: `sk-juice-` + 256 random bits, stored as sha256 (the key's entropy makes a KDF unnecessary).

Signed download links: a browser navigation cannot send an Authorization header, so a checkpoint link
carries `key` (the api_keys row id), `expires` and an HMAC-SHA256 signature. The signing key is derived
from the server secret (`JUICE_SECRET_KEY`, or the embedded default's generated `$JUICE_HOME/secret_key`)
and the API key's row id and stored hash: reading the database is not enough to mint a link, and revoking
(or deleting) the key still invalidates all of its links at once, because verification needs the key's
live row. Every use re-checks the lifetime cap as well as the expiry, so a link that outlives
MAX_LINK_LIFETIME_S (even one with a valid signature) is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from api.core.config import Settings

KEY_PREFIX = "sk-juice-"

# The longest a download link may live; link creation's `expires_in` bound (api/schemas/checkpoint_links.py)
# is the same number, and tests/api/test_link_signing.py keeps the two equal.
MAX_LINK_LIFETIME_S = 86400
# Slack for clocks of API replicas that disagree a little: a link made on one replica with the longest
# lifetime must not be refused by another whose clock is a few seconds behind.
LINK_CLOCK_SKEW_S = 60
MIN_SECRET_CHARS = 32
SECRET_FILE_NAME = "secret_key"
_LINK_KEY_LABEL = b"juice checkpoint link v2"


class SecretKeyError(RuntimeError):
    """The server secret is missing or unusable; the message says what to set."""


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_or_create_secret_file(path: Path) -> str:
    """The secret kept in `path`, generating 32 random bytes (hex) into it first if it does not exist.

    Creation is atomic and exclusive: the secret is written to a private temporary file (O_EXCL, 0600)
    and published with link(2), which, like O_EXCL, fails if the name exists. So processes starting at
    once all end up with the first one's secret, and no reader ever sees a half-written file."""
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        value = secrets.token_hex(32)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(value + "\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:  # another process won the race: use its secret
                value = path.read_text().strip()
        finally:
            tmp.unlink(missing_ok=True)
    if len(value) < MIN_SECRET_CHARS:
        raise SecretKeyError(
            f"{path} holds no usable secret (fewer than {MIN_SECRET_CHARS} characters). Delete it to "
            "generate a new one (outstanding download links stop working) or set JUICE_SECRET_KEY."
        )
    return value


def server_secret(settings: Settings) -> bytes:
    """The secret that signs download links: JUICE_SECRET_KEY, else (SQLite only) $JUICE_HOME/secret_key.

    With another database and no JUICE_SECRET_KEY it raises SecretKeyError: every API replica must sign
    with the same secret, so one cannot be generated per process. The API checks this at startup."""
    configured = settings.secret_key.get_secret_value()
    if configured:
        if len(configured) < MIN_SECRET_CHARS:
            raise SecretKeyError(
                f"JUICE_SECRET_KEY is too short: use at least {MIN_SECRET_CHARS} random characters, e.g. "
                "the output of `python -c 'import secrets; print(secrets.token_hex(32))'`."
            )
        return configured.encode()
    if settings.is_sqlite:
        return load_or_create_secret_file(settings.home / SECRET_FILE_NAME).encode()
    raise SecretKeyError(
        "JUICE_SECRET_KEY is not set. With a non-SQLite database (production) every API process must sign "
        "download links with the same server secret: set JUICE_SECRET_KEY to one random value of at least "
        f"{MIN_SECRET_CHARS} characters on every API process, e.g. the output of "
        "`python -c 'import secrets; print(secrets.token_hex(32))'`."
    )


def link_signing_key(secret: bytes, key_id: int, key_hash: str) -> bytes:
    """The per-API-key signing key: HMAC(server secret, label + key id + key hash)."""
    return hmac.new(
        secret, b"%s:%d:%s" % (_LINK_KEY_LABEL, key_id, key_hash.encode()), hashlib.sha256
    ).digest()


def sign_checkpoint_link(
    secret: bytes, key_id: int, key_hash: str, job_id: str, checkpoint_id: str, expires: int
) -> str:
    """Hex HMAC-SHA256 over "key_id:job_id:checkpoint_id:expires" with the key's derived signing key.

    Real ids never contain ':', so the message is unambiguous for every object a link can reach."""
    message = f"{key_id}:{job_id}:{checkpoint_id}:{expires}".encode()
    return hmac.new(link_signing_key(secret, key_id, key_hash), message, hashlib.sha256).hexdigest()


def checkpoint_link_signature_ok(
    secret: bytes, key_id: int, key_hash: str, job_id: str, checkpoint_id: str, expires: int, signature: str
) -> bool:
    """Constant-time check of a link's signature (expiry and lifetime are the caller's separate checks)."""
    expected = sign_checkpoint_link(secret, key_id, key_hash, job_id, checkpoint_id, expires)
    # Compare bytes: compare_digest raises on non-ASCII str, and a query string can hold anything.
    return hmac.compare_digest(expected.encode(), signature.encode())


def link_expired(expires: int, now: float) -> bool:
    return expires < now


def link_outlives_cap(expires: int, now: float, max_lifetime_s: int = MAX_LINK_LIFETIME_S) -> bool:
    """True for a link that would still be valid more than the cap (plus clock slack) from now."""
    return expires - now > max_lifetime_s + LINK_CLOCK_SKEW_S


def inference_token(settings: Settings) -> str:
    """The bearer token between the API and the inference server: JUICE_INFERENCE_API_KEY, else one
    derived from the server secret (the same on every process of a deployment, never the secret itself)."""
    configured = settings.inference_api_key.get_secret_value()
    if configured:
        return configured
    return hmac.new(server_secret(settings), b"juice inference token", hashlib.sha256).hexdigest()
