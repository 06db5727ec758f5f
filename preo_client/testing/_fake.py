"""FakePreo: the in-memory, stateful refund endpoint with a ledger and fault injection."""

from __future__ import annotations

import collections
import datetime
import hashlib
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import attrs
import httpx

from .._exceptions import RefundValidationError
from .._policy import RefundPlan, check_comment, check_pickup_point_id, plan_refund
from ._ratelimit import RateLimiter, check_latency, check_rate_limit, retry_after_header

if TYPE_CHECKING:
    from .._client import AsyncPreoClient, PreoClient

__all__ = ["DEMO_API_KEY", "FakePreo", "Fault", "Purchase", "RefundRecord"]

DEMO_API_KEY: Final = "sk_sandbox_demo"
SANDBOX_BASE_URL: Final = "https://sandbox.preo.test"
_PATH: Final = re.compile(r"/v1/purchases/(?P<id>[^/]+)/refund/?")
_ZERO: Final = Decimal(0)
_KEY: Final = re.compile(r"[\x21-\x7e]{1,255}")


@attrs.define
class Purchase:
    """A purchase the sandbox can refund, and what of it has been refunded so far."""

    purchase_id: str
    price: Decimal
    deposit: Decimal
    fees: Decimal
    transaction_id: str
    edition_id: str
    organization: str | None
    refunded: Decimal = _ZERO
    refunded_parts: set[str] = attrs.field(factory=set)

    @property
    def full(self) -> Decimal:
        return self.price + self.deposit + self.fees

    @property
    def remaining(self) -> Decimal:
        return self.full - self.refunded


@attrs.frozen
class RefundRecord:
    """One refund the sandbox created: the ledger entry tests assert on."""

    id: str
    purchase_id: str
    reason: str
    scope: str
    amount: Decimal
    idempotency_key: str | None
    comment: str
    pickup_point_id: str | None
    created: datetime.datetime


@attrs.frozen
class Fault:
    """A fault for the next request (queue them with :meth:`FakePreo.inject`).

    ``kind`` is one of the constructors' names; ``commit`` says whether the refund is recorded
    before the fault strikes (the case where the client cannot know the outcome).
    """

    kind: str
    commit: bool = False
    status: int = 0
    retry_after: str | None = None
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    drop: tuple[str, ...] = ()
    changes: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def connect_error(cls) -> Fault:
        """The connection is refused: the request never reaches the server."""
        return cls("connect_error")

    @classmethod
    def connect_timeout(cls) -> Fault:
        """Connecting times out: the request never reaches the server."""
        return cls("connect_timeout")

    @classmethod
    def read_timeout(cls, *, after_commit: bool = True) -> Fault:
        """The answer never comes; by default the refund *was* recorded first."""
        return cls("read_timeout", commit=after_commit)

    @classmethod
    def connection_reset(cls, *, after_commit: bool = True) -> Fault:
        """The server drops the connection; by default after recording the refund."""
        return cls("connection_reset", commit=after_commit)

    @classmethod
    def http_status(
        cls,
        status: int,
        *,
        retry_after: str | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Fault:
        """Answer ``status`` without processing (``Retry-After`` and other headers if given)."""
        content = body if body is not None else json.dumps({"detail": f"Injected {status}"})
        return cls(
            "status",
            status=status,
            retry_after=retry_after,
            body=content.encode() if isinstance(content, str) else content,
            headers=tuple((headers or {}).items()),
        )

    @classmethod
    def with_body(cls, body: bytes, *, content_type: str = "application/json") -> Fault:
        """Record the refund, then answer 201 with ``body`` instead of the real one."""
        return cls("mangle", commit=True, body=body, content_type=content_type)

    @classmethod
    def edit_json(cls, *, drop: tuple[str, ...] = (), **changes: Any) -> Fault:
        """Record the refund, then answer 201 with fields dropped or changed (e.g. an
        unknown ``status``, a missing required field)."""
        return cls("edit", commit=True, drop=drop, changes=tuple(changes.items()))

    @classmethod
    def html_502(cls) -> Fault:
        """A proxy's HTML 502 page, without processing."""
        return cls(
            "status",
            status=502,
            body=b"<html><body><h1>502 Bad Gateway</h1></body></html>",
            content_type="text/html",
        )

    @classmethod
    def malformed_json(cls) -> Fault:
        """Record the refund, then answer 201 with a body that is not JSON."""
        return cls.with_body(b"{'id': oops")

    @classmethod
    def truncated_json(cls) -> Fault:
        """Record the refund, then answer 201 with the first half of the real body."""
        return cls("truncate", commit=True)


CHAOS_FAULTS: Final = (
    Fault.connect_error(),
    Fault.connect_timeout(),
    Fault.read_timeout(after_commit=False),
    Fault.read_timeout(),
    Fault.connection_reset(),
    Fault.http_status(500),
    Fault.html_502(),
    Fault.http_status(503, retry_after="1"),
    Fault.http_status(429),
    Fault.http_status(504),
)


class FakePreo:
    """An in-memory Preo refund endpoint that keeps state.

    Add purchases with :meth:`add_purchase`; every refund is checked by the same
    :func:`preo_client.plan_refund` the client runs, then against what is still refundable.
    ``refunds`` is the ledger, ``requests`` every request received. ``Idempotency-Key`` is
    honoured: same key and body replays the stored answer, same key with another body is
    ``422``, a key still being processed is ``409``.

    Realism (all settable later with :meth:`set_rate_limit` / :meth:`set_latency`):

    - ``rate_limit`` (requests per second) and ``burst``: a token bucket **per API key** (the
      ``Authorization`` value presented). A request over the limit is answered ``429`` with a
      JSON ``detail`` and, unless ``send_retry_after=False``, ``Retry-After`` in whole seconds
      rounded up (at least 1; the ``detail`` gives the exact fractional wait). A ``429`` creates
      nothing and consumes no injected fault; it is counted in ``throttled`` and still listed
      in ``requests``.
    - ``latency`` + uniform ``latency_jitter`` seconds before each answer, without blocking
      other requests: :meth:`handle` sleeps in the caller's thread (the threaded server gives
      each request its own), :meth:`ahandle` awaits ``asyncio.sleep`` (the async transport and
      the ASGI app use it). ``spans`` records each request's ``(start, end)`` on
      ``time.monotonic``.

    Virtual time: ``clock`` drives the rate limit; by default it is ``time.monotonic`` moved
    forward by the virtual sleeps. Clients made by :meth:`client` / :meth:`async_client`
    (unless ``real_sleep=True``) never sleep: each retry wait is appended to ``slept`` and
    advances the default clock by its length (the waits of concurrent workers add up, so
    virtual time runs ahead rather than behind). An injected ``clock`` is the test's own and
    is not moved.
    """

    def __init__(
        self,
        *,
        api_key: str = DEMO_API_KEY,
        auto_purchases: bool = False,
        keep_history: bool = True,
        rate_limit: float | None = None,
        burst: int = 10,
        send_retry_after: bool = True,
        latency: float = 0.0,
        latency_jitter: float = 0.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.api_key: str = api_key
        # keep_history=False (load and memory benchmarks): no request log, no ledger entries
        # (only `refund_count`), no idempotency store, so the sandbox's own memory stays flat.
        self.keep_history: bool = keep_history
        self.refund_count: int = 0
        # For demos (the CLI's --sandbox): an unknown purchase id is created on first use
        # (25.00 + 2.00 deposit + 1.50 fees) instead of answering 404.
        self.auto_purchases: bool = auto_purchases
        self.purchases: dict[str, Purchase] = {}
        self._transactions: dict[str, list[Purchase]] = collections.defaultdict(list)
        self.refunds: list[RefundRecord] = []
        self.requests: list[httpx.Request] = []
        self._faults: collections.deque[Fault] = collections.deque()
        self._stored: dict[str, tuple[str, httpx.Response]] = {}
        self._in_flight: set[str] = set()
        self._lock = threading.RLock()
        self._chaos: tuple[float, random.Random, tuple[Fault, ...]] | None = None
        # Virtual time: what the fake's clients "slept" instead of sleeping.
        self.slept: list[float] = []
        self._virtual_offset = 0.0
        self._clock: Callable[[], float] = clock if clock is not None else self._virtual_now
        self.throttled: int = 0
        self.spans: list[tuple[float, float]] = []
        self._limiter: RateLimiter | None = None
        self.send_retry_after: bool = send_retry_after
        self.set_rate_limit(rate_limit, burst=burst, send_retry_after=send_retry_after)
        self.latency: float = 0.0
        self.latency_jitter: float = 0.0
        self._latency_rng = random.Random()  # noqa: S311  # nosec B311  # simulated latency
        self.set_latency(latency, jitter=latency_jitter)

    # -- setup -------------------------------------------------------------------------------

    @classmethod
    def demo(cls, *, api_key: str = DEMO_API_KEY, auto_purchases: bool = False) -> FakePreo:
        """A sandbox seeded with demo purchases (see the README for the list)."""
        fake = cls(api_key=api_key, auto_purchases=auto_purchases)
        fake.add_purchase("pur_demo_ticket", price="49.00", fees="2.50", transaction_id="tx_demo")
        fake.add_purchase("pur_demo_cup", price="3.00", deposit="2.00", transaction_id="tx_demo")
        fake.add_purchase("pur_demo_beer", price="6.50", deposit="1.00")
        fake.add_purchase("pur_demo_locker", price="10.00", deposit="20.00")
        return fake

    def add_purchase(
        self,
        purchase_id: str,
        *,
        price: Decimal | int | str,
        deposit: Decimal | int | str = "0",
        fees: Decimal | int | str = "0",
        transaction_id: str | None = None,
        edition_id: str = "ed_sandbox",
        organization: str | None = None,
    ) -> Purchase:
        """Add a refundable purchase; purchases sharing ``transaction_id`` form a transaction."""
        purchase = Purchase(
            purchase_id=purchase_id,
            price=_money(price),
            deposit=_money(deposit),
            fees=_money(fees),
            transaction_id=transaction_id or f"tx_{purchase_id}",
            edition_id=edition_id,
            organization=organization,
        )
        with self._lock:
            previous = self.purchases.get(purchase_id)
            if previous is not None:
                self._transactions[previous.transaction_id].remove(previous)
            self.purchases[purchase_id] = purchase
            self._transactions[purchase.transaction_id].append(purchase)
        return purchase

    def inject(self, *faults: Fault) -> None:
        """Queue ``faults``; each strikes one of the next requests, in order."""
        with self._lock:
            self._faults.extend(faults)

    def chaos(self, rate: float, *, seed: int, faults: Sequence[Fault] | None = None) -> None:
        """Strike a random fault (from ``faults``, default: every kind) on about ``rate`` of
        the requests that have no queued fault; ``seed`` makes the run repeatable."""
        choices = tuple(faults) if faults is not None else CHAOS_FAULTS
        self._chaos = (rate, random.Random(seed), choices)  # noqa: S311  # nosec B311  # test data

    def set_rate_limit(
        self, rate: float | None, *, burst: int = 10, send_retry_after: bool = True
    ) -> None:
        """Limit each API key to ``rate`` requests per second with bursts of ``burst``
        (``None``: no limit); buckets start full."""
        check_rate_limit(rate, burst)
        with self._lock:
            self._limiter = None if rate is None else RateLimiter(rate, burst, self.clock)
            self.send_retry_after = send_retry_after

    def set_latency(self, latency: float, *, jitter: float = 0.0) -> None:
        """Delay every answer by ``latency`` plus a uniform ``[0, jitter]`` seconds."""
        check_latency(latency, jitter)
        self.latency = float(latency)
        self.latency_jitter = float(jitter)

    def clock(self) -> float:
        """The sandbox's time in seconds (drives the rate limit)."""
        return self._clock()

    def _virtual_now(self) -> float:
        return time.monotonic() + self._virtual_offset

    def virtual_sleep(self, seconds: float) -> None:
        """Record a wait in ``slept`` and advance the default clock by it, without sleeping."""
        with self._lock:
            self.slept.append(seconds)
            self._virtual_offset += max(0.0, seconds)

    async def async_virtual_sleep(self, seconds: float) -> None:
        """:meth:`virtual_sleep` for async clients (yields to the event loop once)."""
        import asyncio  # here: importing the sandbox stays cheap for sync-only suites

        self.virtual_sleep(seconds)
        await asyncio.sleep(0)

    @contextmanager
    def holding(self, idempotency_key: str) -> Iterator[None]:
        """Keep ``idempotency_key`` marked as in flight (a request with it gets ``409``)."""
        with self._lock:
            self._in_flight.add(idempotency_key)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight.discard(idempotency_key)

    def refunds_for(self, purchase_id: str) -> list[RefundRecord]:
        """The ledger entries of one purchase."""
        with self._lock:
            return [r for r in self.refunds if r.purchase_id == purchase_id]

    # -- mounts ------------------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        """An httpx transport answering from this sandbox (latency with ``time.sleep``)."""
        return httpx.MockTransport(self.handle)

    def async_transport(self) -> httpx.MockTransport:
        """An httpx transport for ``httpx.AsyncClient`` (latency with ``asyncio.sleep``)."""
        return httpx.MockTransport(self.ahandle)

    def client(self, *, real_sleep: bool = False, **options: Any) -> PreoClient:
        """A :class:`PreoClient` wired to this sandbox (no network); options pass through.

        It owns the HTTP client it is given here (``close()`` closes it). Unless
        ``real_sleep=True``, its retry waits are virtual: recorded in ``slept``, not slept.
        """
        from .._client import PreoClient

        options.setdefault("api_key", self.api_key)
        options.setdefault("base_url", SANDBOX_BASE_URL)
        created = "http_client" not in options
        if created:
            options["http_client"] = httpx.Client(transport=self.transport())
        client = PreoClient(**options)
        client._owns_http = created
        if not real_sleep:
            client._sleep = self.virtual_sleep
        return client

    def async_client(self, *, real_sleep: bool = False, **options: Any) -> AsyncPreoClient:
        """An :class:`AsyncPreoClient` wired to this sandbox (no network); as :meth:`client`."""
        from .._client import AsyncPreoClient

        options.setdefault("api_key", self.api_key)
        options.setdefault("base_url", SANDBOX_BASE_URL)
        created = "http_client" not in options
        if created:
            options["http_client"] = httpx.AsyncClient(transport=self.async_transport())
        client = AsyncPreoClient(**options)
        client._owns_http = created
        if not real_sleep:
            client._sleep = self.async_virtual_sleep
        return client

    # -- the endpoint ------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request, as the Preo API would (transport faults raise httpx errors);
        the latency, if any, is slept in the calling thread."""
        start = time.monotonic()
        delay = self._delay()
        if delay > 0:
            time.sleep(delay)
        try:
            return self._answer(request)
        finally:
            self._span(start)

    async def ahandle(self, request: httpx.Request) -> httpx.Response:
        """:meth:`handle` for event loops: the latency is awaited with ``asyncio.sleep``."""
        import asyncio

        start = time.monotonic()
        delay = self._delay()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            return self._answer(request)
        finally:
            self._span(start)

    def _delay(self) -> float:
        if self.latency_jitter > 0:
            return self.latency + self._latency_rng.uniform(0, self.latency_jitter)
        return self.latency

    def _span(self, start: float) -> None:
        if self.keep_history:
            end = time.monotonic()
            with self._lock:
                self.spans.append((start, end))

    def _throttle(self, request: httpx.Request) -> httpx.Response | None:
        """A ``429`` if the request's API key is over its rate limit (call with the lock)."""
        if self._limiter is None:
            return None
        wait = self._limiter.take(request.headers.get("authorization", ""))
        if wait <= 0:
            return None
        self.throttled += 1
        response = _json(
            429, {"detail": f"Request was throttled. Expected available in {wait:.3f} seconds."}
        )
        if self.send_retry_after:
            response.headers["retry-after"] = retry_after_header(wait)
        return response

    def _answer(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            if self.keep_history:
                self.requests.append(request)
            throttled = self._throttle(request)
            if throttled is not None:
                return throttled
            fault = self._faults.popleft() if self._faults else None
            if fault is None and self._chaos is not None:
                rate, rng, choices = self._chaos
                if rng.random() < rate:
                    fault = rng.choice(choices)
        if fault is not None and fault.kind in ("connect_error", "connect_timeout"):
            cls = httpx.ConnectError if fault.kind == "connect_error" else httpx.ConnectTimeout
            raise cls("injected: connection failed", request=request)
        if fault is not None and fault.kind == "status":
            headers = {"content-type": fault.content_type, "x-request-id": _request_id()}
            if fault.retry_after is not None:
                headers["retry-after"] = fault.retry_after
            headers.update(fault.headers)
            return httpx.Response(fault.status, headers=headers, content=fault.body)
        if fault is not None and not fault.commit:
            _raise_transport(fault, request)
        response = self._process(request)
        if fault is None:
            return response
        if response.status_code != 201:  # nothing was recorded: the fault has nothing to hide
            return response
        if fault.kind == "mangle":
            headers = {**response.headers, "content-type": fault.content_type}
            return httpx.Response(201, headers=headers, content=fault.body)
        if fault.kind == "edit":
            payload = json.loads(response.content)
            for name in fault.drop:
                payload.pop(name, None)
            payload.update(fault.changes)
            return httpx.Response(201, headers=response.headers, content=json.dumps(payload))
        if fault.kind == "truncate":
            body = response.content
            return httpx.Response(201, headers=response.headers, content=body[: len(body) // 2])
        _raise_transport(fault, request)
        raise AssertionError("unreachable")  # pragma: no cover

    def _process(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            detail = (
                "Invalid token."
                if "authorization" in request.headers
                else "Authentication credentials were not provided."
            )
            return _json(401, {"detail": detail})
        match = _PATH.fullmatch(request.url.path)
        if match is None:
            return _json(404, {"detail": "Not found."})
        if request.method != "POST":  # RFC 9110: a 405 lists the allowed methods
            response = _json(405, {"detail": f'Method "{request.method}" not allowed.'})
            response.headers["allow"] = "POST"
            return response
        purchase_id = match["id"]
        key = request.headers.get("idempotency-key")
        if key is not None and not _KEY.fullmatch(key):
            return _json(400, {"idempotency_key": ["Must be 1-255 visible ASCII characters."]})
        fingerprint = hashlib.sha256(
            request.url.path.encode() + b"\0" + request.content
        ).hexdigest()
        with self._lock:
            if key is not None:
                if key in self._in_flight:
                    return _json(
                        409, {"detail": "A request with this Idempotency-Key is in flight."}
                    )
                stored = self._stored.get(key)
                if stored is not None:
                    if stored[0] != fingerprint:
                        return _json(
                            422,
                            {"detail": "Idempotency-Key reused with a different request body."},
                        )
                    replay = stored[1]
                    headers = {**replay.headers, "idempotent-replayed": "true"}
                    return httpx.Response(
                        replay.status_code, headers=headers, content=replay.content
                    )
                self._in_flight.add(key)
            try:
                response = self._create(purchase_id, request, key)
                if key is not None and response.status_code == 201 and self.keep_history:
                    self._stored[key] = (fingerprint, response)
                return response
            finally:
                if key is not None:
                    self._in_flight.discard(key)

    def _create(self, purchase_id: str, request: httpx.Request, key: str | None) -> httpx.Response:
        purchase = self.purchases.get(purchase_id)
        if purchase is None and self.auto_purchases:
            purchase = self.add_purchase(purchase_id, price="25.00", deposit="2.00", fees="1.50")
        if purchase is None:
            return _json(404, {"detail": "Not found."})
        try:
            body = json.loads(request.content, parse_float=Decimal)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            return _json(400, {"non_field_errors": ["Invalid JSON body."]})
        if not isinstance(body, dict):
            return _json(400, {"non_field_errors": ["Expected a JSON object."]})
        if "reason" not in body:
            return _json(400, {"reason": ["This field is required."]})
        try:
            plan = plan_refund(body["reason"], body.get("scope"), body.get("amount"))
            comment = check_comment(body.get("comment")) or ""
            pickup_point_id = check_pickup_point_id(body.get("pickup_point_id"))
        except RefundValidationError as exc:
            return _json(400, {exc.field: [str(exc).split(": ", 1)[1]]})
        group = self._transactions[purchase.transaction_id]
        problem = _apply(plan, purchase, group)
        if problem is not None:
            return _json(400, problem)
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        record = RefundRecord(
            id=f"rr_{uuid.uuid4().hex[:16]}",
            purchase_id=purchase_id,
            reason=plan.reason,
            scope=plan.scope,
            amount=_applied_amount(plan, purchase, group),
            idempotency_key=key,
            comment=comment,
            pickup_point_id=pickup_point_id,
            created=now,
        )
        _commit(plan, purchase, group, record.amount)
        self.refund_count += 1
        if self.keep_history:
            self.refunds.append(record)
        stamp = now.isoformat().replace("+00:00", "Z")
        payload = {
            "id": record.id,
            "edition_id": purchase.edition_id,
            "amount": float(record.amount),
            "requested_by": {"id": "usr_sandbox", "name": "Sandbox staff"},
            "pickup_point": {"id": pickup_point_id or "pp_sandbox", "name": "Sandbox desk"},
            "created": stamp,
            "modified": stamp,
            "can_approve": "true",
            "can_reject": "true",
            "organization": purchase.organization,
            "scope": plan.scope,
            "status": "requested",
            "comment": comment,
            "service_response": None,
            "refund_date": None,
        }
        return _json(201, payload)


# -- refund arithmetic (what a scope is worth, what is still refundable) ---------------------

_PARTS: Final = {
    "purchase_price": ("price",),
    "purchase_deposit": ("deposit",),
    "purchase_full": ("price", "deposit", "fees"),
    "transaction_full": ("price", "deposit", "fees"),
}


def _part_value(purchase: Purchase, part: str) -> Decimal:
    value: Decimal = getattr(purchase, part)
    return value


def _targets(plan: RefundPlan, purchase: Purchase, group: list[Purchase]) -> list[Purchase]:
    return group if plan.scope.startswith("transaction_") else [purchase]


def _applied_amount(plan: RefundPlan, purchase: Purchase, group: list[Purchase]) -> Decimal:
    if plan.amount is not None:
        return plan.amount
    parts = _PARTS[plan.scope]
    return sum(
        (_part_value(p, part) for p in _targets(plan, purchase, group) for part in parts), _ZERO
    )


def _apply(
    plan: RefundPlan, purchase: Purchase, group: list[Purchase]
) -> dict[str, list[str]] | None:
    """Return DRF field errors if the refund cannot be made, else None."""
    targets = _targets(plan, purchase, group)
    remaining = sum((p.remaining for p in targets), _ZERO)
    if plan.amount is not None:
        if plan.amount > remaining:
            return {
                "amount": [
                    f"Refund amount {plan.amount} exceeds the refundable balance {remaining}."
                ]
            }
        return None
    parts = _PARTS[plan.scope]
    done = sorted({part for p in targets for part in p.refunded_parts if part in parts})
    if done:
        return {"non_field_errors": [f"Already refunded: {', '.join(done)}."]}
    amount = _applied_amount(plan, purchase, group)
    if amount <= 0:
        return {"non_field_errors": [f"Nothing to refund for scope {plan.scope}."]}
    if amount > remaining:
        return {
            "non_field_errors": [
                f"Refund amount {amount} exceeds the refundable balance {remaining}."
            ]
        }
    return None


def _commit(plan: RefundPlan, purchase: Purchase, group: list[Purchase], amount: Decimal) -> None:
    targets = _targets(plan, purchase, group)
    if plan.amount is None:
        for p in targets:
            p.refunded_parts.update(_PARTS[plan.scope])
            p.refunded += sum((_part_value(p, part) for part in _PARTS[plan.scope]), _ZERO)
        return
    left = amount
    for p in targets:  # custom amounts use up the purchase (or transaction) in order
        take = min(left, p.remaining)
        p.refunded += take
        left -= take


# -- helpers ---------------------------------------------------------------------------------


def _money(value: Decimal | int | str) -> Decimal:
    amount = Decimal(value)
    if amount < 0 or amount != amount.quantize(Decimal("0.01")):
        raise ValueError(f"not a money amount: {value!r}")
    return amount.quantize(Decimal("0.01"))


def _request_id() -> str:
    return f"req_{uuid.uuid4().hex[:20]}"


def _json(status: int, payload: dict[str, Any]) -> httpx.Response:
    return httpx.Response(
        status,
        headers={"content-type": "application/json", "x-request-id": _request_id()},
        content=json.dumps(payload).encode(),
    )


def _raise_transport(fault: Fault, request: httpx.Request) -> None:
    if fault.kind == "read_timeout":
        raise httpx.ReadTimeout("injected: read timed out", request=request)
    raise httpx.RemoteProtocolError("injected: server disconnected", request=request)
