"""What observability costs per call: the SDK's refund call against raw httpx (same
MockTransport, same canned 201) with logging and OpenTelemetry off, with the OpenTelemetry API
imported but no provider set, with SDK providers set, and with INFO records on; and what
``import preo_client`` costs when OpenTelemetry is already imported.

Each mode runs in a fresh interpreter (what is imported is process-wide), measuring raw httpx,
the SDK, and the SDK without its observability wrapper (``_send`` calling the retry loop
directly) interleaved in that same process: the ratios compare, not the microseconds.
"""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks._common import summary, table

SETUPS = {
    "off (default: OTel not imported, no PREO_LOG)": "",
    "opentelemetry not importable": "import sys; sys.modules['opentelemetry'] = None",
    "OTel API imported, no provider set": "import opentelemetry.trace, opentelemetry.metrics",
    "OTel SDK providers set (spans not exported)": """
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
trace.set_tracer_provider(TracerProvider())
metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
""",
    "INFO records on (a NullHandler)": """
import logging
logging.getLogger("preo_client").addHandler(logging.NullHandler())
logging.getLogger("preo_client").setLevel(logging.INFO)
""",
}

PROGRAM = """
{setup}
import asyncio, gc, json, time, uuid
from decimal import Decimal
import httpx
from benchmarks._common import API_KEY, canned
from preo_client import AsyncPreoClient, PreoClient
from preo_client._call import CallState


class Bare(PreoClient):  # the same client without the observability wrapper
    def _send(self, call, state=None):
        return self._retry_loop(call, state or CallState())


class ABare(AsyncPreoClient):
    async def _send(self, call, state=None):
        return await self._retry_loop(call, state or CallState())


URL = "https://api.preo.dev/v1/purchases/pur_1/refund"
PAYLOAD = {{"reason": "compensation", "scope": "purchase_custom", "amount": 12.5}}
HEADERS = {{"Accept": "application/json", "Authorization": "Bearer " + API_KEY}}
raw = httpx.Client(transport=httpx.MockTransport(canned), headers=HEADERS)
sdk = PreoClient(api_key=API_KEY, http_client=httpx.Client(transport=httpx.MockTransport(canned)))
bare = Bare(api_key=API_KEY, http_client=httpx.Client(transport=httpx.MockTransport(canned)))
abare = ABare(
    api_key=API_KEY, http_client=httpx.AsyncClient(transport=httpx.MockTransport(canned))
)
araw = httpx.AsyncClient(transport=httpx.MockTransport(canned), headers=HEADERS)
asdk = AsyncPreoClient(
    api_key=API_KEY, http_client=httpx.AsyncClient(transport=httpx.MockTransport(canned))
)

def raw_call():
    return raw.post(URL, json=PAYLOAD, headers={{"Idempotency-Key": str(uuid.uuid4())}}).json()

def sdk_call():
    return sdk.purchases.refund("pur_1", reason="compensation", amount=Decimal("12.50"))

def bare_call():
    return bare.purchases.refund("pur_1", reason="compensation", amount=Decimal("12.50"))

async def abare_call():
    return await abare.purchases.refund("pur_1", reason="compensation", amount=Decimal("12.50"))

async def araw_call():
    r = await araw.post(URL, json=PAYLOAD, headers={{"Idempotency-Key": str(uuid.uuid4())}})
    return r.json()

async def asdk_call():
    return await asdk.purchases.refund("pur_1", reason="compensation", amount=Decimal("12.50"))

def timed(fn, calls):
    gc.collect()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6

async def atimed(fn, calls):
    gc.collect()
    start = time.perf_counter()
    for _ in range(calls):
        await fn()
    return (time.perf_counter() - start) / calls * 1e6

loop = asyncio.new_event_loop()
out = {{"raw": [], "sdk": [], "bare": [], "araw": [], "asdk": [], "abare": []}}
for fn in (raw_call, sdk_call, bare_call):
    timed(fn, 50)
for fn in (araw_call, asdk_call, abare_call):
    loop.run_until_complete(atimed(fn, 50))
for _ in range({rounds}):
    out["raw"].append(timed(raw_call, {calls}))
    out["sdk"].append(timed(sdk_call, {calls}))
    out["bare"].append(timed(bare_call, {calls}))
    out["araw"].append(loop.run_until_complete(atimed(araw_call, {calls})))
    out["asdk"].append(loop.run_until_complete(atimed(asdk_call, {calls})))
    out["abare"].append(loop.run_until_complete(atimed(abare_call, {calls})))
print(json.dumps(out))
"""

IMPORT = (
    "{pre}; import time; t = time.perf_counter(); import preo_client; "
    "print(time.perf_counter() - t)"
)


def _mode(setup: str, rounds: int, calls: int) -> dict[str, list[float]]:
    code = PROGRAM.format(setup=setup, rounds=rounds, calls=calls)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _import_ms(pre: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT.format(pre=pre)], capture_output=True, text=True, check=True
    )
    return float(done.stdout) * 1000


def _ratio(values: list[float], base: list[float]) -> str:
    """The median of the per-round ratios (each round measured both back to back)."""
    return f"{summary([v / b for v, b in zip(values, base, strict=True)])[0]:.3f}x"


def run(rounds: int = 9, calls: int = 300) -> str:
    rows = []
    for name, setup in SETUPS.items():
        r = _mode(setup, rounds, calls)

        pairs = [("sdk", "raw"), ("sdk", "bare"), ("asdk", "araw"), ("asdk", "abare")]
        rows.append([name, *(_ratio(r[a], r[b]) for a, b in pairs)])
    title = (
        f"Observability cost per call ({rounds} rounds x {calls} calls, each mode its own process)"
    )
    header = ["mode", "sync vs raw httpx", "vs no hooks", "async vs raw httpx", "vs no hooks"]
    out = [table(title, header, rows)]

    pres = {
        "nothing imported before": "pass",
        "opentelemetry not importable": "import sys; sys.modules['opentelemetry'] = None",
        "opentelemetry.trace imported before": "import opentelemetry.trace",
    }
    times: dict[str, list[float]] = {name: [] for name in pres}
    for _ in range(15):
        for name, pre in pres.items():
            times[name].append(_import_ms(pre))
    base = summary(times["nothing imported before"])[0]
    irows = [
        [name, f"{summary(v)[0]:.1f}", f"{summary(v)[0] / base:.2f}x"] for name, v in times.items()
    ]
    out.append(
        table(
            "import preo_client, fresh interpreter (15 runs each, interleaved; ms)",
            ["before it", "median ms", "vs nothing before"],
            irows,
        )
    )
    return "\n\n".join(out)


if __name__ == "__main__":
    print(run())
