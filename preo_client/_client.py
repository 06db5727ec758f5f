"""PreoClient and AsyncPreoClient: settings, the retry loop, and the ``purchases`` resource."""

from __future__ import annotations

import abc
import functools
import json
import logging
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from decimal import Decimal
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import httpx

from ._call import Call as _Call
from ._call import CallState
from ._config import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    USER_AGENT,
    ConfigurationError,
    resolve_api_key,
    resolve_base_url,
)
from ._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APITimeoutError,
    make_status_error,
    mark_outcome_unknown,
)
from ._idempotency import check_idempotency_key, new_idempotency_key
from ._models import Refund, parse_refund
from ._policy import (
    Reason,
    Scope,
    check_comment,
    check_pickup_point_id,
    check_purchase_id,
    plan_refund,
)
from ._retry import (
    RETRY_AFTER_CAP,
    Backoff,
    Failure,
    classify_status,
    parse_retry_after,
    should_retry,
)

if TYPE_CHECKING:
    from ._bulk import AsyncBulkRun, BulkRun, ItemInput, OnResult, RefundOutcome
    from ._generated.models.refund_reason import RefundReason
    from ._generated.models.refund_scope import RefundScope

__all__ = ["AsyncPreoClient", "PreoClient"]

log = logging.getLogger("preo_client")

MAX_RESPONSE_BYTES: Final = 1024 * 1024
_JSON: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
# The waits between attempts; module attributes so a test can record them instead of sleeping.
_sleep = time.sleep


async def _async_sleep(seconds: float) -> None:
    import asyncio  # imported on first use: `import preo_client` stays cheap for sync users

    await asyncio.sleep(seconds)


TimeoutTypes = float | httpx.Timeout | None
_HttpT = TypeVar("_HttpT", httpx.Client, httpx.AsyncClient)
_SENTINEL: Any = object()


@functools.cache
def _generated() -> Any:
    """The generated endpoint and models, imported on the first call, not at `import`
    time (they bring attrs and dateutil; a process that never refunds never pays for them)."""
    from types import SimpleNamespace

    from ._generated.api.purchases import create_purchase_refund
    from ._generated.models.refund_reason import RefundReason
    from ._generated.models.refund_request_create import RefundRequestCreate
    from ._generated.models.refund_scope import RefundScope
    from ._generated.types import UNSET

    return SimpleNamespace(
        endpoint=create_purchase_refund,
        RefundReason=RefundReason,
        RefundRequestCreate=RefundRequestCreate,
        RefundScope=RefundScope,
        UNSET=UNSET,
    )


class _AttemptFailed(Exception):
    """Internal: one attempt failed; carries the public error and how to treat it."""

    def __init__(self, error: APIError, failure: Failure, retry_after: float | None = None):
        super().__init__(error.message)
        self.error = error
        self.failure = failure
        self.retry_after = retry_after


# Failures before the request left this machine; UnsupportedProtocol is a bad URL scheme.
_NOT_SENT_ERRORS: Final = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)


def _transport_failure(exc: httpx.TransportError, call: _Call) -> _AttemptFailed:
    """Map an httpx transport exception to our error and its retry class."""
    if isinstance(exc, httpx.TimeoutException):
        error: APIConnectionError = APITimeoutError(
            f"Request timed out ({type(exc).__name__})",
            request=call.request,
            idempotency_key=call.idempotency_key,
        )
    else:
        detail = str(exc) or type(exc).__name__
        error = APIConnectionError(
            f"Connection error ({type(exc).__name__}: {detail})",
            request=call.request,
            idempotency_key=call.idempotency_key,
        )
    if isinstance(exc, _NOT_SENT_ERRORS):
        return _AttemptFailed(error, Failure.NOT_SENT)
    return _AttemptFailed(mark_outcome_unknown(error), Failure.UNKNOWN)


def _finish(response: httpx.Response, content: bytes, call: _Call) -> Refund:
    """Turn a fully read response into a Refund or raise _AttemptFailed."""
    request_id = response.headers.get("x-request-id")
    if 200 <= response.status_code < 300:
        try:
            return parse_refund(
                response, content, idempotency_key=call.idempotency_key, request_id=request_id
            )
        except APIResponseValidationError as exc:
            raise _AttemptFailed(exc, Failure.FINAL) from None
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    error = make_status_error(
        response,
        content=content,
        request_id=request_id,
        idempotency_key=call.idempotency_key,
        retry_after=retry_after,
    )
    raise _AttemptFailed(error, classify_status(response.status_code), retry_after)


def _too_large(response: httpx.Response, call: _Call) -> APIResponseValidationError:
    return APIResponseValidationError(
        f"Response body larger than {MAX_RESPONSE_BYTES} bytes refused "
        f"(status {response.status_code})",
        response=response,
        body="",
        request_id=response.headers.get("x-request-id"),
        idempotency_key=call.idempotency_key,
    )


def _declared_too_large(response: httpx.Response) -> bool:
    length = response.headers.get("content-length", "")
    return length.isdigit() and int(length) > MAX_RESPONSE_BYTES


def _as_timeout(timeout: TimeoutTypes) -> httpx.Timeout:
    return timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)


class _BaseClient(abc.ABC, Generic[_HttpT]):
    """Settings and request building shared by the sync and async clients."""

    _http: _HttpT

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: TimeoutTypes = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: _HttpT | None = None,
        default_headers: Mapping[str, str] | None = None,
        retry_unknown_outcome: bool = False,
        allow_insecure_http: bool = False,
        backoff: Backoff = Backoff(),  # noqa: B008 - immutable
    ) -> None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be an int >= 0, got {max_retries!r}")
        self._api_key = resolve_api_key(api_key)
        self.base_url = resolve_base_url(base_url, allow_insecure_http=allow_insecure_http)
        self.timeout = _as_timeout(timeout)
        self.max_retries = max_retries
        self.retry_unknown_outcome = retry_unknown_outcome
        self.allow_insecure_http = allow_insecure_http
        self.backoff = backoff
        self.default_headers: dict[str, str] = dict(default_headers or {})
        self._headers: dict[str, str] = {
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            **self.default_headers,
            "Authorization": f"Bearer {self._api_key}",
        }
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else self._new_http_client()
        # Requests are built here, not by ``build_request``: the HTTP client's own default
        # headers (Accept-Encoding, ...) are taken once, ours win, and nothing is merged per
        # call. (Cookies and query params of an injected client are not used: this API takes
        # neither.) Auth, event hooks, proxies and transports of the client still apply.
        self._request_headers = {
            **{name.lower(): value for name, value in self._http.headers.items()},
            **{name.lower(): value for name, value in self._headers.items()},
        }

    @abc.abstractmethod
    def _new_http_client(self) -> _HttpT:
        """The HTTP client this client creates (and closes) when none is injected."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, max_retries={self.max_retries}, "
            f"retry_unknown_outcome={self.retry_unknown_outcome}, api_key='***')"
        )

    def _options(self, **overrides: Any) -> dict[str, Any]:
        options: dict[str, Any] = {
            "api_key": self._api_key,
            "base_url": self.base_url,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "http_client": self._http,
            "default_headers": self.default_headers,
            "retry_unknown_outcome": self.retry_unknown_outcome,
            "allow_insecure_http": self.allow_insecure_http,
            "backoff": self.backoff,
        }
        unknown = set(overrides) - set(options)
        if unknown:
            raise TypeError(f"with_options() got unknown options: {', '.join(sorted(unknown))}")
        options.update(overrides)
        return options

    def _prepare(
        self,
        purchase_id: str,
        *,
        reason: Reason | RefundReason | str,
        scope: Scope | RefundScope | str | None,
        amount: Decimal | int | str | float | None,
        comment: str | None,
        pickup_point_id: str | None,
        idempotency_key: str | None,
        timeout: TimeoutTypes | object,
    ) -> _Call:
        """Check every argument (no I/O) and build the one request all attempts send."""
        purchase_id = check_purchase_id(purchase_id)
        plan = plan_refund(reason, scope, amount)
        comment = check_comment(comment)
        pickup_point_id = check_pickup_point_id(pickup_point_id)
        key = (
            new_idempotency_key()
            if idempotency_key is None
            else check_idempotency_key(idempotency_key)
        )
        gen = _generated()
        unset = gen.UNSET
        body = gen.RefundRequestCreate(
            reason=gen.RefundReason(plan.reason),
            scope=gen.RefundScope(plan.scope),
            amount=unset if plan.amount is None else float(plan.amount),
            comment=unset if comment is None else comment,
            pickup_point_id=unset if pickup_point_id is None else pickup_point_id,
        )
        kwargs = gen.endpoint._get_kwargs(purchase_id, body=body, idempotency_key=key)
        content = _JSON.encode(kwargs["json"])
        headers = self._request_headers.copy()
        for name, value in kwargs["headers"].items():
            headers[name.lower()] = value
        per_call = self.timeout if timeout is _SENTINEL else _as_timeout(timeout)  # type: ignore[arg-type]
        request = httpx.Request(
            kwargs["method"].upper(),
            self.base_url + kwargs["url"],
            content=content.encode(),
            headers=headers,
            extensions={"timeout": per_call.as_dict()},
        )
        return _Call(request=request, plan=plan, idempotency_key=key)

    def _after_failure(self, failed: _AttemptFailed, call: _Call, state: CallState) -> float:
        """Raise the public error if ``failed`` ends the call; else the seconds to wait."""
        state.unknown_seen = state.unknown_seen or failed.failure is Failure.UNKNOWN
        delay = self._next_delay(failed, call, state)
        if delay is None:
            # once an attempt may have landed, every later error says so
            error = failed.error
            raise (mark_outcome_unknown(error) if state.unknown_seen else error) from (
                failed.__cause__
            )
        if state.pause is not None and failed.failure is Failure.REFUSED:
            state.pause.extend(delay)  # every worker of the run waits, not just this one
            return 0.0
        return delay

    def _next_delay(self, failed: _AttemptFailed, call: _Call, state: CallState) -> float | None:
        """Seconds to wait before the next attempt, or None to raise ``failed.error``."""
        attempt = state.attempts
        if not should_retry(
            failed.failure,
            attempt=attempt,
            max_retries=self.max_retries if state.max_retries is None else state.max_retries,
            retry_unknown_outcome=self.retry_unknown_outcome,
            retry_after=failed.retry_after,
            retry_after_cap=(
                RETRY_AFTER_CAP if state.retry_after_cap is None else state.retry_after_cap
            ),
        ):
            log.debug(
                "refund %s attempt %d failed, not retried: %s",
                call.idempotency_key,
                attempt,
                failed.error.message,
            )
            return None
        delay = self.backoff.delay(attempt, failed.retry_after)
        log.debug(
            "refund %s attempt %d failed (%s), retrying in %.3fs",
            call.idempotency_key,
            attempt,
            failed.failure.value,
            delay,
        )
        return delay


class Purchases:
    """``client.purchases``: the purchase endpoints (refunds)."""

    def __init__(self, client: PreoClient) -> None:
        self._client = client

    def refund(
        self,
        purchase_id: str,
        *,
        reason: Reason | RefundReason | str,
        scope: Scope | RefundScope | str | None = None,
        amount: Decimal | int | str | float | None = None,
        comment: str | None = None,
        pickup_point_id: str | None = None,
        idempotency_key: str | None = None,
        timeout: TimeoutTypes = _SENTINEL,
    ) -> Refund:
        """Create a refund request for ``purchase_id``.

        The scope is derived from ``reason`` when omitted and sent explicitly; ``amount`` goes
        with the custom scopes only. Every argument is checked before any network I/O
        (:class:`RefundValidationError`). One idempotency key is made per call (or
        ``idempotency_key`` is used as given) and every retry sends it with the same body.
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
        )
        return client._send(call)

    def refund_many(
        self,
        items: Iterable[ItemInput],
        *,
        reason: Reason | RefundReason | str | None = None,
        scope: Scope | RefundScope | str | None = None,
        concurrency: int = 16,
        journal: str | Path | None = None,
        on_result: Callable[[RefundOutcome], None] | None = None,
    ) -> BulkRun:
        """Refund many purchases: an iterator of :class:`RefundOutcome` as they complete.

        ``items`` are purchase ids (with the common ``reason``/``scope``) or
        :class:`RefundItem`; they are read lazily. At most ``concurrency`` requests run at once
        (threads); a ``429``/``503`` pauses every worker. With ``journal`` (a file path) a
        re-run skips what is done and resends in-flight items with their recorded key. An
        invalid item is a failed outcome, not a crash. ``.run()`` returns the summary.
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
        )


class AsyncPurchases:
    """``client.purchases`` of the async client."""

    def __init__(self, client: AsyncPreoClient) -> None:
        self._client = client

    async def refund(
        self,
        purchase_id: str,
        *,
        reason: Reason | RefundReason | str,
        scope: Scope | RefundScope | str | None = None,
        amount: Decimal | int | str | float | None = None,
        comment: str | None = None,
        pickup_point_id: str | None = None,
        idempotency_key: str | None = None,
        timeout: TimeoutTypes = _SENTINEL,
    ) -> Refund:
        """Create a refund request for ``purchase_id`` (see :meth:`Purchases.refund`)."""
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
        )
        return await client._send(call)

    def refund_many(
        self,
        items: Iterable[ItemInput] | AsyncIterable[ItemInput],
        *,
        reason: Reason | RefundReason | str | None = None,
        scope: Scope | RefundScope | str | None = None,
        concurrency: int = 16,
        journal: str | Path | None = None,
        on_result: OnResult | None = None,
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
        )


def _text(value: str | Enum | None) -> str | None:
    return value.value if isinstance(value, Enum) else value


class PreoClient(_BaseClient[httpx.Client]):
    """Synchronous client for the Preo refund API.

    Settings (keyword-only): ``api_key`` (else ``PREO_API_KEY``), ``base_url`` (else
    ``PREO_BASE_URL``, else ``https://api.preo.dev``), ``timeout`` (default 30 s per attempt,
    5 s to connect), ``max_retries`` (default 2), ``http_client`` (an ``httpx.Client`` for
    proxies, custom CAs or transports; never closed by this client), ``default_headers``,
    ``retry_unknown_outcome`` (retry read timeouts and 500/502/504 with the same idempotency
    key; only for servers that honour it), ``allow_insecure_http`` and ``backoff``.

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: TimeoutTypes = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.Client | None = None,
        default_headers: Mapping[str, str] | None = None,
        retry_unknown_outcome: bool = False,
        allow_insecure_http: bool = False,
        backoff: Backoff = Backoff(),  # noqa: B008 - immutable
    ) -> None:
        if http_client is not None and not isinstance(http_client, httpx.Client):
            raise ConfigurationError("http_client must be an httpx.Client for PreoClient")
        super().__init__(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            http_client=http_client,
            default_headers=default_headers,
            retry_unknown_outcome=retry_unknown_outcome,
            allow_insecure_http=allow_insecure_http,
            backoff=backoff,
        )
        self.purchases = Purchases(self)
        # Every wait of the retry loop goes through this; the sandbox sets a virtual clock.
        self._sleep: Callable[[float], None] | None = None

    def _new_http_client(self) -> httpx.Client:
        return httpx.Client(timeout=self.timeout, follow_redirects=False)

    def with_options(self, **options: Any) -> PreoClient:
        """A copy with some settings changed; it shares (and never closes) the HTTP client."""
        return PreoClient(**self._options(**options))

    def _send(self, call: _Call, state: CallState | None = None) -> Refund:
        """Attempt ``call`` until it succeeds or may not be retried (the retry loop)."""
        state = state if state is not None else CallState()
        while True:
            if state.pause is not None and (wait := state.pause.remaining()) > 0:
                (self._sleep or _sleep)(wait)
            if state.pacer is not None and (wait := state.pacer.reserve()) > 0:
                (self._sleep or _sleep)(wait)
            state.attempts += 1
            try:
                refund = self._attempt(call, state.attempts)
            except _AttemptFailed as failed:
                if state.pacer is not None:
                    state.pacer.observe(throttled=failed.failure is Failure.REFUSED)
                delay = self._after_failure(failed, call, state)
            else:
                if state.pacer is not None:
                    state.pacer.observe(throttled=False)
                return refund
            if delay:
                (self._sleep or _sleep)(delay)

    def _attempt(self, call: _Call, attempt: int) -> Refund:
        log.debug(
            "POST %s attempt %d/%d idempotency_key=%s",
            call.request.url,
            attempt,
            self.max_retries + 1,
            call.idempotency_key,
        )
        try:
            response = self._http.send(call.request, stream=True, follow_redirects=False)
        except httpx.TransportError as exc:
            raise _transport_failure(exc, call) from exc
        try:
            if _declared_too_large(response):
                raise _AttemptFailed(_too_large(response, call), Failure.FINAL)
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise _AttemptFailed(_too_large(response, call), Failure.FINAL)
                chunks.append(chunk)
        except httpx.TransportError as exc:
            raise _transport_failure(exc, call) from exc
        finally:
            response.close()
        return _finish(response, b"".join(chunks), call)

    def close(self) -> None:
        """Close the HTTP client if this client created it (an injected one stays open)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> PreoClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncPreoClient(_BaseClient[httpx.AsyncClient]):
    """Asynchronous client for the Preo refund API; settings as for :class:`PreoClient`.

    ``http_client`` is an ``httpx.AsyncClient``. Use it as an async context manager, or await
    :meth:`aclose`.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: TimeoutTypes = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.AsyncClient | None = None,
        default_headers: Mapping[str, str] | None = None,
        retry_unknown_outcome: bool = False,
        allow_insecure_http: bool = False,
        backoff: Backoff = Backoff(),  # noqa: B008 - immutable
    ) -> None:
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise ConfigurationError("http_client must be an httpx.AsyncClient for AsyncPreoClient")
        super().__init__(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            http_client=http_client,
            default_headers=default_headers,
            retry_unknown_outcome=retry_unknown_outcome,
            allow_insecure_http=allow_insecure_http,
            backoff=backoff,
        )
        self.purchases = AsyncPurchases(self)
        self._sleep: Callable[[float], Awaitable[None]] | None = None

    def _new_http_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)

    def with_options(self, **options: Any) -> AsyncPreoClient:
        """A copy with some settings changed; it shares (and never closes) the HTTP client."""
        return AsyncPreoClient(**self._options(**options))

    async def _send(self, call: _Call, state: CallState | None = None) -> Refund:
        """Attempt ``call`` until it succeeds or may not be retried (the retry loop)."""
        state = state if state is not None else CallState()
        while True:
            if state.pause is not None and (wait := state.pause.remaining()) > 0:
                await (self._sleep or _async_sleep)(wait)
            if state.pacer is not None and (wait := state.pacer.reserve()) > 0:
                await (self._sleep or _async_sleep)(wait)
            state.attempts += 1
            try:
                refund = await self._attempt(call, state.attempts)
            except _AttemptFailed as failed:
                if state.pacer is not None:
                    state.pacer.observe(throttled=failed.failure is Failure.REFUSED)
                delay = self._after_failure(failed, call, state)
            else:
                if state.pacer is not None:
                    state.pacer.observe(throttled=False)
                return refund
            if delay:
                await (self._sleep or _async_sleep)(delay)

    async def _attempt(self, call: _Call, attempt: int) -> Refund:
        log.debug(
            "POST %s attempt %d/%d idempotency_key=%s",
            call.request.url,
            attempt,
            self.max_retries + 1,
            call.idempotency_key,
        )
        try:
            response = await self._http.send(call.request, stream=True, follow_redirects=False)
        except httpx.TransportError as exc:
            raise _transport_failure(exc, call) from exc
        try:
            if _declared_too_large(response):
                raise _AttemptFailed(_too_large(response, call), Failure.FINAL)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise _AttemptFailed(_too_large(response, call), Failure.FINAL)
                chunks.append(chunk)
        except httpx.TransportError as exc:
            raise _transport_failure(exc, call) from exc
        finally:
            await response.aclose()
        return _finish(response, b"".join(chunks), call)

    async def aclose(self) -> None:
        """Close the HTTP client if this client created it (an injected one stays open)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncPreoClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
