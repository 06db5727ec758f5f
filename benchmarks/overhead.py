"""Per-call overhead: the SDK's refund call vs raw httpx vs the bare generated function, all on
one in-process httpx.MockTransport returning the same canned 201 (sync and async).

The baseline is ``httpx.Client.post`` doing the same job: the same JSON body, the same
``Authorization``/``Accept``/``User-Agent`` headers and a fresh ``Idempotency-Key`` per call,
reading the answer's JSON. Rounds are interleaved (every case once per round, in a shuffled
order) and each ratio is taken within a round, so load from other processes on a shared machine
hits both sides of a ratio alike; the table gives the median ratio and its range over rounds.
"""

from __future__ import annotations

import asyncio
import gc
import random
import statistics
import uuid
from collections.abc import Callable
from decimal import Decimal

import httpx

from benchmarks._common import API_KEY, canned, now, summary, table
from preo_client import AsyncPreoClient, PreoClient
from preo_client._generated.api.purchases import create_purchase_refund
from preo_client._generated.client import AuthenticatedClient
from preo_client._generated.models.refund_reason import RefundReason
from preo_client._generated.models.refund_request_create import RefundRequestCreate
from preo_client._generated.models.refund_scope import RefundScope

URL = "https://api.preo.dev/v1/purchases/pur_1/refund"
BASELINE = "raw httpx.post, same JSON + headers + key"
PAYLOAD = {"reason": "compensation", "scope": "purchase_custom", "amount": 12.5}


# What the SDK sends on every call besides the body: a raw client doing the same job sets the
# same headers on its client and a fresh idempotency key per call.
SAME_HEADERS = {
    "Accept": "application/json",
    "User-Agent": "preo-client-python/bench",
    "Authorization": f"Bearer {API_KEY}",
}


def _key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def _sync_cases() -> dict[str, Callable[[], object]]:
    raw = httpx.Client(
        transport=httpx.MockTransport(canned), headers={"Authorization": f"Bearer {API_KEY}"}
    )
    same = httpx.Client(transport=httpx.MockTransport(canned), headers=SAME_HEADERS)
    sdk = PreoClient(
        api_key=API_KEY, http_client=httpx.Client(transport=httpx.MockTransport(canned))
    )
    gen = AuthenticatedClient(base_url="https://api.preo.dev", token=API_KEY)
    gen.set_httpx_client(
        httpx.Client(
            base_url="https://api.preo.dev",
            transport=httpx.MockTransport(canned),
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
    )
    body = RefundRequestCreate(
        reason=RefundReason.COMPENSATION, scope=RefundScope.PURCHASE_CUSTOM, amount=12.5
    )

    def raw_call() -> object:
        return raw.post(URL, json=PAYLOAD).json()

    def same_call() -> object:
        return same.post(URL, json=PAYLOAD, headers=_key()).json()

    def generated_call() -> object:
        return create_purchase_refund.sync_detailed("pur_1", client=gen, body=body).parsed

    def sdk_call() -> object:
        return sdk.purchases.refund("pur_1", reason="compensation", amount=Decimal("12.50"))

    return {
        BASELINE: same_call,
        "raw httpx, auth header only": raw_call,
        "generated function": generated_call,
        "PreoClient": sdk_call,
    }


def _async_cases() -> dict[str, Callable[[], object]]:
    raw = httpx.AsyncClient(
        transport=httpx.MockTransport(canned), headers={"Authorization": f"Bearer {API_KEY}"}
    )
    same = httpx.AsyncClient(transport=httpx.MockTransport(canned), headers=SAME_HEADERS)
    sdk = AsyncPreoClient(
        api_key=API_KEY, http_client=httpx.AsyncClient(transport=httpx.MockTransport(canned))
    )
    gen = AuthenticatedClient(base_url="https://api.preo.dev", token=API_KEY)
    gen.set_async_httpx_client(
        httpx.AsyncClient(
            base_url="https://api.preo.dev",
            transport=httpx.MockTransport(canned),
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
    )
    body = RefundRequestCreate(
        reason=RefundReason.COMPENSATION, scope=RefundScope.PURCHASE_CUSTOM, amount=12.5
    )

    async def raw_call() -> object:
        return (await raw.post(URL, json=PAYLOAD)).json()

    async def same_call() -> object:
        return (await same.post(URL, json=PAYLOAD, headers=_key())).json()

    async def generated_call() -> object:
        return (
            await create_purchase_refund.asyncio_detailed("pur_1", client=gen, body=body)
        ).parsed

    async def sdk_call() -> object:
        return await sdk.purchases.refund("pur_1", reason="compensation", amount=Decimal("12.50"))

    return {
        BASELINE: same_call,
        "raw httpx, auth header only": raw_call,
        "generated function": generated_call,
        "AsyncPreoClient": sdk_call,
    }


def _time_sync(fn: Callable[[], object], calls: int) -> float:
    gc.collect()
    start = now()
    for _ in range(calls):
        fn()
    return (now() - start) / calls * 1e6


async def _time_async(fn: Callable[[], object], calls: int) -> float:
    gc.collect()
    start = now()
    for _ in range(calls):
        await fn()  # type: ignore[misc]
    return (now() - start) / calls * 1e6


def run(rounds: int = 60, calls: int = 100) -> str:
    """Interleaved rounds (each case once per round, shuffled) so machine noise hits all alike;
    ratios are taken within each round."""
    out = []
    shuffle = random.Random(17).shuffle
    for mode, cases in (("sync", _sync_cases()), ("async", _async_cases())):
        results: dict[str, list[float]] = {name: [] for name in cases}
        loop = asyncio.new_event_loop()
        for fn in cases.values():  # warm up
            if mode == "sync":
                _time_sync(fn, 200)
            else:
                loop.run_until_complete(_time_async(fn, 200))
        order = list(cases.items())
        for _ in range(rounds):
            shuffle(order)
            for name, fn in order:
                if mode == "sync":
                    results[name].append(_time_sync(fn, calls))
                else:
                    results[name].append(loop.run_until_complete(_time_async(fn, calls)))
        loop.close()
        base = results[BASELINE]
        rows = []
        for name, values in results.items():
            ratios = [value / b for value, b in zip(values, base, strict=True)]
            med, lo, _hi = summary(values)
            rows.append(
                [
                    name,
                    f"{med:.1f}",
                    f"{lo:.1f}",
                    f"{statistics.median(ratios):.3f}x",
                    f"{min(ratios):.2f}-{max(ratios):.2f}",
                    f"{lo / min(base):.3f}x",
                ]
            )
        title = f"Per-call overhead, {mode} ({rounds} rounds x {calls} calls)"
        header = ["client", "median us", "min us", "vs baseline", "range", "min vs min"]
        out.append(table(title, header, rows))
    return "\n\n".join(out)


if __name__ == "__main__":
    print(run())
