"""Token buckets per API key for the sandbox's rate limit (pure logic: no I/O, no httpx)."""

from __future__ import annotations

import math
from collections.abc import Callable

from .._config import ConfigurationError

__all__ = [
    "RateLimiter",
    "TokenBucket",
    "check_latency",
    "check_rate_limit",
    "retry_after_header",
]


def check_rate_limit(rate: float | None, burst: int) -> None:
    """Raise ``ConfigurationError`` naming the field unless ``rate``/``burst`` are usable."""
    if rate is not None and (
        isinstance(rate, bool)
        or not isinstance(rate, (int, float))
        or not math.isfinite(rate)
        or rate <= 0
    ):
        raise ConfigurationError(
            f"rate_limit must be None (no limit) or a finite number > 0 (requests per second), "
            f"got {rate!r}"
        )
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise ConfigurationError(f"burst must be an int >= 1, got {burst!r}")


def check_latency(latency: float, jitter: float) -> None:
    """Raise ``ConfigurationError`` naming the field unless both are finite numbers >= 0."""
    for name, value in (("latency", latency), ("latency_jitter", jitter)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise ConfigurationError(
                f"{name} must be a finite number of seconds >= 0, got {value!r}"
            )


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; each granted request takes one.

    Invariant: over any time window of length ``w``, at most ``rate * w + burst`` requests
    are granted.
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = float(rate)
        self.burst = burst
        self._tokens = float(burst)
        self._last = now

    def take(self, now: float) -> float:
        """Take a token at time ``now``: ``0.0`` if granted, else the seconds until one is
        available (nothing is taken then)."""
        if now > self._last:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
            self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


class RateLimiter:
    """One :class:`TokenBucket` per key (the API key presented), on an injectable clock."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        check_rate_limit(rate, burst)
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str) -> float:
        """``0.0`` if a request for ``key`` may proceed now, else the seconds to wait."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now)


def retry_after_header(wait: float) -> str:
    """``Retry-After`` for a wait of ``wait`` seconds: whole seconds, rounded up, at least 1
    (HTTP's delta-seconds is an integer; rounding up never invites a request too early)."""
    return str(max(1, math.ceil(wait)))
