"""A hard wall-clock bound for the sync client's attempts: no socket wait outlasts the attempt.

The async client cancels an attempt at its deadline. A blocking socket cannot be cancelled, so
the sync client's own HTTP client gets a network backend that gives each connect, read and
write at most what is left of the current attempt (a server trickling its headers a byte at a
time cannot stretch an attempt past its total). The deadline travels in a context variable set
around each attempt; outside an attempt (or in an HTTP client the caller injected) nothing
changes.
"""

from __future__ import annotations

import contextvars
import functools
import time
import typing

if typing.TYPE_CHECKING:
    import ssl

    import httpcore
    import httpx

__all__ = ["ATTEMPT_DEADLINE", "bound_attempts"]

ATTEMPT_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "preo_attempt_deadline", default=None
)


def _clamp(timeout: float | None, late: type[httpcore.TimeoutException]) -> float | None:
    deadline = ATTEMPT_DEADLINE.get()
    if deadline is None:
        return timeout
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise late("the attempt's total timeout has passed")
    return remaining if timeout is None else min(timeout, remaining)


@functools.cache
def _deadline_backend() -> type[httpcore.NetworkBackend]:
    """The backend class, made on first use: httpcore loads when a client is built (as httpx's
    own transport loads it), not with ``import preo_client``."""
    import httpcore

    class _Stream(httpcore.NetworkStream):
        def __init__(self, inner: httpcore.NetworkStream) -> None:
            self._inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return self._inner.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self._inner.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

        def close(self) -> None:
            self._inner.close()

        def start_tls(
            self,
            ssl_context: ssl.SSLContext,
            server_hostname: str | None = None,
            timeout: float | None = None,
        ) -> httpcore.NetworkStream:
            tls = self._inner.start_tls(
                ssl_context, server_hostname, _clamp(timeout, httpcore.ConnectTimeout)
            )
            return _Stream(tls)

        def get_extra_info(self, info: str) -> typing.Any:
            return self._inner.get_extra_info(info)

    class _DeadlineBackend(httpcore.NetworkBackend):
        def __init__(self, inner: httpcore.NetworkBackend) -> None:
            self._inner = inner

        def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: typing.Iterable[typing.Any] | None = None,
        ) -> httpcore.NetworkStream:
            stream = self._inner.connect_tcp(
                host, port, _clamp(timeout, httpcore.ConnectTimeout), local_address, socket_options
            )
            return _Stream(stream)

        def connect_unix_socket(
            self,
            path: str,
            timeout: float | None = None,
            socket_options: typing.Iterable[typing.Any] | None = None,
        ) -> httpcore.NetworkStream:
            stream = self._inner.connect_unix_socket(
                path, _clamp(timeout, httpcore.ConnectTimeout), socket_options
            )
            return _Stream(stream)

        def sleep(self, seconds: float) -> None:
            self._inner.sleep(seconds)

    return _DeadlineBackend


def bound_attempts(client: httpx.Client) -> bool:
    """Give the connection pools of an ``httpx.Client`` this SDK created the deadline backend.

    Returns False (and changes nothing) if httpx/httpcore internals are not as expected; the
    attempt is then bounded between reads only.
    """
    import httpcore  # loaded by the client's transport already (a client is built cold)

    deadline_backend = _deadline_backend()
    transports = [getattr(client, "_transport", None), *getattr(client, "_mounts", {}).values()]
    bound = False
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if isinstance(backend, deadline_backend):
            bound = True
        elif isinstance(backend, httpcore.NetworkBackend):
            pool._network_backend = deadline_backend(backend)  # type: ignore[union-attr,call-arg]
            bound = True
    return bound
