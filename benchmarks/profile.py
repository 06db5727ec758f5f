"""Where a refund call's time goes: cProfile over 10,000 calls of ``PreoClient`` and of the
raw-httpx baseline (same JSON, headers and key, one ``MockTransport``), own time grouped by
area, and the call's stages timed one by one.

    python -m benchmarks.run profile

cProfile charges its own overhead to every Python function call, so its microseconds are
about twice the real ones: read the shares and the difference between the two columns, not
the absolute numbers. The stage table times each stage alone (warm caches), so its sum is
below a whole call's time.
"""

from __future__ import annotations

import cProfile
import pstats
import timeit
import uuid
from decimal import Decimal

import httpx

from benchmarks._common import API_KEY, canned, table
from benchmarks.overhead import PAYLOAD, SAME_HEADERS, URL
from preo_client import PreoClient
from preo_client._call import CallState, already_read, finish

CALLS = 10_000

# (area, what a function's file path contains), first match wins
AREAS = (
    ("preo: checks and policy", ("preo_client/_policy", "preo_client/_amounts")),
    ("preo: generated model", ("preo_client/_generated",)),
    ("preo: request (key, URL, body)", ("preo_client/_urls", "preo_client/_idempotency")),
    ("preo: response parse", ("preo_client/_models",)),
    ("preo: call and retry loop", ("preo_client/",)),
    ("httpx", ("httpx/",)),
    ("json", ("json/",)),
    ("stdlib other (cookies, email, urllib, uuid)", ("python3", "<frozen")),
)
BUILTINS = "builtins (C: isinstance, str, dict, re, Decimal)"


def _area(path: str) -> str:
    if path == "~":
        return BUILTINS
    for area, parts in AREAS:
        if any(part in path for part in parts):
            return area
    return "other"


def _profile(fn: object) -> dict[str, float]:
    """Own time per call (us) by area, over CALLS calls of ``fn`` (after a warm-up)."""

    def loop(count: int) -> None:
        for _ in range(count):
            fn()  # type: ignore[operator]

    loop(500)
    profiler = cProfile.Profile()
    profiler.enable()
    loop(CALLS)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    areas: dict[str, float] = {}
    for (path, _line, _name), (_cc, _nc, own, _cum, _callers) in stats.items():
        if path.endswith("benchmarks/profile.py"):
            continue
        area = _area(path)
        areas[area] = areas.get(area, 0.0) + own / CALLS * 1e6
    return areas


def _us(fn: object, number: int = 3000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6  # type: ignore[arg-type]


def run() -> str:
    transport = httpx.MockTransport(canned)
    sdk = PreoClient(api_key=API_KEY, http_client=httpx.Client(transport=transport))
    raw = httpx.Client(transport=transport, headers=SAME_HEADERS)

    def sdk_call() -> object:
        return sdk.purchases.refund("pur_1", reason="compensation", amount=Decimal("12.50"))

    def raw_call() -> object:
        return raw.post(URL, json=PAYLOAD, headers={"Idempotency-Key": str(uuid.uuid4())}).json()

    ours, theirs = _profile(sdk_call), _profile(raw_call)
    rows = []
    for area in sorted(set(ours) | set(theirs), key=lambda a: -ours.get(a, 0.0)):
        mine, base = ours.get(area, 0.0), theirs.get(area, 0.0)
        rows.append([area, f"{mine:.1f}", f"{base:.1f}", f"{mine - base:+.1f}"])
    total_ours, total_raw = sum(ours.values()), sum(theirs.values())
    rows.append(
        ["total", f"{total_ours:.1f}", f"{total_raw:.1f}", f"{total_ours - total_raw:+.1f}"]
    )
    title = f"Own time by area under cProfile ({CALLS:,} calls each; us per call, inflated)"
    first = table(title, ["area", "PreoClient", "raw httpx", "difference"], rows)

    def prepare() -> object:
        return sdk._prepare(
            "pur_1",
            reason="compensation",
            scope=None,
            amount=Decimal("12.50"),
            comment=None,
            pickup_point_id=None,
            idempotency_key=None,
        )

    call = prepare()
    request = raw.build_request("POST", URL, json=PAYLOAD, headers={"Idempotency-Key": "k"})
    response = sdk._http.send(call.request, stream=True, follow_redirects=False)
    content = already_read(response)
    assert content is not None  # nosec B101  # a MockTransport answer arrives read
    stages = [
        ("whole call", sdk_call, raw_call),
        ("build: checks, key, body, URL, headers", prepare, lambda: raw.build_request(
            "POST", URL, json=PAYLOAD, headers={"Idempotency-Key": str(uuid.uuid4())})),
        ("send and read (the same prepared request)",
         lambda: sdk._http.send(call.request, stream=True, follow_redirects=False),
         lambda: raw.send(request)),
        ("read the answer: typed Refund vs .json()",
         lambda: finish(response, content, call), response.json),
        ("retry loop around one attempt", lambda: sdk._retry_loop(call, CallState()), None),
        ("one attempt alone", lambda: sdk._attempt(call, 1), None),
    ]  # fmt: skip
    stage_rows = []
    for name, mine_fn, base_fn in stages:
        mine = _us(mine_fn)
        base = _us(base_fn) if base_fn is not None else None
        stage_rows.append(
            [name, f"{mine:.1f}", "" if base is None else f"{base:.1f}",
             "" if base is None else f"{mine - base:+.1f}"]
        )  # fmt: skip
    second = table(
        "Stages timed alone (us per call, best of 5)",
        ["stage", "PreoClient", "raw httpx", "difference"],
        stage_rows,
    )
    return f"{first}\n\n{second}"


if __name__ == "__main__":
    print(run())
