"""The aiohttp transport (extra `fast`): same answers, and failures classed as safely as httpx's."""

from __future__ import annotations

import asyncio
import socket
from decimal import Decimal
from typing import Any

import httpx
import pytest

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
