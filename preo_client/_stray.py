"""Stray bytes retire a connection: the private hooks into httpcore's and aiohttp's pools.

A client that does not pipeline expects no byte past the end of a response (RFC 9112 §9.3.2):
bytes that trail an answer (in the same write, or later on the idle connection) are a broken
server or proxy, and must never be read as the answer to the *next* request — for a refund that
would report purchase B refunded with purchase A's refund. httpx/httpcore and aiohttp do not
check this everywhere, so this module retires such a connection when the pool would reuse it:

- httpcore (sync and async): the pool asks ``has_expired()`` of every connection before it
  hands one out (under its lock). Each connection of a guarded pool — those it held when it
  was first seen and every one it creates after — gets a ``has_expired`` that is also true
  when it is idle and its h11 parser still holds bytes (``trailing_data``); bytes that arrive
  on the idle socket already count (httpcore's own ``is_readable`` check).
- Which pools: :func:`guard_pools` runs when a client is built *and before every attempt*
  (reuse time, not only creation time), on every pool reachable from the HTTP client: its
  transport and mounts, and through wrapper transports (OpenTelemetry, retry, caching,
  logging middleware) by reading instance attributes only (``__dict__``, and lists, tuples
  and dicts in it; no property, no ``__getattr__``, none of the wrapper's code). A client
  handed over after it already talked to the host, or a pool a wrapper builds lazily, is
  guarded before the next refund goes out.
- Any transport other than httpx's own pool transport (``HTTPTransport`` as httpx wrote it)
  that may hold connections (not a ``MockTransport``, ``ASGITransport``, ``WSGITransport`` or a
  transport that guards itself) is *blind*, wrappers included even when pools are found under
  them (one may send through a second transport kept in a closure): the client then sends
  every refund with ``Connection: close`` (decided when it is built), so no refund's
  connection is reused. Connections such a transport pooled for the caller's own
  requests cannot be checked; the README says so.
- aiohttp: the connector's ``connect()`` discards a pooled connection whose protocol has
  anything queued or pending (``ResponseHandler.should_close``: a stray answer parsed while the
  connection sat idle, a tail, an error) or whose parser holds the start of another message
  (a partial stray such as ``HTTP/1.1 201 Cr``, which ``should_close`` misses; see
  :func:`_message_started`) and takes another, so the request is sent on a clean connection
  and never "answered" by the stray before it went out.

Everything private is reached here and only here; ``tests/test_stray.py`` fails loudly when a
library changes what is relied on (``HTTPTransport._pool``, ``HTTPConnection._connection``,
``ConnectionPool._connections``, ``HTTP11Connection._h11_state``,
``h11.Connection.trailing_data``, ``ResponseHandler.should_close``, ``ResponseHandler._parser``
and its ``feed_eof()``, ``BaseConnector.connect``).

Upstream issue we would file (httpcore / httpx, and the httpx2 fork, which is identical here)::

    HTTP/1.1 connection with bytes past the end of a response is put back into the pool

    A server (or a broken proxy) writes one extra response right after a valid one, in the
    same write. h11 keeps the extra bytes in its receive buffer (Connection.trailing_data),
    HTTP11Connection._response_closed() calls start_next_cycle() and marks the connection
    IDLE, and the pool reuses it: the next request on that connection is "answered" by the
    stray bytes, and every later answer is shifted by one. The same happens after a 204.
    (Bytes arriving later on the idle socket are caught by has_expired()'s is_readable check.)
    Expected: a connection whose h11 state has trailing data when the response completes is
    closed, not reused (as curl, undici, Chromium and Bun do). Suggested fix: in
    _response_closed(), close instead of going IDLE when h11_state.trailing_data[0] is
    non-empty (or make has_expired() true for an idle connection with trailing data).

Upstream issue we would file (aiohttp)::

    A response that arrives on an idle pooled connection is read as the next request's answer

    If the server writes an unsolicited response on a keep-alive connection while it sits in
    the connector's pool, ResponseHandler.data_received() parses it with the previous
    request's parser and queues it. TCPConnector._get() checks only is_connected() and the
    keep-alive time, so the next request gets that connection, its response.start() returns
    the queued stray immediately, and the request body writer may be cancelled before the
    request reached the server: a request that was never sent is reported as answered.
    Expected: a pooled connection whose protocol has queued data (should_close is true) is
    closed instead of reused, as _release() already does when the stray arrives before the
    connection is released.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Final

import httpx

if TYPE_CHECKING:
    import aiohttp
    import aiohttp.connector
    import httpcore

__all__ = [
    "UnusableConnectionError",
    "guard_aiohttp",
    "guard_pools",
    "has_leftover_bytes",
    "is_blind",
    "reachable_pools",
]

_MAX_DISCARDS: Final = 8  # connections tried before giving up (nothing was sent on any of them)


def has_leftover_bytes(connection: object) -> bool:
    """True when ``connection`` (an httpcore connection, perhaps wrapped by a proxy connection)
    is HTTP/1.1 and its parser holds bytes past the last response, or has seen the peer close."""
    for _ in range(3):  # HTTPConnection, or a proxy connection around one
        h11_state = getattr(connection, "_h11_state", None)
        if h11_state is not None:
            data, closed = h11_state.trailing_data
            return bool(data) or bool(closed)
        connection = getattr(connection, "_connection", None)
        if connection is None:
            return False
    return False


def _guard_connection(connection: Any) -> Any:
    original = connection.has_expired

    def has_expired() -> bool:
        return bool(original()) or (connection.is_idle() and has_leftover_bytes(connection))

    connection.has_expired = has_expired
    connection._preo_stray_guard = True
    return connection


def _guard_pool(pool: Any) -> None:
    """Guard the connections ``pool`` holds now (made before we saw it: an injected client
    that already talked to the host) and every one it creates from now on."""
    for connection in list(getattr(pool, "_connections", ())):  # a copy: changed under a lock
        if not getattr(connection, "_preo_stray_guard", False):
            _guard_connection(connection)
    if getattr(pool, "_preo_stray_guard", False):
        return
    create = pool.create_connection

    def create_connection(origin: httpcore.Origin) -> Any:
        return _guard_connection(create(origin))

    pool.create_connection = create_connection
    pool._preo_stray_guard = True


_TRANSPORTS: Final = (httpx.BaseTransport, httpx.AsyncBaseTransport)
_CLIENTS: Final = (httpx.Client, httpx.AsyncClient)


@functools.cache
def _pools_and_holders() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """httpcore's pool types, and every type :func:`_members` collects. Loaded when the first
    client is built (httpx's own transport loads httpcore then too), not on import."""
    import httpcore

    pools = (httpcore.ConnectionPool, httpcore.AsyncConnectionPool)
    return pools, pools + _TRANSPORTS + _CLIENTS


_SEQS: Final = (list, tuple)
# Transports that hold no connection at all: nothing can trail an answer.
_NO_CONNECTIONS: Final = (httpx.MockTransport, httpx.ASGITransport, httpx.WSGITransport)
_MAX_DEPTH: Final = 6  # wrappers around wrappers; deeper than any real stack


def _members(obj: object, holders: tuple[type, ...]) -> list[object]:
    """The transports, pools and HTTP clients an object holds in its instance attributes (and
    in lists, tuples and dicts there, e.g. mounts). Only ``__dict__`` is read: no property,
    no ``__getattr__``, nothing that runs a wrapper's code."""
    try:
        attributes = object.__getattribute__(obj, "__dict__")
    except AttributeError:
        return []
    if not isinstance(attributes, dict):
        return []
    found: list[object] = []
    for value in list(attributes.values()):
        kind = type(value)  # exact types: a container subclass may run code when iterated
        items = list(value.values()) if kind is dict else list(value) if kind in _SEQS else [value]
        found.extend(item for item in items if isinstance(item, holders))
    return found


def reachable_pools(client: httpx.Client | httpx.AsyncClient) -> tuple[list[Any], list[object]]:
    """The httpcore pools under ``client``'s transports and mounts, through any wrapper
    transport that keeps the transport it delegates to in an attribute (OpenTelemetry's,
    httpx-retries', hishel's, a logging middleware), and the *blind* transports: those that
    may hold connections the SDK cannot see (no pool found under them, and not known to hold
    none or to guard themselves)."""
    pools: list[Any] = []
    blind: list[object] = []
    seen: set[int] = set()
    pool_types, holders = _pools_and_holders()

    def visit(obj: object, depth: int) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, pool_types):
            pools.append(obj)
            return
        if isinstance(obj, _NO_CONNECTIONS) or getattr(type(obj), "_preo_guards_itself", False):
            return
        members = _members(obj, holders) if depth < _MAX_DEPTH else []
        if isinstance(obj, _TRANSPORTS) and not _sends_through_its_pool(obj):
            # A wrapper (or any other transport): the pools found under it are guarded, but
            # what it sends through cannot be known (a second transport in a closure, a pool
            # it makes per request), so its refunds leave no connection open either.
            blind.append(obj)
        for member in members:
            visit(member, depth + 1)

    visit(client, 0)
    return pools, blind


def _sends_through_its_pool(transport: object) -> bool:
    """httpx's own connection-pool transports, as httpx wrote them (not subclassed to send
    elsewhere): what they send goes through the pool this module guards."""
    kind = type(transport)
    if issubclass(kind, httpx.HTTPTransport):
        return kind.handle_request is httpx.HTTPTransport.handle_request
    if issubclass(kind, httpx.AsyncHTTPTransport):
        return kind.handle_async_request is httpx.AsyncHTTPTransport.handle_async_request
    return False


def guard_pools(client: httpx.Client | httpx.AsyncClient) -> int:
    """Make every httpcore pool reachable from ``client`` retire connections with leftover
    bytes: the connections it holds now and every one it creates. Cheap enough to call
    before every attempt (a pool or wrapper set up after the client was built is covered).

    Returns how many pools were guarded (0 for a transport without an httpcore pool, e.g. a
    ``MockTransport`` or :class:`~preo_client.AiohttpTransport`, which guards itself).
    """
    pools, _ = reachable_pools(client)
    for pool in pools:
        _guard_pool(pool)
    return len(pools)


def is_blind(client: httpx.Client | httpx.AsyncClient) -> bool:
    """Whether ``client`` has a transport whose connections this module cannot check (see
    :func:`reachable_pools`): its refunds are then sent with ``Connection: close``."""
    return bool(reachable_pools(client)[1])


def _message_started(protocol: Any) -> bool:
    """Whether a pooled connection's parser, kept from its last response, has the start of
    another message: bytes past the answer too short to be parsed as one (``HTTP/1.1 201 Cr``),
    which ``should_close`` does not see. aiohttp gives the next request a new parser, so those
    bytes would be dropped and the rest of the stray read as that request's answer.

    The pure-Python parser shows its buffers (``_tail``, ``_lines``); the C parser does not,
    but its ``feed_eof()`` returns the started message (or raises) and does nothing when no
    message has started. The parser is about to be replaced either way."""
    parser = getattr(protocol, "_parser", None)
    if parser is None:  # a new connection: nothing received yet
        return False
    if getattr(parser, "_tail", b"") or getattr(parser, "_lines", None):
        return True
    try:
        return parser.feed_eof() is not None
    except Exception:  # a half message that cannot even be ended cleanly
        return True


class UnusableConnectionError(Exception):
    """Every connection the pool offered had stray bytes; nothing was sent on any of them."""


def guard_aiohttp(connector: aiohttp.BaseConnector | None) -> None:
    """Make ``connector.connect()`` skip (and close) connections that received stray bytes."""
    if connector is None or getattr(connector, "_preo_stray_guard", False):
        return
    connect = connector.connect

    async def guarded_connect(*args: Any, **kwargs: Any) -> aiohttp.connector.Connection:
        for _ in range(_MAX_DISCARDS):
            conn = await connect(*args, **kwargs)
            protocol = conn.protocol
            if protocol is None or not (protocol.should_close or _message_started(protocol)):
                return conn
            conn.close()  # closes the socket: never back into the pool
        raise UnusableConnectionError(
            f"{_MAX_DISCARDS} connections in a row had unsolicited bytes from the server; "
            "nothing was sent"
        )

    connector.connect = guarded_connect  # type: ignore[method-assign]
    connector._preo_stray_guard = True  # type: ignore[attr-defined]
