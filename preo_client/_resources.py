"""``client.purchases``: the refund endpoint as typed methods (sync and async, documented alike)."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ._config import NOT_GIVEN, NotGiven, Timeout
from ._policy import Reason, Scope
from ._retry import DEFAULT_MAX_PAUSE

if TYPE_CHECKING:
    from ._bulk import AsyncBulkRun, BulkRun, ItemInput, OnResult, RefundOutcome
    from ._client import AsyncPreoClient, PreoClient
    from ._generated.models.refund_reason import RefundReason
    from ._generated.models.refund_scope import RefundScope
    from ._models import Refund

__all__ = ["AsyncPurchases", "Purchases"]


def _text(value: str | Enum | None) -> str | None:
    return value.value if isinstance(value, Enum) else value


class Purchases:
    """``client.purchases``: the purchase endpoints (refunds)."""

    def __init__(self, client: PreoClient) -> None:
        self._client = client

    def refund(
        self,
        purchase_id: str,
        *,
        reason: Reason | RefundReason,
        scope: Scope | RefundScope | None = None,
        amount: Decimal | int | str | float | None = None,
        comment: str | None = None,
        pickup_point_id: str | None = None,
        idempotency_key: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, object] | None = None,
        extra_query: Mapping[str, str | int] | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
    ) -> Refund:
        """Create a refund request for ``purchase_id`` (``POST /v1/purchases/{id}/refund``).

        ``reason`` (required) is one of ``deposit_reclaim``, ``sold_out``, ``event_cancelled``,
        ``product_defect``, ``duplicate_purchase``, ``customer_request``, ``compensation``,
        ``overcharge``, ``other``, ``rental_return``. ``scope`` is derived from it when omitted
        (and always sent explicitly); an override must be one the reason allows (see
        ``preo_client.POLICY``): ``purchase_price``, ``purchase_deposit``, ``purchase_full``,
        ``purchase_custom``, ``transaction_full``, ``transaction_custom``.

        ``amount`` goes with the custom scopes only (required there, refused elsewhere: the
        server calculates it): a ``Decimal``, ``int`` or decimal ``str``, > 0, at most two
        decimal places and at most 9,999,999,999,999.99; a ``float`` only when its shortest
        form already has at most two places. ``comment`` is free text; ``pickup_point_id`` the
        pickup point where the refund is processed.

        ``idempotency_key`` (1-255 visible ASCII characters) is made once per call when not
        given (a UUID4) and sent unchanged by every retry, with the same body bytes.
        ``extra_headers`` are added to this request (``Authorization``, ``Idempotency-Key``,
        ``Content-Type``, ``Content-Length`` and ``Host`` cannot be overridden).
        ``extra_body`` adds JSON fields to the request body and ``extra_query`` query
        parameters (escape hatches for fields this version does not know); a name that would
        set ``reason``, ``scope``, ``amount``, ``comment`` or ``pickup_point_id`` is refused
        (those go through the refund policy), and ``extra_body`` must be exact JSON (no
        ``float``): every retry sends the same bytes.
        ``timeout`` (seconds or ``httpx.Timeout``) and ``max_retries`` override the client's
        for this call.

        Returns a :class:`~preo_client.Refund` (``amount`` an exact ``Decimal``). Raises
        :class:`~preo_client.RefundValidationError` (naming the field, before any network
        I/O), :class:`~preo_client.APIStatusError` subclasses for error answers,
        :class:`~preo_client.APIConnectionError` / :class:`~preo_client.APITimeoutError`,
        :class:`~preo_client.APIResponseValidationError`; any error after which the refund may
        exist is also a :class:`~preo_client.RefundOutcomeUnknownError` carrying the
        ``idempotency_key`` to retry with. Nothing else.
        """
        client = self._client
        call = client._prepare(
            purchase_id,
            reason=reason,
            scope=scope,
            amount=amount,
            comment=comment,
            pickup_point_id=pickup_point_id,
            idempotency_key=idempotency_key,
            timeout=timeout,
            extra_headers=extra_headers,
            max_retries=max_retries,
            extra_body=extra_body,
            extra_query=extra_query,
        )
        return client._send(call)

    def refund_many(
        self,
        items: Iterable[ItemInput],
        *,
        reason: Reason | RefundReason | None = None,
        scope: Scope | RefundScope | None = None,
        concurrency: int = 16,
        journal: str | Path | None = None,
        on_result: Callable[[RefundOutcome], None] | None = None,
        batch_id: str | None = None,
        max_pause: float = DEFAULT_MAX_PAUSE,
        max_rate: float | None = None,
        pacing: Literal["adaptive", "fixed"] = "adaptive",
    ) -> BulkRun:
        """Refund many purchases: an iterator of :class:`RefundOutcome` as they complete.

        ``items`` are purchase ids (with the common ``reason``/``scope``) or
        :class:`RefundItem`; they are read lazily. At most ``concurrency`` requests run at once
        (threads); a ``429``/``503`` pauses every worker for its ``Retry-After`` (up to
        ``max_pause`` seconds; a longer one stops the run). With ``journal`` (a file path: an
        SQLite journal one run holds at a time) a re-run skips what is done and resends
        in-flight items with their recorded key; ``batch_id`` makes the keys reproducible
        without it. ``pacing="adaptive"`` (default) sends as fast as ``concurrency`` allows until
        the server throttles, then follows its limit (a shared token bucket whose rate backs
        off on ``429``/``503`` and probes back up); ``max_rate`` caps requests per second
        (``pacing="fixed"``: exactly that rate, no adaptation). An invalid item is a failed
        outcome, not a crash. ``.run()`` returns the summary.
        """
        from ._bulk import BulkRun  # loaded on first use, like the rest of the bulk machinery

        return BulkRun(
            self._client,
            items,
            reason=_text(reason),
            scope=_text(scope),
            concurrency=concurrency,
            journal=journal,
            on_result=on_result,
            batch_id=batch_id,
            max_pause=max_pause,
            max_rate=max_rate,
            pacing=pacing,
        )


class AsyncPurchases:
    """``client.purchases`` of the async client."""

    def __init__(self, client: AsyncPreoClient) -> None:
        self._client = client

    async def refund(
        self,
        purchase_id: str,
        *,
        reason: Reason | RefundReason,
        scope: Scope | RefundScope | None = None,
        amount: Decimal | int | str | float | None = None,
        comment: str | None = None,
        pickup_point_id: str | None = None,
        idempotency_key: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_body: Mapping[str, object] | None = None,
        extra_query: Mapping[str, str | int] | None = None,
        timeout: Timeout | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
    ) -> Refund:
        """Create a refund request for ``purchase_id`` (``POST /v1/purchases/{id}/refund``).

        ``reason`` (required) is one of ``deposit_reclaim``, ``sold_out``, ``event_cancelled``,
        ``product_defect``, ``duplicate_purchase``, ``customer_request``, ``compensation``,
        ``overcharge``, ``other``, ``rental_return``. ``scope`` is derived from it when omitted
        (and always sent explicitly); an override must be one the reason allows (see
        ``preo_client.POLICY``): ``purchase_price``, ``purchase_deposit``, ``purchase_full``,
        ``purchase_custom``, ``transaction_full``, ``transaction_custom``.

        ``amount`` goes with the custom scopes only (required there, refused elsewhere: the
        server calculates it): a ``Decimal``, ``int`` or decimal ``str``, > 0, at most two
        decimal places and at most 9,999,999,999,999.99; a ``float`` only when its shortest
        form already has at most two places. ``comment`` is free text; ``pickup_point_id`` the
        pickup point where the refund is processed.

        ``idempotency_key`` (1-255 visible ASCII characters) is made once per call when not
        given (a UUID4) and sent unchanged by every retry, with the same body bytes.
        ``extra_headers`` are added to this request (``Authorization``, ``Idempotency-Key``,
        ``Content-Type``, ``Content-Length`` and ``Host`` cannot be overridden).
        ``extra_body`` adds JSON fields to the request body and ``extra_query`` query
        parameters (escape hatches for fields this version does not know); a name that would
        set ``reason``, ``scope``, ``amount``, ``comment`` or ``pickup_point_id`` is refused
        (those go through the refund policy), and ``extra_body`` must be exact JSON (no
        ``float``): every retry sends the same bytes.
        ``timeout`` (seconds or ``httpx.Timeout``) and ``max_retries`` override the client's
        for this call.

        Returns a :class:`~preo_client.Refund` (``amount`` an exact ``Decimal``). Raises
        :class:`~preo_client.RefundValidationError` (naming the field, before any network
        I/O), :class:`~preo_client.APIStatusError` subclasses for error answers,
        :class:`~preo_client.APIConnectionError` / :class:`~preo_client.APITimeoutError`,
        :class:`~preo_client.APIResponseValidationError`; any error after which the refund may
        exist is also a :class:`~preo_client.RefundOutcomeUnknownError` carrying the
        ``idempotency_key`` to retry with. Nothing else.
        """
        client = self._client
        call = client._prepare(
            purchase_id,
            reason=reason,
            scope=scope,
            amount=amount,
            comment=comment,
            pickup_point_id=pickup_point_id,
            idempotency_key=idempotency_key,
            timeout=timeout,
            extra_headers=extra_headers,
            max_retries=max_retries,
            extra_body=extra_body,
            extra_query=extra_query,
        )
        return await client._send(call)

    def refund_many(
        self,
        items: Iterable[ItemInput] | AsyncIterable[ItemInput],
        *,
        reason: Reason | RefundReason | None = None,
        scope: Scope | RefundScope | None = None,
        concurrency: int = 16,
        journal: str | Path | None = None,
        on_result: OnResult | None = None,
        batch_id: str | None = None,
        max_pause: float = DEFAULT_MAX_PAUSE,
        max_rate: float | None = None,
        pacing: Literal["adaptive", "fixed"] = "adaptive",
    ) -> AsyncBulkRun:
        """Refund many purchases concurrently (see :meth:`Purchases.refund_many`).

        Returns an async iterator of :class:`RefundOutcome` in completion order; ``items`` may
        be an iterable or an async iterable; ``on_result`` may be a coroutine function.
        """
        from ._bulk import AsyncBulkRun

        return AsyncBulkRun(
            self._client,
            items,
            reason=_text(reason),
            scope=_text(scope),
            concurrency=concurrency,
            journal=journal,
            on_result=on_result,
            batch_id=batch_id,
            max_pause=max_pause,
            max_rate=max_rate,
            pacing=pacing,
        )
