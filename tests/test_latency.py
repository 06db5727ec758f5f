"""The sandbox's latency: applied without blocking other requests, in every mount."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preo_client import AsyncPreoClient
from preo_client.testing import DEMO_API_KEY, FakePreo, serve
from preo_client.testing._asgi import asgi_app

WATCHDOG = 60.0
LATENCY = 0.2
N = 10


def make_fake() -> FakePreo:
    fake = FakePreo(latency=LATENCY)
    for i in range(N):
        fake.add_purchase(f"pur_{i}", price="5.00")
    return fake


def assert_all_overlapped(fake: FakePreo) -> None:
    """Every request started before any finished: they were all in flight together."""
    assert len(fake.spans) == N
    starts = [start for start, _ in fake.spans]
    ends = [end for _, end in fake.spans]
    assert max(starts) < min(ends)


async def refund_all(client: AsyncPreoClient) -> None:
    async with client:
        refunds = await asyncio.gather(
            *(client.purchases.refund(f"pur_{i}", reason="sold_out") for i in range(N))
        )
    assert [r.amount for r in refunds] == [5] * N


async def test_concurrent_async_requests_overlap_in_process() -> None:
    fake = make_fake()
    await asyncio.wait_for(refund_all(fake.async_client()), timeout=WATCHDOG)
    assert_all_overlapped(fake)
    assert len(fake.refunds) == N


async def test_concurrent_requests_overlap_through_the_asgi_app() -> None:
    fake = make_fake()
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi_app(fake)))
    client = AsyncPreoClient(api_key=DEMO_API_KEY, base_url="https://sandbox.preo.test",
                             http_client=http)  # fmt: skip
    try:
        await asyncio.wait_for(refund_all(client), timeout=WATCHDOG)
    finally:
        await http.aclose()
    assert_all_overlapped(fake)


def test_concurrent_requests_overlap_on_the_threaded_server() -> None:
    fake = make_fake()
    fake.set_latency(1.0)  # far longer than it takes the threads to pass the barrier
    barrier = threading.Barrier(N)

    def refund(i: int) -> int:
        with httpx.Client(base_url=running.url, timeout=WATCHDOG) as http:
            barrier.wait(timeout=WATCHDOG)  # every client is built before any request is sent
            response = http.post(
                f"/v1/purchases/pur_{i}/refund",
                json={"reason": "sold_out"},
                headers={"authorization": f"Bearer {DEMO_API_KEY}", "idempotency-key": f"k{i}"},
            )
        return response.status_code

    with serve(fake) as running, concurrent.futures.ThreadPoolExecutor(N) as pool:
        statuses = [f.result(timeout=WATCHDOG) for f in [pool.submit(refund, i) for i in range(N)]]
    assert statuses == [201] * N
    assert_all_overlapped(fake)


def test_the_sync_transport_sleeps_in_the_callers_thread() -> None:
    fake = FakePreo(latency=0.05)
    fake.add_purchase("pur_1", price="5.00")
    with fake.client() as client:
        client.purchases.refund("pur_1", reason="sold_out")
    ((start, end),) = fake.spans
    assert end - start >= 0.05  # time.sleep sleeps at least that long: not a speed claim


@settings(max_examples=50, deadline=None)
@given(latency=st.floats(min_value=0, max_value=5), jitter=st.floats(min_value=0, max_value=5))
def test_delays_are_latency_plus_uniform_jitter(latency: float, jitter: float) -> None:
    fake = FakePreo()
    fake.set_latency(latency, jitter=jitter)
    delays = [fake._delay() for _ in range(50)]
    assert all(latency <= d <= latency + jitter for d in delays)


def test_latency_is_settable_later() -> None:
    fake = FakePreo(latency=1.0, latency_jitter=0.5)
    assert (fake.latency, fake.latency_jitter) == (1.0, 0.5)
    fake.set_latency(0)
    assert fake._delay() == 0
    with pytest.raises(ValueError, match="latency_jitter must be"):
        fake.set_latency(0, jitter=-1)
