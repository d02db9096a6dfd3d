"""API keys: `sk-juice-` + 256 random bits, stored as sha256 (the key's entropy makes a KDF unnecessary)."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "sk-juice-"


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
