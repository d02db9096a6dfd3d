"""API keys: `sk-juice-` + 256 random bits, stored as sha256 (the key's entropy makes a KDF unnecessary).

Signed download links: a browser navigation cannot send an Authorization header, so a checkpoint link
carries `key` (the api_keys row id), `expires` and an HMAC-SHA256 signature keyed by that key's stored
hash. The hash is secret to anyone without database access, every API replica already has it (no extra
secret to configure or rotate), and revoking the key invalidates all of its links at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "sk-juice-"


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def sign_checkpoint_link(key_hash: str, job_id: str, checkpoint_id: str, expires: int) -> str:
    """Hex HMAC-SHA256 over "job_id:checkpoint_id:expires", keyed by the API key's stored hash.

    Real ids never contain ':', so the message is unambiguous for every object a link can reach."""
    message = f"{job_id}:{checkpoint_id}:{expires}".encode()
    return hmac.new(key_hash.encode(), message, hashlib.sha256).hexdigest()


def checkpoint_link_signature_ok(
    key_hash: str, job_id: str, checkpoint_id: str, expires: int, signature: str
) -> bool:
    """Constant-time check of a link's signature (expiry is the caller's separate check)."""
    expected = sign_checkpoint_link(key_hash, job_id, checkpoint_id, expires)
    # Compare bytes: compare_digest raises on non-ASCII str, and a query string can hold anything.
    return hmac.compare_digest(expected.encode(), signature.encode())


def link_expired(expires: int, now: float) -> bool:
    return expires < now
