"""The aiohttp transport (extra `fast`): same answers, and failures classed as safely as httpx's."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preo_client import (
    AiohttpTransport,
    APIConnectionError,
    APITimeoutError,
    AsyncPreoClient,
    Backoff,
    NotFoundError,
    RefundOutcomeUnknownError,
)
from preo_client.testing import DEMO_API_KEY, FakePreo, Fault, serve
from tests.test_models import within_watchdog
from tests.test_stray import Server, answer, read_request, serving


def run(url: str, purchase_id: str, **options: Any) -> Any:
    async def go() -> Any:
        http = httpx.AsyncClient(transport=AiohttpTransport())
        try:
            async with AsyncPreoClient(
                api_key=DEMO_API_KEY, base_url=url, http_client=http, backoff=Backoff(0, 0),
                **options,
            ) as client:  # fmt: skip
                try:
                    return await client.purchases.refund(purchase_id, reason="sold_out")
                except APIConnectionError as exc:
                    return exc
        finally:
            await http.aclose()

    return asyncio.run(go())


def test_refund_and_error_statuses() -> None:
    fake = FakePreo.demo()
    with serve(fake) as server:
        refund = run(server.url, "pur_demo_ticket")
        assert refund.amount == Decimal("51.5")
        with pytest.raises(NotFoundError):
            run(server.url, "pur_missing")
    assert len(fake.refunds) == 1


def test_refused_connection_is_not_sent_and_retried() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the probe closes
    error = run(f"http://127.0.0.1:{port}", "pur_1", max_retries=2)
    assert isinstance(error, APIConnectionError)
    assert not isinstance(error, RefundOutcomeUnknownError)


@pytest.mark.parametrize("fault", [Fault.connection_reset(), Fault.read_timeout()])
def test_dropped_connection_after_sending_is_unknown_and_not_retried(fault: Fault) -> None:
    fake = FakePreo.demo()
    fake.inject(fault)
    with serve(fake) as server:
        error = run(server.url, "pur_demo_ticket")
    # httpx-aiohttp alone calls this ConnectTimeout ("never sent") and a retry could refund twice
    assert isinstance(error, APIConnectionError)
    assert isinstance(error, RefundOutcomeUnknownError)
    assert len(fake.requests) == 1
    assert len(fake.refunds) == 1


def test_read_timeout_is_an_unknown_outcome() -> None:
    fake = FakePreo.demo()
    handle = fake.handle

    def slow(request: httpx.Request) -> httpx.Response:
        import time

        time.sleep(0.5)
        return handle(request)

    fake.handle = slow  # type: ignore[method-assign]
    with serve(fake) as server:
        error = run(server.url, "pur_demo_ticket", timeout=httpx.Timeout(0.1, connect=2.0))
    assert isinstance(error, APITimeoutError)
    assert isinstance(error, RefundOutcomeUnknownError)


@dataclass
class RequestLines(Server):
    """A loopback server that answers every request with a refund and records each request
    line exactly as it came off the socket."""

    first: bytes = b""
    stray: bytes = b""
    delay: float | None = None
    lines: list[bytes] = field(default_factory=list)

    def answer_all(self, conn: socket.socket) -> None:
        buf = b""
        while (request := read_request(conn, buf)) is not None:
            head, buf = request
            self.lines.append(head.split(b"\r\n", 1)[0])
            conn.sendall(answer(201, "rr_1"))


WIRE_TRANSPORTS: dict[str, Callable[[], httpx.AsyncBaseTransport]] = {
    "httpx": httpx.AsyncHTTPTransport,
    "aiohttp": AiohttpTransport,
}
# Valid purchase ids (see check_purchase_id), rich in the characters yarl would re-quote.
purchase_ids = st.text(
    st.sampled_from("!$&'()*+,;=:@%/?#[]~-._aZ09äé€"), min_size=1, max_size=24
) | st.text(st.characters(exclude_categories=["C", "Z"]), min_size=1, max_size=24)
wire_ids = purchase_ids.filter(lambda p: p not in (".", ".."))


async def _send_all(url: str, transport: str, ids: list[str], built: list[httpx.URL]) -> None:
    async def record(request: httpx.Request) -> None:
        built.append(request.url)

    http = httpx.AsyncClient(
        transport=WIRE_TRANSPORTS[transport](), event_hooks={"request": [record]}
    )
    try:
        async with AsyncPreoClient(
            api_key=DEMO_API_KEY, base_url=url, http_client=http, max_retries=0
        ) as client:
            for purchase_id in ids:
                await client.purchases.refund(purchase_id, reason="sold_out")
    finally:
        await http.aclose()


@pytest.mark.parametrize("transport", sorted(WIRE_TRANSPORTS))
def test_the_request_line_is_the_url_httpx_built(transport: str) -> None:
    """Review round 4 (r8): with AiohttpTransport, yarl re-quoted the URL and decoded
    ``! $ & ' ( ) * , : ; = @`` in the path (``pur_1;type=gift`` went out for
    ``pur_1%3Btype%3Dgift``). The path on the wire is ``request.url.raw_path``, which is the
    contract's ``/v1/purchases/{quote(id, safe="")}/refund``, with either transport."""
    with serving(RequestLines()) as server:

        @settings(max_examples=30, deadline=None)
        @given(ids=st.lists(wire_ids, min_size=1, max_size=4))
        def check(ids: list[str]) -> None:
            server.lines.clear()
            built: list[httpx.URL] = []
            within_watchdog(lambda: asyncio.run(_send_all(server.url, transport, ids, built)))
            expected = [f"/v1/purchases/{quote(p, safe='')}/refund".encode() for p in ids]
            assert [url.raw_path for url in built] == expected
            assert server.lines == [b"POST " + path + b" HTTP/1.1" for path in expected]

        check()


def test_the_reviewed_ids_go_out_encoded() -> None:
    ids = ["pur_1;type=gift", "pur_1@shop", "A&B", "o'brien(2)"]
    with serving(RequestLines()) as server:
        within_watchdog(lambda: asyncio.run(_send_all(server.url, "aiohttp", ids, [])))
    assert [line.split(b" ")[1] for line in server.lines] == [
        b"/v1/purchases/pur_1%3Btype%3Dgift/refund",
        b"/v1/purchases/pur_1%40shop/refund",
        b"/v1/purchases/A%26B/refund",
        b"/v1/purchases/o%27brien%282%29/refund",
    ]


def test_yarl_still_keeps_an_encoded_url_and_requotes_text() -> None:
    """What AiohttpTransport relies on (``_aiohttp.exact_url``): a ``yarl.URL(text,
    encoded=True)`` keeps the path and query exactly, while plain text is re-quoted (the reason
    the transport does not hand aiohttp ``str(url)``). If yarl changes either, this fails."""
    import yarl

    from preo_client._aiohttp import exact_url

    url = httpx.URL("http://127.0.0.1:1/v1/purchases/a%3Bb%3Dc%40%2F%25%3F%20/refund?x=%3B&y=%2B")
    kept = exact_url(url)
    assert kept.raw_path_qs == "/v1/purchases/a%3Bb%3Dc%40%2F%25%3F%20/refund?x=%3B&y=%2B"
    assert (kept.raw_host, kept.port, kept.scheme) == ("127.0.0.1", 1, "http")
    assert str(kept) == str(url)
    assert yarl.URL(str(url)).raw_path != kept.raw_path  # text is re-quoted: ';' '=' '@' decoded
