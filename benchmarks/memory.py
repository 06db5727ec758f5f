"""Bulk memory: peak RSS of refund_many over a generator of N items against the in-process
sandbox, results streamed and discarded; each N in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

from benchmarks._common import table

CHILD = r"""
import asyncio, resource, sys
from preo_client import Backoff, RefundItem
from preo_client.testing import FakePreo

def peak_mb():
    # VmHWM belongs to this program's address space; ru_maxrss would also count the pages of the
    # parent this process was forked from before it exec'd Python.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

count = int(sys.argv[1])
# The sandbox keeps no history here (keep_history=False): what grows is the client's, not the
# ledger's. One purchase large enough for every 0.01 refund.
fake = FakePreo(keep_history=False)
fake.add_purchase("pur_bench", price="100000000.00")

def items():
    for i in range(count):
        yield RefundItem("pur_bench", reason="compensation", amount="0.01", reference=f"r{i}")

async def main():
    base = peak_mb()
    async with fake.async_client(backoff=Backoff(0, 0)) as client:
        run = client.purchases.refund_many(items(), concurrency=64)
        async for _ in run:
            pass
    peak = peak_mb()
    assert run.summary.succeeded == count, run.summary
    print(base, peak, fake.refund_count)

asyncio.run(main())
"""


def _measure(count: int) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(count)], capture_output=True, text=True, check=True
    )
    base, peak, refunds = out.stdout.split()
    assert int(refunds) == count
    return float(base), float(peak)


def run(sizes: tuple[int, ...] = (10_000, 100_000)) -> str:
    rows = []
    peaks = {}
    for n in sizes:
        base, peak = _measure(n)
        peaks[n] = peak
        rows.append([f"{n:,}", f"{base:.1f}", f"{peak:.1f}", f"{peak / peaks[sizes[0]]:.3f}x"])
    title = "Bulk memory: refund_many over a generator, in-process sandbox (peak RSS, MB)"
    return table(title, ["items", "RSS after imports", "peak RSS", "vs smallest"], rows)


if __name__ == "__main__":
    print(run())
