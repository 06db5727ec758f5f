"""Pacing over real loopback HTTP: a naive retry loop vs refund_many (fixed concurrency) vs
refund_many(pacing="adaptive"), against the sandbox in another process with a rate limit (limit
100 req/s, burst 10, 20 ms latency; 3,000 refunds and a short run of 1,000, where the first
wave weighs more) or only latency (200 ms). The sandbox restarts for every client, so buckets
and ledgers are fresh. Ratios are against the naive loop of the same run.

    python -m benchmarks.run pacing
    PREO_BENCH_PACING_COUNT=300 python -m benchmarks.pacing     # a small smoke run

With 3,000 refunds the whole table takes several minutes: refund_many with fixed concurrency
against the rate limit pauses every worker on each 429 (a simulation puts it near 12 req/s).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import httpx

from benchmarks._common import table
from preo_client import AsyncPreoClient, Backoff
from preo_client.testing import DEMO_API_KEY

CONCURRENCY = 64
DEFAULT_COUNT = 3000
COUNT_ENV = "PREO_BENCH_PACING_COUNT"
START_TIMEOUT = 20.0  # seconds for the sandbox to print its address
BODY = b'{"reason": "sold_out", "scope": "purchase_full"}'
HEADERS = {"Authorization": f"Bearer {DEMO_API_KEY}", "Content-Type": "application/json"}
NAIVE = "naive httpx loop, retries 429"


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    latency: float
    rate_limit: float | None = None
    burst: int | None = None
    items: int | None = None  # a run of this many refunds (at most the count), else the count

    def count(self, count: int) -> int:
        """The refunds this scenario sends in a run of ``count``."""
        return min(self.items, count) if self.items is not None else count

    def label(self, count: int) -> str:
        """The scenario's name, with its number of refunds when it differs from the run's."""
        mine = self.count(count)
        return self.name if mine == count else f"{self.name} ({mine})"

    def bound(self, concurrency: int = CONCURRENCY) -> float:
        """The best achievable rate: the limit, or concurrency / latency."""
        return self.rate_limit if self.rate_limit is not None else concurrency / self.latency

    def server_flags(self) -> list[str]:
        flags = ["--latency", str(self.latency)]
        if self.rate_limit is not None:
            flags += ["--rate-limit", str(self.rate_limit)]
        if self.burst is not None:
            flags += ["--burst", str(self.burst)]
        return flags


SCENARIOS = (
    Scenario("rate-limited", latency=0.02, rate_limit=100, burst=10),
    Scenario("rate-limited", latency=0.02, rate_limit=100, burst=10, items=1000),
    Scenario("latency-bound", latency=0.2),
)


class SandboxUnavailable(RuntimeError):
    """The sandbox server could not be started with the flags this benchmark needs."""


class NotAvailable(Exception):
    """This client cannot run on this branch (e.g. ``pacing=`` not in refund_many yet)."""


# -- pure parts: recording, statistics, the table --------------------------------------------


class Recorder:
    """httpx event hooks: counts answers and 429s, and times each item (by idempotency key)
    from its first attempt to its success."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.requests = 0
        self.throttled = 0
        self.first: dict[str, float] = {}
        self.done: dict[str, float] = {}

    def on_request(self, request: httpx.Request) -> None:
        key = request.headers.get("idempotency-key", "")
        self.first.setdefault(key, self.clock())

    def on_response(self, response: httpx.Response) -> None:
        self.requests += 1
        self.throttled += response.status_code == 429
        if response.is_success:
            self.done[response.request.headers.get("idempotency-key", "")] = self.clock()

    async def async_on_request(self, request: httpx.Request) -> None:
        self.on_request(request)

    async def async_on_response(self, response: httpx.Response) -> None:
        self.on_response(response)

    @property
    def hooks(self) -> dict[str, list[Callable[..., Awaitable[None]]]]:
        return {"request": [self.async_on_request], "response": [self.async_on_response]}

    def item_times(self) -> list[float]:
        return [end - self.first[key] for key, end in self.done.items() if key in self.first]


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0 < q <= 100) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without floats drifting
    return ordered[int(rank) - 1]


@dataclasses.dataclass(frozen=True)
class Result:
    items: int
    elapsed: float
    requests: int
    throttled: int
    item_times: tuple[float, ...]

    @property
    def rate(self) -> float:
        return self.items / self.elapsed if self.elapsed > 0 else float("nan")

    @property
    def throttled_share(self) -> float:
        return self.throttled / self.requests if self.requests else 0.0


def rows_for(scenario: Scenario, results: dict[str, Result | None],
             count: int = DEFAULT_COUNT) -> list[list[str]]:  # fmt: skip
    """Table rows for one scenario: None results print as n/a; ratios against the naive loop."""
    bound = scenario.bound()
    naive = results.get(NAIVE)
    label = scenario.label(count)
    rows = []
    for name, result in results.items():
        if result is None:
            rows.append([label, name] + ["n/a"] * 6)
            continue
        vs_naive = f"{result.rate / naive.rate:.2f}x" if naive is not None else "n/a"
        rows.append([
            label, name, f"{result.rate:.1f}", f"{result.rate / bound:.2f}",
            f"{result.throttled_share:.1%}", f"{percentile(result.item_times, 50):.3f}",
            f"{percentile(result.item_times, 99):.3f}", vs_naive,
        ])  # fmt: skip
    return rows


HEADER = ["scenario", "client", "req/s", "vs bound", "429 share", "p50 s/item", "p99 s/item",
          "vs naive"]  # fmt: skip


def render(count: int, rows: Sequence[Sequence[str]]) -> str:
    title = (f"Pacing over loopback HTTP ({count} refunds unless the scenario says, concurrency "
             f"{CONCURRENCY}; bound = rate limit, or concurrency / latency)")  # fmt: skip
    return table(title, HEADER, rows)


SERVING = re.compile(r"serving on (http://\S+)")


def parse_address(line: str) -> str | None:
    match = SERVING.search(line)
    return match.group(1).rstrip("/") if match else None


def count_from(argv: Sequence[str], environ: dict[str, str]) -> int:
    raw = argv[0] if argv else environ.get(COUNT_ENV, str(DEFAULT_COUNT))
    count = int(raw)
    if count <= 0:
        raise ValueError(f"the number of refunds must be > 0, got {raw!r}")
    return count


def retry_after(value: str | None, default: float = 1.0) -> float:
    """Seconds from a ``Retry-After`` header (delta-seconds; anything else: ``default``)."""
    try:
        seconds = float(value) if value is not None else default
    except ValueError:
        return default
    return seconds if 0 <= seconds < 3600 else default


# -- the sandbox process ---------------------------------------------------------------------

SERVE = [sys.executable, "-m", "preo_client.testing", "serve"]


def _serve_options() -> str:
    done = subprocess.run([*SERVE, "--help"], capture_output=True, text=True, timeout=60)
    return done.stdout


@dataclasses.dataclass
class Sandbox:
    process: subprocess.Popen[str]
    url: str
    drain: threading.Thread


def start_sandbox(scenario: Scenario) -> Sandbox:
    """Start the sandbox for ``scenario`` in another process, ready to serve."""
    options = _serve_options()
    missing = [f for f in ("--quiet", "--rate-limit", "--burst", "--latency") if f not in options]
    if missing:
        raise SandboxUnavailable(
            f"`python -m preo_client.testing serve` has no {', '.join(missing)} option yet; "
            "this benchmark needs the sandbox's rate-limit and latency flags"
        )
    extra = ["--auto-purchases"] if "--auto-purchases" in options else []
    command = [*SERVE, "--port", "0", "--quiet", *scenario.server_flags(), *extra]
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: a chatty server can't block
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        first: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert process.stdout is not None
            first.append(process.stdout.readline())
            ready.set()
            for _ in process.stdout:  # keep draining, so the pipe never fills
                pass

        drain = threading.Thread(target=read, daemon=True)
        drain.start()
        ready.wait(START_TIMEOUT)
        url = parse_address(first[0]) if first else None
        sandbox = Sandbox(process, url or "", drain)
        if url is None:
            stop_sandbox(sandbox)
            log.seek(0)
            stderr = log.read().strip()[-500:]
            raise SandboxUnavailable(
                f"the sandbox did not start ({' '.join(command[1:])}): expected 'serving on "
                f"http://HOST:PORT' as its first line within {START_TIMEOUT:.0f} s, got "
                f"{(first[0] if first else '').strip()!r}; stderr: {stderr!r}"
            )
    return sandbox


def stop_sandbox(sandbox: Sandbox) -> None:
    """Stop the sandbox (terminate, then kill if it lingers) and close its pipe."""
    process = sandbox.process
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    sandbox.drain.join(10)  # the pipe is at its end once the process is gone
    if process.stdout is not None:
        process.stdout.close()


# -- the three clients -----------------------------------------------------------------------


def _ids(count: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"pur_{run}_{i}" for i in range(count)]  # fresh purchases: nothing refunded yet


async def naive_loop(url: str, ids: list[str], recorder: Recorder) -> int:
    """What a partner writes first: a semaphore, gather, and a retry after Retry-After."""
    limit = asyncio.Semaphore(CONCURRENCY)
    ok = 0
    async with httpx.AsyncClient(
        base_url=url, headers=HEADERS, timeout=60, event_hooks=recorder.hooks
    ) as client:

        async def one(pid: str) -> None:
            nonlocal ok
            key = str(uuid.uuid4())
            async with limit:
                while True:
                    r = await client.post(
                        f"/v1/purchases/{pid}/refund", content=BODY,
                        headers={"Idempotency-Key": key},
                    )  # fmt: skip
                    if r.status_code != 429:
                        break
                    await asyncio.sleep(retry_after(r.headers.get("retry-after")))
                ok += r.status_code == 201

        await asyncio.gather(*(one(p) for p in ids))
    return ok


async def _refund_many(url: str, ids: list[str], recorder: Recorder, **options: object) -> int:
    async with httpx.AsyncClient(timeout=60, event_hooks=recorder.hooks) as http:
        client = AsyncPreoClient(api_key=DEMO_API_KEY, base_url=url, backoff=Backoff(0, 0),
                                 timeout=60, http_client=http, max_retries=1000)  # fmt: skip
        try:
            run = client.purchases.refund_many(
                ids,
                reason="sold_out",
                concurrency=CONCURRENCY,
                **options,
            )
        except TypeError as exc:  # the keyword is not there yet on this branch
            raise NotAvailable(str(exc)) from exc
        summary = await run.run()
    return summary.succeeded


async def refund_many_fixed(url: str, ids: list[str], recorder: Recorder) -> int:
    return await _refund_many(url, ids, recorder, pacing="fixed")  # no max_rate: no pacing


async def refund_many_adaptive(url: str, ids: list[str], recorder: Recorder) -> int:
    return await _refund_many(url, ids, recorder, pacing="adaptive")


CLIENTS: dict[str, Callable[[str, list[str], Recorder], Awaitable[int]]] = {
    NAIVE: naive_loop,
    "refund_many (fixed concurrency)": refund_many_fixed,
    'refund_many, pacing="adaptive"': refund_many_adaptive,
}


def measure(scenario: Scenario, client: Callable[[str, list[str], Recorder], Awaitable[int]],
            count: int) -> Result | None:  # fmt: skip
    """One client against a fresh sandbox; None when the client is not available."""
    sandbox = start_sandbox(scenario)
    try:
        recorder = Recorder()
        ids = _ids(count)
        start = time.perf_counter()
        try:
            ok = asyncio.run(client(sandbox.url, ids, recorder))
        except NotAvailable:
            return None
        elapsed = time.perf_counter() - start
    finally:
        stop_sandbox(sandbox)
    if ok != count:
        raise RuntimeError(f"{client.__name__}: only {ok}/{count} refunds succeeded")
    return Result(count, elapsed, recorder.requests, recorder.throttled,
                  tuple(recorder.item_times()))  # fmt: skip


def run(count: int | None = None) -> str:
    count = count if count is not None else count_from([], dict(os.environ))
    rows: list[list[str]] = []
    for scenario in SCENARIOS:
        items = scenario.count(count)
        results = {name: measure(scenario, client, items) for name, client in CLIENTS.items()}
        rows += rows_for(scenario, results, count)
    return render(count, rows)


if __name__ == "__main__":
    try:
        print(run(count_from(sys.argv[1:], dict(os.environ))))
    except SandboxUnavailable as exc:
        raise SystemExit(f"benchmarks.pacing: {exc}") from None
