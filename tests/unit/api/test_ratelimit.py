"""The per-key token bucket (``service/ratelimit.py``) on a hand-moved clock."""

from __future__ import annotations

import pytest

from hutch.api.service.ratelimit import RateLimiter
from hutch.shared.errors import RateLimitedError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=2, burst=3, clock=clock)
    for _ in range(3):
        limiter.take("k")
    with pytest.raises(RateLimitedError) as exc:
        limiter.take("k")
    assert exc.value.retry_after_s == 1  # 0.5 s to the next token, rounded up
    assert "at most 2 requests per second per API key (bursts of 3)" in exc.value.public_message
    clock.now += 0.5
    limiter.take("k")
    with pytest.raises(RateLimitedError):
        limiter.take("k")
    # Full again after 1.5 s, and never more than the burst.
    clock.now += 60
    for _ in range(3):
        limiter.take("k")
    with pytest.raises(RateLimitedError):
        limiter.take("k")


def test_each_key_has_its_own_bucket() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=1, burst=1, clock=clock)
    limiter.take("a")
    limiter.take("b")
    with pytest.raises(RateLimitedError):
        limiter.take("a")


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=0.25, burst=1, clock=clock)
    limiter.take("k")
    with pytest.raises(RateLimitedError) as exc:
        limiter.take("k")
    assert exc.value.retry_after_s == 4
    clock.now += 1.5
    with pytest.raises(RateLimitedError) as exc:
        limiter.take("k")
    assert exc.value.retry_after_s == 3  # 2.5 s left


def test_rate_zero_is_off_and_burst_defaults_to_the_rate() -> None:
    clock = Clock()
    off = RateLimiter(rate_per_s=0, burst=0, clock=clock)
    for _ in range(10_000):
        off.take("k")
    limiter = RateLimiter(rate_per_s=5, burst=0, clock=clock)
    for _ in range(5):
        limiter.take("k")
    with pytest.raises(RateLimitedError):
        limiter.take("k")


def test_full_buckets_are_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=1, burst=1, clock=clock)
    for i in range(1100):
        limiter.take(f"k{i}")
    clock.now += 10
    limiter.take("last")
    assert len(limiter._buckets) < 1100
