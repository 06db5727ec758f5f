"""Stray bytes retire a connection: the private hooks into httpcore's and aiohttp's pools.

A client that does not pipeline expects no byte past the end of a response (RFC 9112 §9.3.2):
bytes that trail an answer (in the same write, or later on the idle connection) are a broken
server or proxy, and must never be read as the answer to the *next* request — for a refund that
would report purchase B refunded with purchase A's refund. httpx/httpcore and aiohttp do not
check this everywhere, so this module retires such a connection when the pool would reuse it:

- httpcore (sync and async): the pool asks ``has_expired()`` of every connection before it
  hands one out (under its lock). Each connection the pool creates gets a ``has_expired`` that
  is also true when it is idle and its h11 parser still holds bytes (``trailing_data``); bytes
  that arrive on the idle socket already count (httpcore's own ``is_readable`` check).
- aiohttp: the connector's ``connect()`` discards a pooled connection whose protocol has
  anything queued or pending (``ResponseHandler.should_close``: a stray answer parsed while the
  connection sat idle, a tail, an error) and takes another, so the request is sent on a clean
  connection and never "answered" by the stray before it went out.

Everything private is reached here and only here; ``tests/test_stray.py`` fails loudly when a
library changes what is relied on (``HTTPTransport._pool``, ``HTTPConnection._connection``,
``HTTP11Connection._h11_state``, ``h11.Connection.trailing_data``,
``ResponseHandler.should_close``, ``BaseConnector.connect``).

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

from typing import TYPE_CHECKING, Any, Final

import httpcore
import httpx

if TYPE_CHECKING:
    import aiohttp
    import aiohttp.connector

__all__ = ["UnusableConnectionError", "guard_aiohttp", "guard_pools", "has_leftover_bytes"]

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
    return connection


def _guard_pool(pool: object) -> bool:
    if not isinstance(pool, httpcore.ConnectionPool | httpcore.AsyncConnectionPool):
        return False
    if getattr(pool, "_preo_stray_guard", False):
        return True
    create = pool.create_connection

    def create_connection(origin: httpcore.Origin) -> Any:
        return _guard_connection(create(origin))

    pool.create_connection = create_connection  # type: ignore[method-assign]
    pool._preo_stray_guard = True  # type: ignore[union-attr]
    return True


def guard_pools(client: httpx.Client | httpx.AsyncClient) -> int:
    """Make every httpcore pool of ``client`` retire connections with leftover bytes.

    Returns how many pools were guarded (0 for a transport without an httpcore pool, e.g. a
    ``MockTransport`` or :class:`~preo_client.AiohttpTransport`, which guards itself).
    """
    transports = [getattr(client, "_transport", None), *getattr(client, "_mounts", {}).values()]
    return sum(_guard_pool(getattr(t, "_pool", None)) for t in transports)


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
            if protocol is None or not protocol.should_close:
                return conn
            conn.close()  # closes the socket: never back into the pool
        raise UnusableConnectionError(
            f"{_MAX_DISCARDS} connections in a row had unsolicited bytes from the server; "
            "nothing was sent"
        )

    connector.connect = guarded_connect  # type: ignore[method-assign]
    connector._preo_stray_guard = True  # type: ignore[attr-defined]
