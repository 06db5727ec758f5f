"""An aiohttp-backed transport for AsyncPreoClient (extra ``fast``), with failures classed safely.

httpx-aiohttp maps every ``aiohttp.ClientConnectionError`` (a dropped connection after the
request went out included) to ``httpx.ConnectTimeout``, which a retry policy must read as "never
sent". For a refund that would mean a retry that may refund twice. This wrapper classes each
failure by what actually happened: only a connection that was never made is "not sent".

It also sends the URL exactly as httpx built it: httpx-aiohttp hands aiohttp ``str(url)``, which
yarl parses again and re-quotes, decoding ``%3B %3D %40 ...`` in the path (``pur_1%3Btype%3Dgift``
would go out as ``pur_1;type=gift``). So the request is made here, with the URL marked as
already encoded (``tests/test_aiohttp_transport.py`` fails loudly if yarl stops honouring it).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import httpx

try:
    import aiohttp
    import yarl
    from httpx_aiohttp import AiohttpTransport as _HttpxAiohttpTransport
    from httpx_aiohttp.transport import AiohttpResponseStream, map_aiohttp_exceptions
except ImportError as exc:  # pragma: no cover - exercised by hand without the extra
    raise ImportError(
        "AiohttpTransport needs the 'fast' extra: pip install 'preo-client[fast]'"
    ) from exc

from ._call import exception_text
from ._exceptions import ConfigurationError
from ._stray import UnusableConnectionError, guard_aiohttp

__all__ = ["AiohttpTransport"]


def _root(exc: BaseException) -> BaseException:
    return exc.__cause__ if isinstance(exc, httpx.TransportError) and exc.__cause__ else exc


def _before_sending(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """A failure while sending: "not sent" only when no connection was ever made."""
    cause = _root(exc)
    message = exception_text(cause) or type(cause).__name__
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(cause, aiohttp.ClientConnectorError | UnusableConnectionError):
        return httpx.ConnectError(message, request=request)
    if isinstance(cause, aiohttp.ClientHttpProxyError):  # the proxy refused the tunnel
        return httpx.ProxyError(message, request=request)
    return _after_sending(exc, request)


def _after_sending(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """A failure once the request may have reached the server: outcome unknown."""
    cause = _root(exc)
    message = exception_text(cause) or type(cause).__name__
    if isinstance(
        cause, aiohttp.ServerTimeoutError | asyncio.TimeoutError | httpx.TimeoutException
    ):
        return httpx.ReadTimeout(message, request=request)
    return httpx.ReadError(message, request=request)


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: httpx.AsyncByteStream, request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except Exception as exc:  # the answer had started: the request was processed
            raise _after_sending(exc, self._request) from exc

    async def aclose(self) -> None:
        await self._stream.aclose()


def exact_url(url: httpx.URL) -> yarl.URL:
    """``url`` for aiohttp as it is: marked encoded, so yarl does not quote it again."""
    return yarl.URL(str(url), encoded=True)


async def _request(
    inner: _HttpxAiohttpTransport, session: aiohttp.ClientSession, request: httpx.Request
) -> aiohttp.ClientResponse:
    """What ``httpx_aiohttp.AiohttpTransport.handle_async_request`` asks of aiohttp, with the
    URL given as built (see the module docstring)."""
    timeout = request.extensions.get("timeout", {})
    data: bytes | httpx.AsyncByteStream | None
    try:
        data = request.content or None
    except httpx.RequestNotRead:  # a streamed body: aiohttp frames it
        data = request.stream  # type: ignore[assignment]
        request.headers.pop("transfer-encoding", None)
    proxy = inner.proxy
    return await session.request(
        request.method,
        exact_url(request.url),
        headers=request.headers,
        data=data,
        allow_redirects=False,
        auto_decompress=False,
        compress=False,
        timeout=aiohttp.ClientTimeout(
            sock_connect=timeout.get("connect"),
            sock_read=timeout.get("read"),
            connect=timeout.get("pool"),
            # aiohttp rounds a timeout over ceil_threshold (5 s) up to a whole second: its
            # connect or pool timeout would fire after the attempt's deadline, and a refund
            # never sent would be reported as one that may exist
            ceil_threshold=math.inf,
        ),
        server_hostname=request.extensions.get("sni_hostname"),
        proxy=str(proxy.url) if proxy else None,
        proxy_auth=aiohttp.BasicAuth(*proxy.auth) if proxy and proxy.auth else None,
        proxy_headers=proxy.headers if proxy else None,
    ).__aenter__()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """aiohttp under httpx, for high-concurrency bulk runs (much faster than httpcore's pool
    above ~16 concurrent requests). Takes httpx-aiohttp's arguments (``limits``, ``verify``,
    ``proxy``, ...). Use: ``httpx.AsyncClient(transport=AiohttpTransport())``."""

    _preo_guards_itself: ClassVar[bool] = True  # its connector is guarded before each request

    def __init__(self, **options: Any) -> None:
        if isinstance(options.get("proxy"), str | httpx.URL):  # as httpx itself accepts it
            options["proxy"] = httpx.Proxy(options["proxy"])
        proxy = options.get("proxy")
        if isinstance(proxy, httpx.Proxy) and proxy.url.scheme not in ("http", "https"):
            # aiohttp speaks HTTP CONNECT to any proxy: a SOCKS one would get (and fail) that
            raise ConfigurationError(
                f"AiohttpTransport: proxy scheme {proxy.url.scheme!r} is not supported "
                "(aiohttp speaks to http:// and https:// proxies only)"
            )
        self._inner = _HttpxAiohttpTransport(**options)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through aiohttp. A failure is classed by what happened:
        ``httpx.ConnectError`` / ``ConnectTimeout`` only when no connection was ever made, else
        ``httpx.ReadError`` / ``ReadTimeout`` (the request may have reached the server)."""
        inner = self._inner
        if not isinstance(inner.client, aiohttp.ClientSession):
            inner.client = inner.get_client()  # as httpx-aiohttp would, so it can be guarded
        guard_aiohttp(inner.client.connector)  # a connection with stray bytes is never reused
        try:
            with map_aiohttp_exceptions():  # as httpx-aiohttp maps them (the cause is kept)
                answer = await _request(inner, inner.client, request)
        except Exception as exc:
            raise _before_sending(exc, request) from exc
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if answer.reason:
            extensions["reason_phrase"] = answer.reason.encode()
        return httpx.Response(
            answer.status,
            headers=answer.raw_headers,
            stream=_Body(AiohttpResponseStream(answer), request),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        """Close the aiohttp session (``httpx.AsyncClient.aclose()`` calls it)."""
        await self._inner.aclose()
