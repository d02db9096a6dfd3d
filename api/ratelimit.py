"""Requests per second per tenant: a token bucket for each tenant, in this API process's memory.

Each bucket holds up to `rate_limit_burst` tokens and refills at `rate_limit_per_s`; every authenticated
/v1 request takes one (api.deps), and a request that finds the bucket empty gets 429
`rate_limit_exceeded` with `Retry-After`: the whole seconds until a token is back (at least 1). The
official openai SDK waits that long and retries.

The limits are per API process: N replicas behind a load balancer admit up to N times the rate. That is
the point of keeping it in memory (no shared store, no extra round trip per request); a deployment that
needs one global figure divides the rate by its replica count or limits at its proxy.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class TokenBuckets:
    """One token bucket per key, created full on first use. Thread-safe (sync routes run in a pool)."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate_per_s > 0 and burst >= 1")
        self.rate, self.burst, self._clock = rate_per_s, float(burst), clock
        self._buckets: dict[int, tuple[float, float]] = {}  # key -> (tokens, when counted)
        self._lock = threading.Lock()

    def take(self, key: int) -> int:
        """Take a token for `key`. 0 if one was there; else the whole seconds until one will be (>= 1)."""
        now = self._clock()
        with self._lock:
            tokens, then = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0
            self._buckets[key] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self.rate))
