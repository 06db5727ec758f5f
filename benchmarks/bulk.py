"""Bulk throughput over real loopback HTTP: refund_many vs a naive raw httpx.AsyncClient loop vs
a reference load generator (aiohttp), all against the sandbox under uvicorn in another process."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx

from benchmarks._common import summary, table
from preo_client import AiohttpTransport, AsyncPreoClient, Backoff
from preo_client.testing import DEMO_API_KEY

_run_ids = itertools.count()
HEADERS = {"Authorization": f"Bearer {DEMO_API_KEY}", "Content-Type": "application/json"}
BODY = json.dumps({"reason": "sold_out", "scope": "purchase_full"}).encode()


def _ids(count: int) -> list[str]:
    run = next(_run_ids)
    return [f"pur_{run}_{i}" for i in range(count)]  # fresh purchases: nothing refunded yet


async def naive_httpx(url: str, count: int, concurrency: int) -> int:
    """What a partner writes first: one AsyncClient, a semaphore, gather."""
    limit = asyncio.Semaphore(concurrency)
    ok = 0
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=60) as client:

        async def one(pid: str) -> None:
            nonlocal ok
            async with limit:
                r = await client.post(
                    f"/v1/purchases/{pid}/refund",
                    content=BODY,
                    headers={"Idempotency-Key": str(uuid.uuid4())},
                )
                r.json()
                ok += r.status_code == 201

        await asyncio.gather(*(one(p) for p in _ids(count)))
    return ok


async def refund_many(url: str, count: int, concurrency: int) -> int:
    async with AsyncPreoClient(
        api_key=DEMO_API_KEY, base_url=url, backoff=Backoff(0, 0), timeout=60
    ) as client:
        summary = await client.purchases.refund_many(
            _ids(count), reason="sold_out", concurrency=concurrency
        ).run()
    return summary.succeeded


async def refund_many_aiohttp(url: str, count: int, concurrency: int) -> int:
    """refund_many on the `fast` extra's transport (aiohttp under httpx, safe failure classes)."""
    transport = AiohttpTransport(limits=httpx.Limits(max_connections=concurrency))
    async with httpx.AsyncClient(transport=transport) as http:
        client = AsyncPreoClient(
            api_key=DEMO_API_KEY, base_url=url, backoff=Backoff(0, 0), timeout=60, http_client=http
        )
        summary = await client.purchases.refund_many(
            _ids(count), reason="sold_out", concurrency=concurrency
        ).run()
    return summary.succeeded


async def aiohttp_reference(url: str, count: int, concurrency: int) -> int:
    """Reference load generator: aiohttp with a fixed pool of workers (no SDK, no parsing)."""
    import aiohttp

    ids = iter(_ids(count))
    ok = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, headers=HEADERS, connector=connector) as session:

        async def worker() -> None:
            nonlocal ok
            for pid in ids:
                async with session.post(
                    f"/v1/purchases/{pid}/refund",
                    data=BODY,
                    headers={"Idempotency-Key": str(uuid.uuid4())},
                ) as r:
                    await r.read()
                    ok += r.status == 201

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


CLIENTS: dict[str, Callable[[str, int, int], Awaitable[int]]] = {
    "naive raw httpx loop": naive_httpx,
    "refund_many": refund_many,
    "refund_many, aiohttp transport": refund_many_aiohttp,
    "aiohttp (reference)": aiohttp_reference,
}


def _rate(fn: Callable[[str, int, int], Awaitable[int]], url: str, count: int, conc: int) -> float:
    start = time.perf_counter()
    ok = asyncio.run(fn(url, count, conc))
    elapsed = time.perf_counter() - start
    if ok != count:
        raise RuntimeError(f"{fn.__name__}: only {ok}/{count} refunds succeeded")
    return count / elapsed


def run(count: int = 5000, rounds: int = 3, levels: tuple[int, ...] = (8, 64, 256)) -> str:
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._server", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(url)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        _rate(naive_httpx, url, 500, 8)  # warm up server and client paths
        rows = []
        for conc in levels:
            rates: dict[str, list[float]] = {name: [] for name in CLIENTS}
            for _ in range(rounds):
                for name, fn in CLIENTS.items():
                    rates[name].append(_rate(fn, url, count, conc))
            best = max(summary(v)[0] for v in rates.values())
            naive = summary(rates["naive raw httpx loop"])[0]
            for name, values in rates.items():
                med, lo, hi = summary(values)
                rows.append([conc, name, f"{med:.0f}", f"{lo:.0f}", f"{hi:.0f}",
                             f"{med / naive:.2f}x", f"{med / best:.2f}x"])  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()
    title = f"Bulk throughput over loopback HTTP ({count} refunds, {rounds} rounds; req/s)"
    header = ["concurrency", "client", "median req/s", "min", "max", "vs naive", "vs best"]
    return table(title, header, rows)


if __name__ == "__main__":
    print(run(*(int(a) for a in sys.argv[1:2])))
