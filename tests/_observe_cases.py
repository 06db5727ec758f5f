"""Server behaviours for the observability tests: a scripted answer per attempt, one call made
on a sync or async client under a watchdog, and the requests that reached the transport."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
from hypothesis import strategies as st

from preo_client import AsyncPreoClient, Backoff, PreoClient
from tests.helpers import KEY, created

_T = TypeVar("_T")
WATCHDOG = 30.0  # seconds: a hang fails the test instead of blocking CI
KINDS = ["sync", "async"]

# One attempt's answer: ("ok",), ("replayed",), ("status", code), ("connect",),
# ("read_timeout",), ("reset",), ("bad_body",).
STATUSES = [400, 401, 404, 409, 422, 429, 500, 502, 503, 504]
steps = st.one_of(
    st.sampled_from([("ok",), ("replayed",), ("connect",), ("read_timeout",), ("reset",)]),
    st.sampled_from([("bad_body",)]),
    st.sampled_from(STATUSES).map(lambda code: ("status", code)),
)
scripts = st.lists(steps, min_size=1, max_size=5)


class Script:
    """Answers each request with the next step (then 201), echoing ``echo`` where it can."""

    def __init__(self, script: list[tuple[Any, ...]], echo: str = "") -> None:
        self.script = list(script)
        self.echo = echo
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script.pop(0) if self.script else ("ok",)
        echo = self.echo
        rid = {"x-request-id": echo or f"req_{len(self.requests)}"}
        if step[0] == "ok":
            return created(**rid)
        if step[0] == "replayed":
            return created(**rid, **{"idempotent-replayed": "true"})
        if step[0] == "connect":
            raise httpx.ConnectError(f"refused {echo}")
        if step[0] == "read_timeout":
            raise httpx.ReadTimeout(f"timed out {echo}")
        if step[0] == "reset":
            raise httpx.RemoteProtocolError(f"reset {echo}")
        if step[0] == "bad_body":
            return httpx.Response(201, content=f"not json {echo}".encode(), headers=rid)
        body = {"detail": f"no {echo}", "code": "x", "echo": echo}
        return httpx.Response(
            step[1], content=json.dumps(body).encode(), headers={**rid, "retry-after": "0"}
        )


def watched(fn: Callable[[], _T]) -> _T:
    """``fn()`` in a thread under the watchdog: a hang fails instead of blocking CI."""
    result: list[_T] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(WATCHDOG)
    assert not worker.is_alive(), "the sync call hung"
    if errors:
        raise errors[0]
    return result[0]


def call_once(
    kind: str,
    script: Script,
    *,
    api_key: str = KEY,
    before: Callable[[], object] | None = None,
    **options: Any,
) -> object:
    """One refund on a client of ``kind`` answered by ``script``: the Refund or the exception.
    ``before`` runs first in the thread or task that makes the call."""
    options = {"api_key": api_key, "backoff": Backoff(0, 0), **options}
    call = {"reason": "compensation", "amount": "12.50"}
    if kind == "sync":

        def go() -> object:
            if before is not None:
                before()
            http = httpx.Client(transport=httpx.MockTransport(script))
            with http, PreoClient(http_client=http, **options) as client:
                client._sleep = lambda seconds: None
                try:
                    return client.purchases.refund("pur_1", **call)
                except Exception as exc:
                    return exc

        return watched(go)

    async def no_sleep(seconds: float) -> None:
        return None

    async def go_async() -> object:
        if before is not None:
            before()
        async with httpx.AsyncClient(transport=httpx.MockTransport(script)) as http:
            client = AsyncPreoClient(http_client=http, **options)
            client._sleep = no_sleep
            try:
                return await client.purchases.refund("pur_1", **call)
            except Exception as exc:
                return exc

    return asyncio.run(asyncio.wait_for(go_async(), WATCHDOG))


__all__ = ["KINDS", "WATCHDOG", "Script", "call_once", "scripts", "steps", "watched"]
