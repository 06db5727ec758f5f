"""One refund call without I/O: the fixed request, what its retry loop shares, who sends it."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Protocol

from ._policy import RefundPlan
from ._retry import SharedPause

if TYPE_CHECKING:
    import httpx

    from ._models import Refund

__all__ = ["AsyncSender", "Call", "CallState", "Sender"]


@dataclasses.dataclass(slots=True)
class CallState:
    """What a retry loop shares with its caller: attempts made, and a run-wide pause."""

    attempts: int = 0
    pause: SharedPause | None = None
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
