"""One refund call without I/O: the fixed request, what its retry loop shares, who sends it."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Protocol

from ._policy import RefundPlan
from ._retry import SharedPause

if TYPE_CHECKING:
    import httpx

    from ._models import Refund

__all__ = ["AsyncSender", "Call", "CallState", "Pacer", "Sender"]


class Pacer(Protocol):
    """A send-rate limiter shared by the workers of a bulk run (sans I/O, thread-safe).

    The retry loop calls :meth:`reserve` before every attempt and sleeps for the seconds it
    returns, then :meth:`observe` once the attempt is answered.
    """

    def reserve(self) -> float:
        """Take one send slot; return the seconds to wait before using it (0 = send now)."""
        ...

    def observe(self, *, throttled: bool) -> None:
        """Record an answered attempt: ``throttled`` for a ``429``/``503``."""
        ...


@dataclasses.dataclass(slots=True)
class CallState:
    """What a retry loop shares with its caller: attempts made, and run-wide settings.

    A bulk run passes ``pause`` (one ``Retry-After`` pauses every worker), ``pacer`` (a shared
    send rate), ``retry_after_cap`` (the longest server-asked wait that is honoured rather than
    raised; default the client's 60 s) and ``max_retries`` (default the client's).
    """

    attempts: int = 0
    pause: SharedPause | None = None
    pacer: Pacer | None = None
    retry_after_cap: float | None = None
    max_retries: int | None = None
    unknown_seen: bool = False  # an attempt failed in a way that may have created the refund


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """One refund call, fixed before the first attempt: every attempt sends exactly this."""

    request: httpx.Request
    plan: RefundPlan
    idempotency_key: str


class Sender(Protocol):
    """What a bulk run needs of a sync client: build a call (no I/O), then send it."""

    def _prepare(
        self,
        purchase_id: str,
        *,
        reason: str,
        scope: str | None,
        amount: object,
        comment: str | None,
        pickup_point_id: str | None,
        idempotency_key: str | None,
        timeout: object,
    ) -> Call: ...

    def _send(self, call: Call, state: CallState | None = None) -> Refund: ...


class AsyncSender(Protocol):
    """The async twin of :class:`Sender`."""

    def _prepare(
        self,
        purchase_id: str,
        *,
        reason: str,
        scope: str | None,
        amount: object,
        comment: str | None,
        pickup_point_id: str | None,
        idempotency_key: str | None,
        timeout: object,
    ) -> Call: ...

    async def _send(self, call: Call, state: CallState | None = None) -> Refund: ...
