"""An answer always belongs to its request: bytes a server sends past a response (in the same
write, or later on the idle connection) retire the connection on every transport, are never
read as the next request's answer, and a request is never reported answered unless it was sent.

Over a raw-socket server: the stray follows a 201, a 400 or a 204, in the same write or 50 ms
later; sync and async httpx clients and the aiohttp transport. Also: an injected client that
already pooled connections, or whose pool sits inside a wrapper transport (seen or hidden), and
a partial stray (the start of a response). Every test runs under a watchdog.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import h11
import httpcore
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preo_client import (
    AiohttpTransport,
    APIError,
    AsyncPreoClient,
    BadRequestError,
    PreoClient,
    Refund,
    RefundOutcomeUnknownError,
)
from preo_client._stray import guard_pools, has_leftover_bytes, is_blind, reachable_pools
from tests.helpers import KEY, NO_WAIT, refund_json

WATCHDOG = 60.0  # seconds; a hang fails the test instead of blocking CI


def answer(status: int, refund_id: str | None = None) -> bytes:
    """One raw HTTP/1.1 answer: a refund (2xx with an id), a 400, or a bodiless 204."""
    if status == 204:
        return b"HTTP/1.1 204 No Content\r\n\r\n"
    if status == 400:
        body = b'{"non_field_errors": ["Already refunded: price."]}'
        head = b"HTTP/1.1 400 Bad Request"
    else:
        body = json.dumps(refund_json(id=refund_id)).encode()
        head = b"HTTP/1.1 201 Created"
    return (
        head + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body


STRAY = answer(201, "rr_STRAY")


def answer_then_stray(
    conn: socket.socket, first: bytes, stray: bytes, delay: float | None, sent: threading.Event
) -> None:
    """Send ``first`` and ``stray`` in one write, or ``stray`` ``delay`` seconds later."""
    if delay is None:
        conn.sendall(first + stray)
    else:
        conn.sendall(first)
        time.sleep(delay)
        conn.sendall(stray)
    sent.set()


def read_request(conn: socket.socket, buf: bytes) -> tuple[bytes, bytes] | None:
    """The next request's head off ``conn`` (its body read and dropped) and what follows it;
    None once the client closed."""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        data = conn.recv(65536)
        if not data:
            return None
        rest += data
    return head, rest[length:]


@dataclass
class Server:
    """Answers the first request with ``first`` plus ``stray`` (same write, or ``delay`` s
    later on the same connection); every later request with a refund ``rr_<purchase>``."""

    first: bytes
    stray: bytes
    delay: float | None
    url: str = ""
    received: list[str] = field(default_factory=list)
    stray_sent: threading.Event = field(default_factory=threading.Event)

    def handle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the client may close first
            self.answer_all(conn)

    def answer_all(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            request = read_request(conn, buf)
            if request is None:
                return
            head, buf = request
            purchase = head.split(b" ")[1].decode().split("/")[3]
            self.received.append(purchase)
            if len(self.received) > 1:
                conn.sendall(answer(201, f"rr_{purchase}"))
            else:
                answer_then_stray(conn, self.first, self.stray, self.delay, self.stray_sent)

    def accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()


_S = TypeVar("_S", bound="Serves")


class Serves(Protocol):
    url: str

    def accept(self, listener: socket.socket) -> None: ...


@contextmanager
def serving(server: _S) -> Iterator[_S]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    server.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    threading.Thread(target=server.accept, args=(listener,), daemon=True).start()
    try:
        yield server
    finally:
        listener.close()


def refund(client: PreoClient, purchase: str) -> Refund:
    return client.purchases.refund(purchase, reason="sold_out")


async def arefund(client: AsyncPreoClient, purchase: str) -> Refund:
    return await client.purchases.refund(purchase, reason="sold_out")


def outcome(call: Callable[[], Refund]) -> Refund | APIError:
    try:
        return call()
    except APIError as exc:
        return exc


async def aoutcome(call: Callable[[], Awaitable[Refund]]) -> Refund | APIError:
    try:
        return await call()
    except APIError as exc:
        return exc


def run_sync(server: Server, purchases: list[str]) -> list[Refund | APIError]:
    results: list[Refund | APIError] = []
    with PreoClient(api_key=KEY, base_url=server.url, max_retries=0, backoff=NO_WAIT) as client:
        for n, purchase in enumerate(purchases):
            if n == 1 and server.delay is not None:  # let the stray land on the idle connection
                assert server.stray_sent.wait(WATCHDOG)
                time.sleep(0.05)
            results.append(outcome(functools.partial(refund, client, purchase)))
    return results


def run_async(server: Server, purchases: list[str], *, aiohttp: bool) -> list[Refund | APIError]:
    async def go() -> list[Refund | APIError]:
        results: list[Refund | APIError] = []
        http = httpx.AsyncClient(transport=AiohttpTransport()) if aiohttp else None
        async with AsyncPreoClient(
            api_key=KEY, base_url=server.url, max_retries=0, backoff=NO_WAIT, http_client=http
        ) as client:
            for n, purchase in enumerate(purchases):
                if n == 1 and server.delay is not None:
                    while not server.stray_sent.is_set():
                        await asyncio.sleep(0.01)
                    await asyncio.sleep(0.05)  # the event loop reads the stray while idle
                results.append(await aoutcome(functools.partial(arefund, client, purchase)))
        if http is not None:
            await http.aclose()
        return results

    return asyncio.run(go())


TRANSPORTS: dict[str, Callable[[Server, list[str]], list[Refund | APIError]]] = {
    "sync httpx": run_sync,
    "async httpx": lambda s, p: run_async(s, p, aiohttp=False),
    "aiohttp": lambda s, p: run_async(s, p, aiohttp=True),
}


def watched(fn: Callable[[], list[Refund | APIError]]) -> list[Refund | APIError]:
    """Run ``fn`` in a thread; a hang fails instead of blocking (not a timing assertion)."""
    box: list[Any] = []

    def work() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # handed to the test thread
            box.append(exc)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(WATCHDOG)
    assert not worker.is_alive(), "the calls hung"
    if isinstance(box[0], BaseException):
        raise box[0]
    result: list[Refund | APIError] = box[0]
    return result


def check_first(status: int, first: Refund | APIError) -> None:
    if status == 201:
        assert isinstance(first, Refund)
        assert first.id == "rr_pur_A"
    elif status == 400:
        assert isinstance(first, BadRequestError)
    else:  # a 2xx without a refund: it may exist
        assert isinstance(first, RefundOutcomeUnknownError)


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
@pytest.mark.parametrize("status", [201, 400, 204])
@pytest.mark.parametrize("timing", ["same write", "50 ms later"])
def test_a_stray_answer_is_never_the_next_requests_answer(
    transport: str, status: int, timing: str
) -> None:
    server = Server(
        first=answer(status, "rr_pur_A"),
        stray=STRAY,
        delay=None if timing == "same write" else 0.05,
    )
    with serving(server):
        results = watched(lambda: TRANSPORTS[transport](server, ["pur_A", "pur_B", "pur_C"]))
    check_first(status, results[0])
    # each later purchase is answered with its own refund, and only after it reached the server
    assert [getattr(r, "id", r) for r in results[1:]] == ["rr_pur_B", "rr_pur_C"]
    assert server.received == ["pur_A", "pur_B", "pur_C"]


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    transport=st.sampled_from(sorted(TRANSPORTS)),
    status=st.sampled_from([201, 400, 204]),
    stray=st.one_of(
        st.just(STRAY),
        st.binary(min_size=1, max_size=64),
        st.integers(1, len(STRAY) - 1).map(lambda n: STRAY[:n]),  # a partial answer
    ),
    later=st.booleans(),
)
def test_any_stray_bytes_never_answer_a_later_request(
    transport: str, status: int, stray: bytes, later: bool
) -> None:
    """Whatever trails an answer (a whole response, part of one, garbage), in the same write or
    on the idle connection: every later call is answered by its own request, or fails; it is
    never answered by the stray, and never answered unless the server received it."""
    server = Server(first=answer(status, "rr_pur_A"), stray=stray, delay=0.05 if later else None)
    with serving(server):
        results = watched(lambda: TRANSPORTS[transport](server, ["pur_A", "pur_B", "pur_C"]))
    # aiohttp parses garbage in the same read as the answer and fails the whole read: the
    # first call then ends "outcome unknown", the safe side
    if not isinstance(results[0], RefundOutcomeUnknownError):
        check_first(status, results[0])
    for purchase, result in zip(["pur_B", "pur_C"], results[1:], strict=True):
        assert not isinstance(result, Refund) or result.id == f"rr_{purchase}"
        if isinstance(result, Refund):
            assert purchase in server.received


# -- the private hooks: fail loudly when a library changes underneath -----------------------------


def test_httpcore_still_has_what_the_guard_relies_on() -> None:
    """httpx keeps its pool in ``_pool``; the pool hands out connections made by
    ``create_connection`` after asking ``has_expired``; an HTTP/1.1 connection keeps its h11
    state in ``_h11_state``; h11 reports leftover bytes as ``(bytes, bool)``."""
    for client in (httpx.Client(), httpx.AsyncClient()):
        pool = getattr(client._transport, "_pool", None)
        assert isinstance(pool, httpcore.ConnectionPool | httpcore.AsyncConnectionPool)
        assert callable(pool.create_connection)
        assert guard_pools(client) == 1
    for pool_cls in (httpcore.ConnectionPool, httpcore.AsyncConnectionPool):
        source = inspect.getsource(pool_cls._assign_requests_to_connections)
        assert "has_expired()" in source
        assert "is_available()" in source
    for http11 in (httpcore.HTTP11Connection, httpcore.AsyncHTTP11Connection):
        assert "self._h11_state = h11.Connection(" in inspect.getsource(http11.__init__)
    for conn_cls in (httpcore.HTTPConnection, httpcore.AsyncHTTPConnection):
        assert "self._connection" in inspect.getsource(conn_cls.has_expired)
    state = h11.Connection(our_role=h11.CLIENT)
    state.receive_data(b"extra")
    assert state.trailing_data == (b"extra", False)
    holder = type("Conn", (), {"_connection": type("H11", (), {"_h11_state": state})()})()
    assert has_leftover_bytes(holder)
    assert not has_leftover_bytes(type("H2", (), {})())


def test_aiohttp_still_has_what_the_guard_relies_on() -> None:
    """The session asks ``connector.connect()`` for every request; a protocol says whether it
    holds anything queued through ``should_close`` (a property)."""
    import aiohttp
    from aiohttp.client_proto import ResponseHandler

    assert isinstance(ResponseHandler.should_close, property)
    source = inspect.getsource(ResponseHandler.should_close.fget)
    assert "self._buffer" in source
    assert "self._tail" in source
    assert "self._connector.connect(" in inspect.getsource(aiohttp.ClientSession._request)
    params = list(inspect.signature(aiohttp.BaseConnector.connect).parameters)
    assert params[:4] == ["self", "req", "traces", "timeout"]


# -- an injected client: connections pooled before, pools inside wrapper transports ---------------


class Wrap(httpx.BaseTransport):
    """A middleware transport (logging, metrics, retries) delegating to another one."""

    def __init__(self, inner: httpx.BaseTransport | None = None, *, lazy: bool = False) -> None:
        self.inner = None if lazy else (inner or httpx.HTTPTransport())

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.inner is None:  # built on first use: unseen when the client was built
            self.inner = httpx.HTTPTransport()
        return self.inner.handle_request(request)

    def close(self) -> None:
        if self.inner is not None:
            self.inner.close()


class AWrap(httpx.AsyncBaseTransport):
    def __init__(
        self, inner: httpx.AsyncBaseTransport | None = None, *, lazy: bool = False
    ) -> None:
        self.inner = None if lazy else (inner or httpx.AsyncHTTPTransport())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.inner is None:
            self.inner = httpx.AsyncHTTPTransport()
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        if self.inner is not None:
            await self.inner.aclose()


class Hidden(httpx.BaseTransport):
    """A wrapper the SDK cannot see into: the transport it uses lives in a closure."""

    def __init__(self) -> None:
        inner = httpx.HTTPTransport()
        self.send = inner.handle_request
        self.shut = inner.close

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.send(request)

    def close(self) -> None:
        self.shut()


class AHidden(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        inner = httpx.AsyncHTTPTransport()
        self.send = inner.handle_async_request
        self.shut = inner.aclose

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.send(request)

    async def aclose(self) -> None:
        await self.shut()


class Sibling(httpx.BaseTransport):
    """Adversary round 3 (w2 'sibling'): one transport in an attribute (whose pool is found
    and guarded), but requests sent through another one kept in a closure."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        other = httpx.HTTPTransport()
        self.send = lambda request: other.handle_request(request)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.send(request)  # type: ignore[no-any-return]


class ASibling(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        other = httpx.AsyncHTTPTransport()
        self.send = lambda request: other.handle_async_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.send(request)  # type: ignore[no-any-return]


@dataclass
class StrayAfterEachFirstAnswer:
    """Answers the first request on every connection, then sends a stray 201 in the same
    write; a request on a reused connection is answered ``rr_REUSED`` (the stray answers it
    first if the client reads it). Records (connection, request number, path, headers)."""

    url: str = ""
    received: list[tuple[int, int, str, bytes]] = field(default_factory=list)
    connections: int = 0
    stray: bytes = STRAY
    delay: float | None = None  # None: in the same write as the answer
    stray_sent: threading.Event = field(default_factory=threading.Event)

    def handle(self, conn: socket.socket, number: int) -> None:
        with conn, contextlib.suppress(OSError):
            buf = b""
            for count in range(1, 100):
                request = read_request(conn, buf)
                if request is None:
                    return
                head, buf = request
                path = head.split(b" ")[1].decode()
                self.received.append((number, count, path, head.lower()))
                parts = path.split("/")
                mine = answer(201, f"rr_{parts[3]}") if len(parts) > 3 else answer(201, "rr_ok")
                if count > 1:
                    conn.sendall(answer(201, "rr_REUSED"))
                else:
                    answer_then_stray(conn, mine, self.stray, self.delay, self.stray_sent)

    def accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.handle, args=(conn, self.connections), daemon=True).start()


@contextmanager
def serving_strays(
    stray: bytes = STRAY, delay: float | None = None
) -> Iterator[StrayAfterEachFirstAnswer]:
    with serving(StrayAfterEachFirstAnswer(stray=stray, delay=delay)) as server:
        yield server


INJECTED: dict[str, tuple[Callable[[bool], Any], str]] = {
    # how the partner built the client it hands over, and when the partner uses it itself
    "used before": (lambda sync: None, "before"),
    "used in between": (lambda sync: None, "between"),
    "wrapped": (lambda sync: Wrap() if sync else AWrap(), ""),
    "wrapped twice": (lambda sync: Wrap(Wrap()) if sync else AWrap(AWrap()), ""),
    # unseen when the SDK client is built; its pool then made by the partner's own request
    "wrapper built lazily": (lambda sync: Wrap(lazy=True) if sync else AWrap(lazy=True), "after"),
    "mounted wrapper": (lambda sync: "mount", ""),
    "hidden wrapper": (lambda sync: Hidden() if sync else AHidden(), ""),
    "sibling in a closure": (lambda sync: Sibling() if sync else ASibling(), ""),
}
# Any transport that is not httpx's own pool transport: what it sends through cannot be known
# (adversary round 3, w2: a sibling transport in a closure), so refunds close their connection.
BLIND = {
    "wrapped",
    "wrapped twice",
    "wrapper built lazily",
    "mounted wrapper",
    "hidden wrapper",
    "sibling in a closure",
}


def _injected(mode: str, sync: bool) -> Any:
    transport = INJECTED[mode][0](sync)
    cls: Any = httpx.Client if sync else httpx.AsyncClient
    if transport == "mount":
        return cls(mounts={"all://": Wrap() if sync else AWrap()})
    return cls(transport=transport) if transport else cls()


def injected_run(server: StrayAfterEachFirstAnswer, mode: str, kind: str) -> list[str]:
    """Refunds pur_A and pur_B through an injected client built as ``mode``; the partner
    also uses the client itself (before the SDK saw it, after, or between the refunds)."""
    used = INJECTED[mode][1]
    if kind == "sync":
        with _injected(mode, sync=True) as http:
            if used == "before":
                http.get(server.url + "/health")
            client = PreoClient(
                api_key=KEY, base_url=server.url, http_client=http, max_retries=0,
                backoff=NO_WAIT, timeout=10,
            )  # fmt: skip
            if used == "after":
                http.get(server.url + "/health")
            ids = [refund(client, "pur_A").id]
            if used == "between":
                http.get(server.url + "/health")
            ids.append(refund(client, "pur_B").id)
        return ids

    async def go() -> list[str]:
        async with _injected(mode, sync=False) as http:
            if used == "before":
                await http.get(server.url + "/health")
            client = AsyncPreoClient(
                api_key=KEY, base_url=server.url, http_client=http, max_retries=0,
                backoff=NO_WAIT, timeout=10,
            )  # fmt: skip
            if used == "after":
                await http.get(server.url + "/health")
            ids = [(await arefund(client, "pur_A")).id]
            if used == "between":
                await http.get(server.url + "/health")
            ids.append((await arefund(client, "pur_B")).id)
        return ids

    return asyncio.run(go())


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("mode", sorted(INJECTED))
def test_an_injected_client_never_reads_a_stray_as_a_refund(kind: str, mode: str) -> None:
    """Issue r1: a connection the partner's client pooled before the SDK saw it, and a pool
    inside a wrapper transport, escaped the guard. Every refund is now answered by its own
    request, sent as the first request of its connection (each first answer is followed by
    a stray)."""
    with serving_strays() as server:
        ids: list[Any] = watched(lambda: injected_run(server, mode, kind))  # type: ignore[arg-type,return-value]
    assert ids == ["rr_pur_A", "rr_pur_B"]
    refunds = [(n, count) for n, count, path, _ in server.received if "refund" in path]
    assert [count for _, count in refunds] == [1, 1]  # never on a reused connection
    for _, _, path, head in server.received:
        if "refund" in path:  # only a transport the SDK cannot see into closes after each
            assert (b"\r\nconnection: close" in head) is (mode in BLIND)


class Opaque:
    """Attributes that must never be evaluated while looking for pools."""

    @property
    def boom(self) -> httpx.BaseTransport:
        raise AssertionError("a property was evaluated")

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"__getattr__({name!r}) was called")


def test_pools_are_found_through_wrappers_without_running_their_code() -> None:
    plain = httpx.HTTPTransport()
    looped = Wrap(plain)
    looped.again = looped  # type: ignore[attr-defined]  # a cycle ends
    odd = Wrap(plain)
    odd.extra = Opaque()  # type: ignore[attr-defined]
    listed = Wrap(plain)
    listed.inner = None
    listed.chain = [Wrap(httpx.HTTPTransport())]  # type: ignore[attr-defined]
    listed.table = {"x": httpx.HTTPTransport()}  # type: ignore[attr-defined]
    for transport, pools in [(looped, 1), (odd, 1), (listed, 2), (Wrap(Wrap(Wrap())), 1)]:
        found, blind = reachable_pools(httpx.Client(transport=transport))
        assert len(found) == pools  # every pool under it guarded
        assert blind  # and the wrapper itself sends refunds with Connection: close
    for quiet in (httpx.MockTransport(lambda r: httpx.Response(200)), AiohttpTransport()):
        client: Any = httpx.AsyncClient(transport=quiet)
        assert reachable_pools(client) == ([], [])
        assert not is_blind(client)
    assert is_blind(httpx.Client(transport=Hidden()))


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_quiet_transport_gets_no_connection_close(kind: str) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=refund_json())

    transport = httpx.MockTransport(handler)
    if kind == "sync":
        refund(PreoClient(api_key=KEY, http_client=httpx.Client(transport=transport)), "pur_A")
    else:
        http = httpx.AsyncClient(transport=transport)
        asyncio.run(arefund(AsyncPreoClient(api_key=KEY, http_client=http), "pur_A"))
    assert seen[0].headers.get("connection", "") != "close"


def test_httpcore_pools_still_list_their_connections() -> None:
    """The guard reads ``ConnectionPool._connections`` (the pool's own list of connections)."""
    for pool_cls in (httpcore.ConnectionPool, httpcore.AsyncConnectionPool):
        assert "self._connections: list[" in inspect.getsource(pool_cls.__init__)
        assert isinstance(pool_cls()._connections, list)


# -- a partial stray: the start of a response, too short to parse --------------------------------


def own_client_run(server: StrayAfterEachFirstAnswer, transport: str) -> list[Refund | APIError]:
    """pur_A then pur_B through the SDK's own client (or the aiohttp transport), B sent only
    once the stray after A's answer is out (and, when late, read by the idle connection)."""

    def pause() -> None:
        assert server.stray_sent.wait(WATCHDOG)
        if server.delay is not None:
            time.sleep(0.05)

    if transport == "sync httpx":
        with PreoClient(api_key=KEY, base_url=server.url, max_retries=0, backoff=NO_WAIT) as c:
            first = outcome(functools.partial(refund, c, "pur_A"))
            pause()
            return [first, outcome(functools.partial(refund, c, "pur_B"))]

    async def go() -> list[Refund | APIError]:
        http = httpx.AsyncClient(transport=AiohttpTransport()) if transport == "aiohttp" else None
        async with AsyncPreoClient(
            api_key=KEY, base_url=server.url, max_retries=0, backoff=NO_WAIT, http_client=http
        ) as c:
            first = await aoutcome(functools.partial(arefund, c, "pur_A"))
            await asyncio.get_running_loop().run_in_executor(None, pause)
            await asyncio.sleep(0.01)  # the event loop reads whatever arrived while idle
            second = await aoutcome(functools.partial(arefund, c, "pur_B"))
        if http is not None:
            await http.aclose()
        return [first, second]

    return asyncio.run(go())


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    transport=st.sampled_from(sorted(TRANSPORTS)),
    cut=st.integers(1, len(STRAY) - 1),
    later=st.booleans(),
)
def test_a_partial_stray_retires_the_connection(transport: str, cut: int, later: bool) -> None:
    """Issue r3: after answer A the peer leaves the start of a response (``HTTP/1.1 201 Cr``),
    in the same write or on the idle connection. aiohttp reused that connection (B then failed
    as outcome unknown, or worse); now every transport closes it: B goes out on a new
    connection and gets its own answer."""
    with serving_strays(STRAY[:cut], 0.05 if later else None) as server:
        results = watched(lambda: own_client_run(server, transport))
    assert [getattr(r, "id", r) for r in results] == ["rr_pur_A", "rr_pur_B"]
    assert [(n, count) for n, count, *_ in server.received] == [(1, 1), (2, 1)]


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
@pytest.mark.parametrize("cut", [1, 5, 14, 20, len(STRAY) - 2])
def test_the_reviewed_partial_stray_retires_the_connection(transport: str, cut: int) -> None:
    with serving_strays(STRAY[:cut]) as server:
        results = watched(lambda: own_client_run(server, transport))
    assert [getattr(r, "id", r) for r in results] == ["rr_pur_A", "rr_pur_B"]
    assert [(n, count) for n, count, *_ in server.received] == [(1, 1), (2, 1)]


def test_aiohttp_parsers_still_end_a_started_message_on_eof() -> None:
    """The aiohttp guard asks a pooled connection's old parser ``feed_eof()``: ``None`` when
    no message has started, the message (or an error) when one has. Both parsers."""
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.http_parser import HttpResponseParser, HttpResponseParserPy

    from preo_client._stray import _message_started

    loop = asyncio.new_event_loop()
    try:
        for parser_cls in {HttpResponseParser, HttpResponseParserPy}:
            for tail, started in [(b"", False), (STRAY[:1], True), (STRAY[:20], True)]:
                protocol = ResponseHandler(loop=loop)
                parser = parser_cls(protocol, loop, 2**16)
                messages, _, _ = parser.feed_data(answer(201, "rr_pur_A") + tail)
                assert len(messages) == 1
                protocol._parser = parser
                assert _message_started(protocol) is started, (parser_cls, tail)
    finally:
        loop.close()
