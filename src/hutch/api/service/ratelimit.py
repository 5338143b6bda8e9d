"""Per-key rate limits (issue 16, ADR 0015): a token bucket for each API key.

Each key has a bucket of ``burst`` tokens refilled at ``rate_per_s``; a request takes one.
An empty bucket is :class:`RateLimitedError` (429) with the whole seconds until a token is
back, which the API sends as ``Retry-After`` and the official SDKs honour by retrying.
The buckets live in the api process (several api processes each allow the rate); idle
buckets are dropped once full again, so memory follows the keys in use.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from hutch.shared.errors import RateLimitedError


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token buckets by key id; ``rate_per_s`` 0 turns limiting off."""

    def __init__(
        self,
        *,
        rate_per_s: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_s < 0 or burst < 0:
            raise ValueError("rate and burst must not be negative")
        self._rate = rate_per_s
        self._burst = float(burst or max(1, math.ceil(rate_per_s)))
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def take(self, key_id: str) -> None:
        """Spend one token of ``key_id``'s bucket, or :class:`RateLimitedError`."""
        if not self.enabled:
            return
        now = self._clock()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(tokens=self._burst, at=now)
        else:
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.at) * self._rate)
            bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            self._forget_full(now)
            return
        wait = (1 - bucket.tokens) / self._rate
        retry_after = max(1, math.ceil(wait))
        raise RateLimitedError(
            f"key {key_id} over its rate limit",
            retry_after_s=retry_after,
            public_message=f"Rate limit exceeded: at most {self._rate:g} requests per second "
            f"per API key (bursts of {self._burst:g}); retry after {retry_after} s",
        )

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled (what a fresh bucket would be), now and then."""
        if len(self._buckets) < 1024:
            return
        full_after = self._burst / self._rate
        for key_id in [k for k, b in self._buckets.items() if now - b.at >= full_after]:
            del self._buckets[key_id]
