"""PreoClient and AsyncPreoClient: settings, and the sync and async network loops only.

Every decision that needs no I/O — checking arguments, building the request, what a failure
means, whether to retry and how long to wait — is made in :mod:`._call`, :mod:`._retry` and
:class:`_BaseClient`; the two clients repeat only the loop that sends and reads.
"""

from __future__ import annotations

import abc
import contextlib
import sys
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import httpx

from ._call import (
    ACCEPTED_ENCODINGS,
    AttemptFailed,
    BodyReader,
    Call,
    CallState,
    _secret,
    already_read,
    attempt_ended,
    attempt_started,
    body_problem_of,
    build_call,
    deadline_failure,
    finish,
    hook_changes,
    hook_status_answer,
    keep_body,
    reserve,
    settle,
    transport_failure,
)
from ._config import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    NOT_GIVEN,
    USER_AGENT,
    ClientSettings,
    ConfigurationError,
    NotGiven,
    Timeout,
    as_timeout,
    check_client_headers,
    check_headers,
    check_max_retries,
    given,
    total_seconds,
)
from ._deadline import ATTEMPT_DEADLINE, bound_attempts
from ._exceptions import RefundValidationError, mark_outcome_unknown, scrub_error
from ._extras import check_extra_body, check_extra_query
from ._observe import setup_logging, watch_call
from ._resources import AsyncPurchases, Purchases
from ._retry import RETRY_AFTER_CAP, Backoff, Failure, should_retry
from ._stray import guard_pools, is_blind
from ._watchdog import Watchdog

if TYPE_CHECKING:
    import asyncio

    from ._models import Refund

__all__ = ["AsyncPreoClient", "PreoClient"]

setup_logging()

# The waits between attempts; module attributes so a test can record them instead of sleeping
# (a client's own ``_sleep``, set by the sandbox to a virtual clock, wins over these).
_sleep = time.sleep


async def _async_sleep(seconds: float) -> None:
    import asyncio  # imported on first use: `import preo_client` stays cheap for sync users

    await asyncio.sleep(seconds)


_HttpT = TypeVar("_HttpT", httpx.Client, httpx.AsyncClient)
_C = TypeVar("_C", bound="_BaseClient[Any]")
_DEFAULT_BACKOFF: Final = Backoff()


class _BaseClient(abc.ABC, Generic[_HttpT]):
    """Settings, request building and retry decisions shared by the sync and async clients."""

    _http: _HttpT

    def __init__(
        self,
        *,
        settings: ClientSettings,
        http_client: _HttpT | None,
        owns_http: bool,
    ) -> None:
        self._settings = settings
        self._owns_http = owns_http
        self._http = http_client if http_client is not None else self._new_http_client()
        check_client_headers(self._http.headers)  # its Host, framing, ... go out on every call
        guard_pools(self._http)  # a connection with bytes past its answer is never reused
        # A transport whose connections cannot be checked: no refund leaves its connection open,
        # and its pools are looked for again before every attempt (a wrapper may build one
        # late); httpx's own transports keep the pools guarded here for the client's life.
        self._blind = is_blind(self._http)
        blind = {"connection": "close"} if self._blind else {}
        # Requests are built here, not by ``build_request``: the HTTP client's own default
        # headers (Accept-Encoding, ...) are taken once, ours win, and nothing is merged per
        # call. (Cookies and query params of an injected client are not used: this API takes
        # neither.) Auth, event hooks, proxies and transports of the client still apply.
        self._request_headers: dict[str, str] = {
            **{name.lower(): value for name, value in self._http.headers.items()},
            # what the body reader decodes (httpx offers br/zstd when brotli/zstandard are
            # installed: such an answer would make a created refund unreadable)
            "accept-encoding": ACCEPTED_ENCODINGS,
            "accept": "application/json",
            "user-agent": USER_AGENT,
            **settings.default_headers,
            **blind,
            "authorization": f"Bearer {settings.api_key}",
        }
        self._headers = httpx.Headers(self._request_headers)  # normalized once, copied per call
        self._deadline = total_seconds(settings.timeout)

    @abc.abstractmethod
    def _new_http_client(self) -> _HttpT:
        """The HTTP client this client creates (and closes) when none is injected."""

    # -- settings, read-only -----------------------------------------------------------------

    @property
    def settings(self) -> ClientSettings:
        """Every setting of this client, as one frozen value (the API key hidden in its repr)."""
        return self._settings

    @property
    def base_url(self) -> str:
        """The API's base URL, without a trailing slash."""
        return self._settings.base_url

    @property
    def timeout(self) -> httpx.Timeout:
        """Per-attempt timeouts; the largest of them also bounds each attempt in total."""
        return self._settings.timeout

    @property
    def max_retries(self) -> int:
        """Retries after the first attempt (only failures that cannot refund twice)."""
        return self._settings.max_retries

    @property
    def retry_unknown_outcome(self) -> bool:
        """Whether failures after which the refund may exist are retried with the same key."""
        return self._settings.retry_unknown_outcome

    @property
    def backoff(self) -> Backoff:
        """The waits between attempts."""
        return self._settings.backoff

    @property
    def default_headers(self) -> Mapping[str, str]:
        """Headers added to every request."""
        return self._settings.default_headers

    def __repr__(self) -> str:
        s = self._settings
        return (
            f"{type(self).__name__}(base_url={s.base_url!r}, max_retries={s.max_retries}, "
            f"retry_unknown_outcome={s.retry_unknown_outcome}, api_key='***')"
        )

    def _check_open(self) -> None:
        if self._http.is_closed:
            raise ConfigurationError(
                f"this {type(self).__name__} is closed (used after its `with` block or "
                "close()); nothing was sent"
            )

    def _copy(self: _C, changes: dict[str, Any]) -> _C:
        """A client of the same class with ``changes`` applied (NOT_GIVEN: unchanged), sharing
        the HTTP client unless one is given; the copy never closes it."""
        http = given(changes.pop("http_client"), self._http)
        if not isinstance(http, type(self._http)):
            raise ConfigurationError(
                f"http_client must be an {type(self._http).__module__}."
                f"{type(self._http).__name__} for {type(self).__name__}"
            )
        copy = type(self).__new__(type(self))
        _BaseClient.__init__(
            copy, settings=self._changed(changes), http_client=http, owns_http=False
        )
        copy._adopt(self)
        return copy

    @abc.abstractmethod
    def _adopt(self: _C, original: _C) -> None:
        """Set up a copy's own parts (resources, sleep, loop binding) from ``original``."""

    def _changed(self, changes: dict[str, Any]) -> ClientSettings:
        s = self._settings
        merged: dict[str, Any] = {
            "api_key": s.api_key,
            "base_url": s.base_url,
            "timeout": s.timeout,
            "max_retries": s.max_retries,
            "default_headers": s.default_headers,
            "retry_unknown_outcome": s.retry_unknown_outcome,
            "allow_insecure_http": s.allow_insecure_http,
            "backoff": s.backoff,
        }
        merged.update({k: v for k, v in changes.items() if not isinstance(v, NotGiven)})
        return ClientSettings.resolve(**merged)

    # -- one call, no I/O --------------------------------------------------------------------

    def _prepare(
        self,
        purchase_id: str,
        *,
        reason: object,
        scope: object,
        amount: object,
        comment: object,
        pickup_point_id: object,
        idempotency_key: object,
        timeout: object = NOT_GIVEN,
        extra_headers: Mapping[str, str] | None = None,
        max_retries: object = NOT_GIVEN,
        extra_body: object = None,
        extra_query: object = None,
    ) -> Call:
        """Check every argument (no I/O) and build the one request all attempts send."""
        body = None if extra_body is None else check_extra_body(extra_body)
        query = None if extra_query is None else check_extra_query(extra_query)
        headers: Mapping[str, str] = self._headers
        if extra_headers:
            try:
                extra = check_headers(extra_headers, field="extra_headers")
            except ConfigurationError as exc:
                raise RefundValidationError("extra_headers", str(exc)) from None
            headers = {**self._request_headers, **extra}
        if isinstance(timeout, NotGiven) or timeout is self._settings.timeout:
            per_call, deadline = self._settings.timeout, self._deadline
        else:
            try:
                per_call = as_timeout(timeout)
            except ConfigurationError as exc:
                raise RefundValidationError("timeout", str(exc)) from None
            deadline = total_seconds(per_call)
        if isinstance(max_retries, NotGiven):
            retries = self._settings.max_retries
        else:
            try:
                retries = check_max_retries(max_retries)
            except ConfigurationError as exc:
                raise RefundValidationError("max_retries", str(exc)) from None
        return build_call(
            base_url=self._settings.base_url,
            headers=headers,
            purchase_id=purchase_id,
            reason=reason,
            scope=scope,
            amount=amount,
            comment=comment,
            pickup_point_id=pickup_point_id,
            idempotency_key=idempotency_key,
            timeout=per_call,
            deadline=deadline,
            max_retries=retries,
            extra_body=body,
            extra_query=query,
        )

    def _check_hooks(self, call: Call) -> None:
        """Raise when a request event hook of the HTTP client changed the refund request."""
        if self._http.event_hooks["request"]:  # (no hook: nothing to compare)
            failed = hook_changes(call, self._request_headers["authorization"])
            if failed is not None:
                raise failed

    def _after_failure(self, failed: AttemptFailed, call: Call, state: CallState) -> float:
        """Raise the public error if ``failed`` ends the call; else the seconds to wait."""
        state.unknown_seen = state.unknown_seen or failed.failure is Failure.UNKNOWN
        attempt = state.attempts
        retries = call.max_retries if state.max_retries is None else state.max_retries
        cap = RETRY_AFTER_CAP if state.retry_after_cap is None else state.retry_after_cap
        if not should_retry(
            failed.failure,
            attempt=attempt,
            max_retries=retries,
            retry_unknown_outcome=self._settings.retry_unknown_outcome,
            retry_after=failed.retry_after,
            retry_after_cap=cap,
        ):
            if state.watch is not None:
                state.watch.failed(failed, None)
            # once an attempt may have landed, every later error of the call says so
            error = scrub_error(failed.error, _secret(call))
            raise (mark_outcome_unknown(error) if state.unknown_seen else error) from (
                failed.__cause__
            )
        delay = self._settings.backoff.delay(attempt, failed.retry_after)
        if state.watch is not None:
            state.watch.failed(failed, delay)
        if state.pause is not None and _pauses_the_run(failed, state, delay):
            state.pause.extend(delay)  # every worker of the run waits, not just this one
            return 0.0
        return delay


def _pauses_the_run(failed: AttemptFailed, state: CallState, delay: float) -> bool:
    """Whether a refused attempt's wait holds back every worker of a bulk run.

    A ``503`` (an outage) or any wait beyond the single-call cap does. A short ``429`` (a
    rate limit) under adaptive pacing does not: the shared rate has just been cut for
    everyone, and only the refused item waits out its ``Retry-After``.
    """
    if failed.failure is not Failure.REFUSED:
        return False
    rate_limited = getattr(failed.error, "status_code", None) == 429
    paced = state.pacer is not None and state.pacer.paces_throttling
    return not (rate_limited and paced and delay <= RETRY_AFTER_CAP)


#: Seconds an async attempt may run past its deadline before the watchdog cuts it (see
#: AsyncPreoClient._attempt): a transport's own timeout of the same length fires first.
DEADLINE_GRACE: Final = 0.1


def _cancelling(task: asyncio.Task[Any]) -> int:
    """Cancellations requested of ``task`` and not taken back (Python 3.10 cannot tell: 0)."""
    if sys.version_info >= (3, 11):
        return task.cancelling()
    return 0  # pragma: no cover - Python 3.10


def _owner_cancelled_too(task: asyncio.Task[Any], before: int, cancels: int) -> bool:
    """Take back the watchdog's ``cancels`` cancellations of ``task``; True when another one
    came during the attempt (its owner's, which must win). Python 3.10 cannot tell: False."""
    if sys.version_info >= (3, 11):
        left = task.cancelling()
        for _ in range(cancels):
            left = task.uncancel()
        return left > before
    return False  # pragma: no cover - Python 3.10


class _LoopBinding:
    """The event loop an async HTTP client's connections belong to (set on first use), and
    the watchdog that bounds the time of every attempt on that loop."""

    __slots__ = ("loop", "watchdog")

    def __init__(self) -> None:
        self.loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self.watchdog: Watchdog | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)
        self.watchdog = Watchdog(loop)


class PreoClient(_BaseClient[httpx.Client]):
    """Synchronous client for the Preo refund API.

    Settings (keyword-only; each falls back as listed):

    - ``api_key``: else the ``PREO_API_KEY`` environment variable; visible ASCII only, never
      shown in a repr, log or error.
    - ``base_url``: else ``PREO_BASE_URL``, else ``https://api.preo.dev``; ``https`` unless the
      host is loopback (``localhost``, ``127.0.0.0/8``, ``::1``) or ``allow_insecure_http``.
    - ``timeout``: seconds or an ``httpx.Timeout`` (default 30 s, 5 s to connect); bounds each
      attempt's connect, write and each read, and the largest value bounds the whole attempt,
      headers and body included (this client's own HTTP client gives every socket wait at most
      what is left of the attempt; with an injected ``http_client`` the total is checked
      between reads of the body only).
    - ``max_retries``: default 2; only failures that cannot refund twice are retried.
    - ``retry_unknown_outcome``: also retry, with the same idempotency key, failures after which
      the refund may exist (read timeouts, 5xx but 503); only for a server that honours the key.
    - ``http_client``: an ``httpx.Client`` (proxies, custom CAs, transports); never closed here.
    - ``default_headers``, ``backoff`` (``Backoff(base=0.5, cap=8.0)``), ``allow_insecure_http``.

    ``PREO_LOG=info|debug|json`` logs one record per attempt on the ``preo_client`` logger.
    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.Client | None = None,
        default_headers: Mapping[str, str] | None = None,
        retry_unknown_outcome: bool = False,
        allow_insecure_http: bool = False,
        backoff: Backoff = _DEFAULT_BACKOFF,
    ) -> None:
        if http_client is not None and not isinstance(http_client, httpx.Client):
            raise ConfigurationError("http_client must be an httpx.Client for PreoClient")
        settings = ClientSettings.resolve(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            default_headers=default_headers,
            retry_unknown_outcome=retry_unknown_outcome,
            allow_insecure_http=allow_insecure_http,
            backoff=backoff,
        )
        super().__init__(settings=settings, http_client=http_client, owns_http=http_client is None)
        self.purchases: Purchases = Purchases(self)
        # Every wait of the retry loop goes through this; the sandbox sets a virtual clock.
        self._sleep: Callable[[float], None] | None = None

    def _new_http_client(self) -> httpx.Client:
        http = httpx.Client(timeout=self.timeout, follow_redirects=False)
        bound_attempts(http)  # every socket wait within the attempt's total
        return http

    def with_options(
        self,
        *,
        api_key: str | NotGiven = NOT_GIVEN,
        base_url: str | NotGiven = NOT_GIVEN,
        timeout: Timeout | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
        http_client: httpx.Client | NotGiven = NOT_GIVEN,
        default_headers: Mapping[str, str] | NotGiven = NOT_GIVEN,
        retry_unknown_outcome: bool | NotGiven = NOT_GIVEN,
        allow_insecure_http: bool | NotGiven = NOT_GIVEN,
        backoff: Backoff | NotGiven = NOT_GIVEN,
    ) -> PreoClient:
        """A copy with some settings changed; it shares (and never closes) the HTTP client."""
        changes = dict(locals())
        del changes["self"]
        return self._copy(changes)

    def _adopt(self, original: PreoClient) -> None:
        self.purchases = Purchases(self)
        self._sleep = original._sleep

    def _send(self, call: Call, state: CallState | None = None) -> Refund:
        """Send ``call`` (retrying as allowed); logged and traced when that is on."""
        state = state if state is not None else CallState()
        watch = watch_call(call, state)
        if watch is None:
            return self._retry_loop(call, state)
        with watch:
            return watch.succeeded(self._retry_loop(call, state))

    def _retry_loop(self, call: Call, state: CallState) -> Refund:
        """Attempt ``call`` until it succeeds or may not be retried (the retry loop)."""
        self._check_open()
        sleep = self._sleep or _sleep
        while True:
            if state.pause is not None and (wait := state.pause.remaining()) > 0:
                sleep(wait)
            with reserve(state.pacer) as slot:  # settled exactly once, whatever happens
                while (wait := slot.until_ready()) > 0:
                    sleep(wait)
                state.attempts += 1
                if state.watch is not None:
                    state.watch.sending()
                sent_at = attempt_started(state)
                try:
                    refund = self._attempt(call, state.attempts)
                except AttemptFailed as failed:
                    settle(slot, failed)
                    attempt_ended(state, sent_at, failed=failed)
                    delay = self._after_failure(failed, call, state)
                else:
                    settle(slot, None)
                    attempt_ended(state, sent_at, refund=refund)
                    return refund
            if delay:
                (self._sleep or _sleep)(delay)

    def _attempt(self, call: Call, attempt: int) -> Refund:
        """Send once and read the answer; raises only :class:`AttemptFailed`."""
        started = time.monotonic()
        token = ATTEMPT_DEADLINE.set(started + call.deadline)
        try:
            return self._attempt_io(call, attempt, started)
        finally:
            ATTEMPT_DEADLINE.reset(token)

    def _attempt_io(self, call: Call, attempt: int, started: float) -> Refund:
        if self._blind:  # connections pooled since, by any pool now reachable
            guard_pools(self._http)
        try:
            # auth=None: an injected client's own auth (for another API) must not replace the
            # key, nor reach this API
            response = self._http.send(call.request, stream=True, follow_redirects=False, auth=None)
        except Exception as exc:  # every fault is classified: I1, I2
            self._check_hooks(call)
            answer = hook_status_answer(exc, call)  # a hook's raise_for_status: status decides
            if answer is None:
                failed = transport_failure(exc, call)
                raise failed from exc
            response = answer
        else:
            self._check_hooks(call)  # (each path checks once: the hook ran inside send)
        content = already_read(response)
        problem = None
        if content is None:
            reader = BodyReader(response)
            try:
                for raw in response.iter_raw():
                    reader.feed(raw)
                    if not reader.done and time.monotonic() - started > call.deadline:
                        reader.fail(f"body not complete within {call.deadline:g} s")
                    if reader.done:
                        break
            except Exception as exc:  # a read fault after the status line: the status decides
                reader.fail(body_problem_of(exc))
            finally:
                with contextlib.suppress(Exception):  # a broken stream must not hide the answer
                    response.close()
            content, problem = reader.result()
            keep_body(response, content, call)
        return finish(response, content, call, body_problem=problem)

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

    Settings (keyword-only; each falls back as listed):

    - ``api_key``: else the ``PREO_API_KEY`` environment variable; visible ASCII only, never
      shown in a repr, log or error.
    - ``base_url``: else ``PREO_BASE_URL``, else ``https://api.preo.dev``; ``https`` unless the
      host is loopback (``localhost``, ``127.0.0.0/8``, ``::1``) or ``allow_insecure_http``.
    - ``timeout``: seconds or an ``httpx.Timeout`` (default 30 s, 5 s to connect); bounds each
      attempt's connect, write and each read, and its largest value (plus 0.1 s, so that a
      transport's connect or pool timeout of that length is seen first) bounds each attempt,
      body included.
    - ``max_retries``: default 2; only failures that cannot refund twice are retried.
    - ``retry_unknown_outcome``: also retry, with the same idempotency key, failures after which
      the refund may exist (read timeouts, 5xx but 503); only for a server that honours the key.
    - ``http_client``: an ``httpx.AsyncClient`` (proxies, custom CAs, transports such as
      :class:`~preo_client.AiohttpTransport`); never closed here.
    - ``default_headers``, ``backoff`` (``Backoff(base=0.5, cap=8.0)``), ``allow_insecure_http``.

    A client is bound to the event loop of its first call (its connections are): using it
    from another loop raises ``ConfigurationError`` before anything is sent — make one client
    per loop. ``PREO_LOG=info|debug|json`` logs one record per attempt on the ``preo_client``
    logger. Use it as an async context manager, or await :meth:`aclose`.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.AsyncClient | None = None,
        default_headers: Mapping[str, str] | None = None,
        retry_unknown_outcome: bool = False,
        allow_insecure_http: bool = False,
        backoff: Backoff = _DEFAULT_BACKOFF,
    ) -> None:
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise ConfigurationError("http_client must be an httpx.AsyncClient for AsyncPreoClient")
        settings = ClientSettings.resolve(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            default_headers=default_headers,
            retry_unknown_outcome=retry_unknown_outcome,
            allow_insecure_http=allow_insecure_http,
            backoff=backoff,
        )
        super().__init__(settings=settings, http_client=http_client, owns_http=http_client is None)
        self.purchases: AsyncPurchases = AsyncPurchases(self)
        self._sleep: Callable[[float], Awaitable[None]] | None = None
        self._binding = _LoopBinding()  # shared by copies that share the HTTP client

    def _new_http_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)

    def with_options(
        self,
        *,
        api_key: str | NotGiven = NOT_GIVEN,
        base_url: str | NotGiven = NOT_GIVEN,
        timeout: Timeout | NotGiven = NOT_GIVEN,
        max_retries: int | NotGiven = NOT_GIVEN,
        http_client: httpx.AsyncClient | NotGiven = NOT_GIVEN,
        default_headers: Mapping[str, str] | NotGiven = NOT_GIVEN,
        retry_unknown_outcome: bool | NotGiven = NOT_GIVEN,
        allow_insecure_http: bool | NotGiven = NOT_GIVEN,
        backoff: Backoff | NotGiven = NOT_GIVEN,
    ) -> AsyncPreoClient:
        """A copy with some settings changed; it shares (and never closes) the HTTP client."""
        changes = dict(locals())
        del changes["self"]
        return self._copy(changes)

    def _adopt(self, original: AsyncPreoClient) -> None:
        self.purchases = AsyncPurchases(self)
        self._sleep = original._sleep
        # copies sharing the HTTP client share its event loop too
        self._binding = original._binding if self._http is original._http else _LoopBinding()

    def _check_loop(self) -> None:
        """Bind to the first call's event loop; refuse another one before sending anything."""
        import asyncio

        loop = asyncio.get_running_loop()
        binding = self._binding
        bound = binding.loop() if binding.loop is not None else None
        if bound is loop:
            return
        if binding.loop is None:
            binding.bind(loop)
            return
        raise ConfigurationError(
            "this AsyncPreoClient was first used in another event loop (closed or still "
            "running); its connections belong to that loop. Nothing was sent. Create one "
            "client per event loop, e.g. inside the coroutine you pass to asyncio.run()."
        )

    async def _send(self, call: Call, state: CallState | None = None) -> Refund:
        """Send ``call`` (retrying as allowed); logged and traced when that is on."""
        state = state if state is not None else CallState()
        watch = watch_call(call, state)
        if watch is None:
            return await self._retry_loop(call, state)
        with watch:
            return watch.succeeded(await self._retry_loop(call, state))

    async def _retry_loop(self, call: Call, state: CallState) -> Refund:
        """Attempt ``call`` until it succeeds or may not be retried (the retry loop)."""
        self._check_open()
        self._check_loop()
        sleep = self._sleep or _async_sleep
        while True:
            if state.pause is not None and (wait := state.pause.remaining()) > 0:
                await sleep(wait)
            with reserve(state.pacer) as slot:  # settled exactly once, whatever happens
                while (wait := slot.until_ready()) > 0:
                    await sleep(wait)
                state.attempts += 1
                if state.watch is not None:
                    state.watch.sending()
                sent_at = attempt_started(state)
                try:
                    refund = await self._attempt(call, state.attempts)
                except AttemptFailed as failed:
                    settle(slot, failed)
                    attempt_ended(state, sent_at, failed=failed)
                    delay = self._after_failure(failed, call, state)
                else:
                    settle(slot, None)
                    attempt_ended(state, sent_at, refund=refund)
                    return refund
            if delay:
                await (self._sleep or _async_sleep)(delay)

    async def _attempt(self, call: Call, attempt: int) -> Refund:
        """One attempt, bounded in total by the call's deadline; raises only AttemptFailed.

        What ends the attempt is read from the task's state, not only from the exception that
        comes out: a transport may turn our cancellation into an error of its own or into an
        answer, or raise a ``CancelledError`` nobody asked for.
        """
        import asyncio

        task = asyncio.current_task()
        assert task is not None  # nosec B101  # _send runs in a task by construction
        watchdog = self._binding.watchdog
        assert watchdog is not None  # nosec B101  # bound by _check_loop, before any attempt
        # A transport's own connect or pool timeout of the same length comes first: it proves
        # that nothing was sent, where our deadline could only say "may exist".
        before = _cancelling(task)  # cancellations requested before this attempt
        watch = watchdog.watch(task, call.deadline + DEADLINE_GRACE)
        try:
            refund = await self._attempt_io(call, attempt, time.monotonic())
        except asyncio.CancelledError as exc:
            if watch.expired:
                if _owner_cancelled_too(task, before, watch.cancels):
                    raise
                raise deadline_failure(call) from None
            if sys.version_info >= (3, 11) and task.cancelling() == 0:
                # nobody cancelled this task: a transport's own bug, after which it may be sent
                raise transport_failure(exc, call) from exc
            raise
        except AttemptFailed:
            if watch.expired:  # our cancellation, turned into an error or an answer
                if _owner_cancelled_too(task, before, watch.cancels):
                    raise asyncio.CancelledError from None
                raise deadline_failure(call) from None
            if _cancelling(task) > before:  # the owner's cancellation, hidden by the transport
                raise asyncio.CancelledError from None
            raise
        finally:
            watchdog.done(watch)
        # answered all the same, though the owner cancelled: its cancellation wins, as it
        # does when the transport turns it into an error
        if (
            _owner_cancelled_too(task, before, watch.cancels)
            if watch.expired
            else _cancelling(task) > before
        ):
            raise asyncio.CancelledError
        return refund

    async def _attempt_io(self, call: Call, attempt: int, started: float) -> Refund:
        if self._blind:  # connections pooled since, by any pool now reachable
            guard_pools(self._http)
        try:
            # auth=None and a hook's raise_for_status: as in PreoClient._attempt_io
            response = await self._http.send(
                call.request, stream=True, follow_redirects=False, auth=None
            )
        except Exception as exc:  # every fault is classified: I1, I2
            self._check_hooks(call)
            answer = hook_status_answer(exc, call)
            if answer is None:
                failed = transport_failure(exc, call)
                raise failed from exc
            response = answer
        else:
            self._check_hooks(call)  # (each path checks once: the hook ran inside send)
        content = already_read(response)
        problem = None
        if content is None:
            reader = BodyReader(response)
            try:
                async for raw in response.aiter_raw():
                    reader.feed(raw)
                    if reader.done:
                        break
            except Exception as exc:  # a read fault after the status line: the status decides
                reader.fail(body_problem_of(exc))
            finally:
                with contextlib.suppress(Exception):  # a broken stream must not hide the answer
                    await response.aclose()
            content, problem = reader.result()
            keep_body(response, content, call)
        return finish(response, content, call, body_problem=problem)

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
