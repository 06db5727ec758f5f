"""The sandbox as a raw ASGI application, for a fast server (e.g. uvicorn) in benchmarks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx

from ._fake import FakePreo

__all__ = ["asgi_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def asgi_app(fake: FakePreo) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """An ASGI app answering every HTTP request with ``fake.handle`` (no framework)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path = scope.get("raw_path") or scope["path"].encode()
        request = httpx.Request(
            scope["method"],
            httpx.URL(scheme="http", host="sandbox", raw_path=path),
            headers=scope["headers"],
            content=body,
        )
        try:
            response = fake.handle(request)
        except httpx.TransportError:
            response = httpx.Response(502, content=b"")  # injected faults: no dropped sockets here
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [(k.lower(), v) for k, v in response.headers.raw],
            }
        )
        await send({"type": "http.response.body", "body": response.content})

    return app
