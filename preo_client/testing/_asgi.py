"""The sandbox as a raw ASGI application, for uvicorn (``serve --server uvicorn``, benchmarks)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx

from ._fake import FakePreo
from ._server import access_line

__all__ = ["asgi_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
_MAX_BODY = 1024 * 1024


def asgi_app(
    fake: FakePreo, *, access_log: Callable[[str], None] | None = None
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """An ASGI app answering every HTTP request with ``fake.ahandle`` (no framework).

    Latency is awaited (``asyncio.sleep``), so slow answers never block other requests.
    ``access_log`` receives one line per request (see ``_server.access_line``).
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        started = time.perf_counter()
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path = scope.get("raw_path") or scope["path"].encode()
        try:
            if len(body) > _MAX_BODY:
                raise ValueError("body too large")
            request = httpx.Request(
                scope["method"],
                httpx.URL(scheme="http", host="sandbox", raw_path=path),
                headers=scope["headers"],
                content=body,
            )
        except (ValueError, httpx.InvalidURL, httpx.HTTPError):
            response = httpx.Response(
                400,
                headers={"content-type": "application/json"},
                content=json.dumps({"non_field_errors": ["Malformed request."]}).encode(),
            )
        else:
            try:
                response = await fake.ahandle(request)
            except httpx.TransportError:
                # injected faults: no dropped sockets under ASGI, a 502 stands in for them
                response = httpx.Response(502, content=b"")
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [(k.lower(), v) for k, v in response.headers.raw],
            }
        )
        await send({"type": "http.response.body", "body": response.content})
        if access_log is not None:
            key = dict(scope["headers"]).get(b"idempotency-key")
            line = access_line(
                scope["method"],
                scope["path"],
                response.status_code,
                key.decode("latin-1") if key is not None else None,
                time.perf_counter() - started,
            )
            access_log(line)

    return app
