"""Review round 5 (an outside reviewer, against the installed wheel): an injected client's own
auth, a response hook's raise_for_status, a proxy refusing its tunnel, aiohttp's rounded
timeouts, and the owner's cancellation around an attempt."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from preo_client import (
    APIConnectionError,
    AsyncPreoClient,
    Backoff,
    BadRequestError,
    InternalServerError,
    PreoClient,
    RefundOutcomeUnknownError,
)

KEY = "sk_test_review5"
BODY = {
    "id": "rr_1", "amount": "10.00", "requested_by": {"id": "u"}, "pickup_point": {"id": "p"},
    "edition_id": "e", "can_approve": "true", "can_reject": "true",
    "created": "2026-07-04T18:22:11Z", "modified": "2026-07-04T18:22:11Z",
}  # fmt: skip
_NO_WAIT = Backoff(base=0, cap=0)


def _run(kind: str, answer: Callable[[httpx.Request], httpx.Response], **client: Any) -> Any:
    """One refund through a sync or async client whose httpx client has ``client``'s options;
    the Refund or the error it ended in."""
    transport = httpx.MockTransport(answer)
    if kind == "sync":
        sdk = PreoClient(
            api_key=KEY, http_client=httpx.Client(transport=transport, **client), backoff=_NO_WAIT
        )
        try:
            return sdk.purchases.refund("pur_1", reason="sold_out")
        except Exception as exc:
            return exc

    async def main() -> Any:
        http = httpx.AsyncClient(transport=transport, **client)
        sdk = AsyncPreoClient(api_key=KEY, http_client=http, backoff=_NO_WAIT)
        try:
            return await sdk.purchases.refund("pur_1", reason="sold_out")
        except Exception as exc:
            return exc

    return asyncio.run(asyncio.wait_for(main(), 20))


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("auth", [("other-api-user", "other-api-pass"), "basic-func"])
def test_an_injected_clients_own_auth_never_replaces_the_key(kind: str, auth: Any) -> None:
    """f1: ``httpx.Client(auth=...)`` ran its auth flow on the refund: another API's password
    went to Preo instead of the key."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=BODY)

    def basic(request: httpx.Request) -> httpx.Request:
        request.headers["Authorization"] = "Basic b3RoZXI6cGFzcw=="
        return request

    result = _run(kind, answer, auth=basic if auth == "basic-func" else auth)
    assert result.id == "rr_1"
    assert [r.headers.get_list("authorization") for r in seen] == [[f"Bearer {KEY}"]]


def _hooks(kind: str) -> dict[str, list[Any]]:
    if kind == "sync":
        return {"response": [lambda response: response.raise_for_status()]}

    async def raise_for_status(response: httpx.Response) -> None:
        response.raise_for_status()

    return {"response": [raise_for_status]}


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(
    ("status", "error", "attempts"), [(400, BadRequestError, 1), (503, InternalServerError, 3)]
)
def test_a_response_hooks_raise_for_status_leaves_the_status_deciding(
    kind: str, status: int, error: type[Exception], attempts: int
) -> None:
    """f3: a shared client's ``raise_for_status`` hook made a 400 "may exist" and a 503 final."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json={"detail": "no"})

    result = _run(kind, answer, event_hooks=_hooks(kind))
    assert isinstance(result, error)
    assert not isinstance(result, RefundOutcomeUnknownError)
    assert len(seen) == attempts  # a 503 is retried (never processed), a 400 is final
    assert len({r.headers["idempotency-key"] for r in seen}) == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_proxy_refusing_its_tunnel_is_never_sent_and_retried(kind: str) -> None:
    """f5: a proxy answering the CONNECT with a 502 means the refund never left."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.ProxyError("502 Bad Gateway", request=request)

    result = _run(kind, answer)
    assert isinstance(result, APIConnectionError)
    assert not isinstance(result, RefundOutcomeUnknownError)
    assert len(seen) == 3


aiohttp = pytest.importorskip("aiohttp")


def test_aiohttps_proxy_refusal_is_classed_as_a_proxy_error() -> None:
    from preo_client._aiohttp import _before_sending

    request = httpx.Request("POST", "https://api.preo.dev/v1/purchases/p/refund")
    refused = aiohttp.ClientHttpProxyError(request_info=None, history=(), status=502)  # type: ignore[arg-type]
    assert isinstance(_before_sending(refused, request), httpx.ProxyError)


def test_aiohttp_transport_takes_a_proxy_url_as_httpx_does() -> None:
    from preo_client import AiohttpTransport

    transport = AiohttpTransport(proxy="http://proxy.example:3128")
    assert isinstance(transport._inner.proxy, httpx.Proxy)
    assert transport._inner.proxy.url == httpx.URL("http://proxy.example:3128")


def test_aiohttp_timeouts_are_not_rounded_up_past_the_deadline() -> None:
    """f7: aiohttp rounds a timeout over 5 s up to a whole second, so its connect or pool
    timeout came after the attempt's deadline (a refund never sent reported "may exist")."""
    from preo_client import AiohttpTransport
    from preo_client._aiohttp import _request

    captured: dict[str, Any] = {}

    class Session:
        def request(self, *args: Any, **kwargs: Any) -> Any:
            captured.update(kwargs)
            raise RuntimeError("captured")

    request = httpx.Request(
        "POST", "https://api.preo.dev/v1/purchases/p/refund", content=b"{}",
        extensions={"timeout": httpx.Timeout(30, connect=5).as_dict()},
    )  # fmt: skip

    async def main() -> None:
        with pytest.raises(RuntimeError, match="captured"):
            await _request(AiohttpTransport()._inner, Session(), request)  # type: ignore[arg-type]

    asyncio.run(main())
    timeout = captured["timeout"]
    assert timeout.ceil_threshold == math.inf
    assert (timeout.sock_connect, timeout.connect, timeout.sock_read) == (5, 30, 30)


# -- the owner's cancellation around an attempt ------------------------------------------------


class _SwallowsThenAnswers(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return httpx.Response(201, json=BODY, request=request)
        raise AssertionError("unreachable")


def test_the_owners_cancel_wins_when_the_transport_answers_instead() -> None:
    """f2: the owner cancels, the transport swallows it and answers: the cancellation wins, as
    it does when the transport turns it into an error."""

    async def main() -> None:
        sdk = AsyncPreoClient(
            api_key=KEY, timeout=5,
            http_client=httpx.AsyncClient(transport=_SwallowsThenAnswers()),
        )  # fmt: skip
        call = asyncio.ensure_future(sdk.purchases.refund("pur_1", reason="sold_out"))
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

        with pytest.raises(TimeoutError):  # the caller's own timeout still reads as one
            async with asyncio.timeout(0.05):
                await sdk.purchases.refund("pur_2", reason="sold_out")
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0

    asyncio.run(asyncio.wait_for(main(), 20))


def test_a_cancellation_pending_when_the_call_starts_is_the_owners() -> None:
    """f8: requested before the attempt, delivered inside it: not a transport's stray
    CancelledError (which would report a refund never sent as one that may exist)."""
    sent = [0]

    class Transport(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(0)  # nothing on the wire yet
            sent[0] += 1
            return httpx.Response(500)

    async def main() -> None:
        sdk = AsyncPreoClient(
            api_key=KEY, max_retries=0, http_client=httpx.AsyncClient(transport=Transport())
        )
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sdk.purchases.refund("pur_1", reason="sold_out")
        task.uncancel()

    asyncio.run(asyncio.wait_for(main(), 20))
    assert sent == [0]


# -- review round 6: what a hook raises proves nothing about the refund --------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("fault", [httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError])
def test_a_hooks_own_connect_error_after_the_answer_is_not_never_sent(
    kind: str, fault: type[httpx.RequestError]
) -> None:
    """g5: a response hook posting each answer to a dead audit service raised ConnectError
    after the 201: read as "never sent", retried (three refunds from a server ignoring keys)."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=BODY)

    def audit(response: httpx.Response) -> None:
        raise fault("audit service down")

    async def audit_async(response: httpx.Response) -> None:
        audit(response)

    hooks = {"response": [audit if kind == "sync" else audit_async]}
    result = _run(kind, answer, event_hooks=hooks)
    assert isinstance(result, APIConnectionError)
    assert isinstance(result, RefundOutcomeUnknownError)  # the refund may exist: it does
    assert len(seen) == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("foreign", ["audit", "made up"])
def test_a_hooks_status_error_about_another_response_is_not_the_refunds(
    kind: str, foreign: str
) -> None:
    """g2: a hook's raise_for_status on the audit service's own 503 was read as the refund's
    status (refused, retried); one about a response it made up let a RuntimeError escape."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=BODY)

    def audit(response: httpx.Response) -> None:
        if foreign == "audit":
            other = httpx.Request("POST", "https://audit.example/log")
            httpx.Response(503, request=other).raise_for_status()
        raise httpx.HTTPStatusError("made up", request=response.request,
                                    response=httpx.Response(503))  # fmt: skip

    async def audit_async(response: httpx.Response) -> None:
        audit(response)

    hooks = {"response": [audit if kind == "sync" else audit_async]}
    result = _run(kind, answer, event_hooks=hooks)
    assert isinstance(result, APIConnectionError)
    assert isinstance(result, RefundOutcomeUnknownError)
    assert len(seen) == 1


def test_aiohttp_transport_refuses_a_proxy_it_cannot_speak_to() -> None:
    """g6: a socks5:// proxy got an HTTP CONNECT (and any credentials in clear)."""
    from preo_client import AiohttpTransport, ConfigurationError

    for url in ["socks5://127.0.0.1:1080", "socks5h://user:pw@proxy:1080"]:
        with pytest.raises(ConfigurationError, match="socks5"):
            AiohttpTransport(proxy=url)
    AiohttpTransport(proxy="https://proxy.example:3128")


def _tamper(what: str) -> Callable[[httpx.Request], None]:
    def hook(request: httpx.Request) -> None:
        if what == "key":
            request.headers["Idempotency-Key"] = "hook-made-key"
        elif what == "auth":
            request.headers["Authorization"] = "Bearer OTHER_API_SECRET"
        elif what == "url":
            request.url = request.url.copy_with(host="gateway.example.net")
        elif what == "log":
            request.headers.get("idempotency-key")  # reads only

    return hook


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("what", ["key", "auth", "url", "log"])
def test_a_request_hook_that_changes_the_refund_ends_the_call(kind: str, what: str) -> None:
    """g1/g3: a request hook of a shared client replaced the key (the error then advised a key
    never sent: following it refunded twice), the Authorization or the URL. The change is
    found after sending: outcome unknown, the key actually sent, never retried."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503)  # would be retried, were the request as built

    hook = _tamper(what)

    async def hook_async(request: httpx.Request) -> None:
        hook(request)

    result = _run(kind, answer, event_hooks={"request": [hook if kind == "sync" else hook_async]})
    if what == "log":  # a hook that only looks changes nothing
        assert isinstance(result, InternalServerError)
        assert len(seen) == 3
        return
    assert isinstance(result, APIConnectionError)
    assert isinstance(result, RefundOutcomeUnknownError)
    assert len(seen) == 1
    assert result.idempotency_key == seen[0].headers["idempotency-key"]
    assert "OTHER_API_SECRET" not in str(result)
    assert "event hook" in str(result)
