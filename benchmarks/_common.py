"""Shared by the benchmarks: timing rounds, a canned 201, and table printing."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence

import httpx

BODY = json.dumps(
    {
        "id": "rr_bench",
        "edition_id": "ed_bench",
        "amount": 12.5,
        "requested_by": {"id": "usr_1"},
        "pickup_point": {"id": "pp_1"},
        "created": "2026-07-04T18:22:11Z",
        "modified": "2026-07-04T18:22:11Z",
        "can_approve": "true",
        "can_reject": "true",
        "organization": None,
        "scope": "purchase_custom",
        "status": "requested",
        "comment": "",
        "service_response": None,
        "refund_date": None,
    }
).encode()
HEADERS = {"content-type": "application/json", "x-request-id": "req_bench"}
API_KEY = "sk_bench_0123456789"


def canned(request: httpx.Request) -> httpx.Response:
    return httpx.Response(201, headers=HEADERS, content=BODY)


def rounds(fn: Callable[[], float], count: int) -> list[float]:
    """Run ``fn`` (which returns one measurement) ``count`` times."""
    return [fn() for _ in range(count)]


def summary(values: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [title, "-" * len(title)]
    for n, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                               enumerate(zip(row, widths, strict=True))))  # fmt: skip
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def now() -> float:
    return time.perf_counter()
