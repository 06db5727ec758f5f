"""When a failed attempt may be sent again, and how long to wait first. Pure: no I/O."""

from __future__ import annotations

import dataclasses
import enum
import math
import random
import sys
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Final

__all__ = [
    "DEFAULT_MAX_PAUSE",
    "RETRY_AFTER_CAP",
    "Backoff",
    "Failure",
    "SharedPause",
    "parse_retry_after",
    "should_retry",
]

RETRY_AFTER_CAP: Final = 60.0
# The longest server-asked pause a bulk run waits out (a longer one stops it, to be resumed).
DEFAULT_MAX_PAUSE: Final = 300.0
BACKOFF_LIMIT: Final = 3600.0


class Failure(enum.Enum):
    """What an attempt's failure means for the refund, and so for retrying.

    Which failure an attempt had is decided in one place: :mod:`preo_client._call`.
    """

    NOT_SENT = "not sent"  # no byte of the request left: always safe to send again
    REFUSED = "refused"  # 429 / 503: the server did not process the request
    UNKNOWN = "unknown"  # the request may have been processed: the refund may exist
    FINAL = "final"  # the server answered and refused for good (400, 404, ...)


def should_retry(
    failure: Failure,
    *,
    attempt: int,
    max_retries: int,
    retry_unknown_outcome: bool,
    retry_after: float | None = None,
    retry_after_cap: float = RETRY_AFTER_CAP,
) -> bool:
    """Whether attempt number ``attempt`` (1-based) that failed with ``failure`` is retried."""
    if attempt > max_retries:
        return False
    if failure is Failure.NOT_SENT:
        return True
    if failure is Failure.REFUSED:
        return retry_after is None or retry_after <= retry_after_cap
    if failure is Failure.UNKNOWN:
        return retry_unknown_outcome
    return False


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date).

    delay-seconds is ``1*DIGIT`` in ASCII (RFC 9110 §10.2.3): Arabic-Indic or fullwidth
    digits, ``"1_0"``, ``"1e1"``, ``"+5"``, ``"2.5"`` are not numbers of seconds, though
    Python's ``float()`` reads them. ``None`` for a missing or unusable value (those, ``"-10"``,
    ``"abc"``, a date in the past or with non-ASCII digits): the caller then falls back to its
    own backoff. A number too large for a float is the largest float (far past any cap).
    """
    if not value:
        return None
    text = value.strip(" \t")  # optional whitespace around a field value (RFC 9110 §5.5)
    if not text or not text.isascii():
        return None
    if text.isdigit():  # ASCII only, checked above: no sign, no point, no exponent, no "_"
        seconds = float(text)
        return seconds if math.isfinite(seconds) else sys.float_info.max
    if "_" in text:  # int() inside the date parser would read "2_1" as 21
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    return seconds if seconds > 0 else None


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits up to ``min(cap, base * 2**(n-1))``."""

    base: float = 0.5
    cap: float = 8.0

    def __post_init__(self) -> None:
        for name in ("base", "cap"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not 0 <= value <= BACKOFF_LIMIT
            ):
                from ._exceptions import ConfigurationError

                raise ConfigurationError(
                    f"Backoff.{name} must be a number of seconds from 0 to {BACKOFF_LIMIT:g}, "
                    f"got {value!r}"
                )

    def floor(self, attempt: int) -> float:
        """The least wait after failed attempt ``attempt`` when the server names a shorter one:
        half the attempt's exponential step, ``min(cap, base * 2**(attempt-1)) / 2``."""
        return float(min(self.cap, self.base * 2 ** (attempt - 1))) / 2

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to sleep after failed attempt ``attempt``; a server's wait wins when given,
        but never goes below :meth:`floor`: ``Retry-After: 0`` (or a tiny value) on a ``503``
        or ``429`` means the normal backoff, not a hot loop."""
        floor = self.floor(attempt)
        # Jitter only spreads retries in time; it protects nothing, so `random` is right here.
        if retry_after is not None:
            if retry_after >= floor:
                return retry_after
            return random.uniform(floor, 2 * floor)  # noqa: S311  # nosec B311
        ceiling = 2 * floor
        return random.uniform(0.0, ceiling) if ceiling > 0 else 0.0  # noqa: S311  # nosec B311


class SharedPause:
    """A pause every worker of a bulk run honours before its next attempt.

    One worker's ``429``/``503`` extends it by the wait it got, so the whole run slows down
    instead of each worker hammering the server on its own schedule.
    """

    def __init__(self) -> None:
        self._until = 0.0

    def extend(self, seconds: float) -> None:
        """Make every worker wait at least ``seconds`` from now."""
        self._until = max(self._until, time.monotonic() + seconds)

    def remaining(self) -> float:
        """Seconds left to wait (0 when not paused)."""
        return max(0.0, self._until - time.monotonic())
