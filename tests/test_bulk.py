"""refund_many: lazy, bounded, shared pause, journal and resume, summary; sync and async."""

from __future__ import annotations

import asyncio
import collections
import json
import threading
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from preo_client import (
    Backoff,
    BadRequestError,
    NotFoundError,
    RefundItem,
    RefundOutcome,
    RefundValidationError,
    idempotency_key_for,
)
from preo_client import _client as client_module
from preo_client._bulk import InvalidItem
from preo_client.testing import FakePreo, Fault

NO_WAIT = Backoff(base=0, cap=0)


def make_fake(count: int, **kw: Any) -> FakePreo:
    fake = FakePreo(**kw)
    for i in range(count):
        fake.add_purchase(f"p{i}", price="10.00", deposit="1.00")
    return fake


def run_sync(fake: FakePreo, items: Any, **kw: Any) -> tuple[list[RefundOutcome], Any]:
    with fake.client(backoff=NO_WAIT) as client:
        run = client.purchases.refund_many(items, **kw)
        outcomes = list(run)
    return outcomes, run.summary


def run_async(fake: FakePreo, items: Any, **kw: Any) -> tuple[list[RefundOutcome], Any]:
    async def go() -> tuple[list[RefundOutcome], Any]:
        async with fake.async_client(backoff=NO_WAIT) as client:
            run = client.purchases.refund_many(items, **kw)
            return [o async for o in run], run.summary

    return asyncio.run(go())


RUNNERS = {"sync": run_sync, "async": run_async}


@pytest.fixture(params=["sync", "async"])
def runner(request: pytest.FixtureRequest) -> Any:
    return RUNNERS[request.param]


def test_every_item_refunded_once_with_a_summary(runner: Any) -> None:
    fake = make_fake(50)
    items: list[Any] = [f"p{i}" for i in range(45)]
    items += [RefundItem(f"p{i}", reason="compensation", amount="2.50") for i in range(45, 50)]
    outcomes, summary = runner(fake, items, reason="sold_out", concurrency=8)
    assert len(outcomes) == 50
    assert all(o.ok and o.attempts == 1 for o in outcomes)
    assert summary.succeeded == 50
    assert summary.failures == 0
    assert summary.total_amount == Decimal("11.00") * 45 + Decimal("2.50") * 5
    assert collections.Counter(r.purchase_id for r in fake.refunds) == {
        f"p{i}": 1 for i in range(50)
    }
    assert {o.idempotency_key for o in outcomes} == {r.idempotency_key for r in fake.refunds}


def test_invalid_items_are_reported_failures_not_crashes(runner: Any) -> None:
    fake = make_fake(3)
    items = [
        "p0",
        "bad id",
        RefundItem("p1", reason="sold-out"),
        RefundItem("p2", reason="compensation"),  # custom scope without amount
        InvalidItem("line 7", "not valid JSON"),
        42,
        "missing",
    ]
    outcomes, summary = runner(fake, items, reason="sold_out", concurrency=4)
    by_id = {o.item.purchase_id: o for o in outcomes}
    assert by_id["p0"].ok
    for bad, field in [("bad id", "purchase_id"), ("p1", "reason"), ("p2", "amount"),
                       ("line 7", "item"), ("42", "items")]:  # fmt: skip
        error = by_id[bad].error
        assert isinstance(error, RefundValidationError), bad
        assert error.field == field
        assert by_id[bad].attempts == 0
    assert isinstance(by_id["missing"].error, NotFoundError)
    assert summary.succeeded == 1
    assert summary.failed == {"RefundValidationError": 5, "NotFoundError": 1}
    assert len(fake.requests) == 2  # invalid items never reach the wire


def test_reason_is_required_somewhere(runner: Any) -> None:
    outcomes, _ = runner(make_fake(1), ["p0"])
    assert isinstance(outcomes[0].error, RefundValidationError)
    assert outcomes[0].error.field == "reason"


def test_items_are_consumed_lazily_with_bounded_concurrency() -> None:
    fake = make_fake(200)
    pulled = 0
    in_flight = 0
    peak = 0
    lock = threading.Lock()
    handle = fake.handle

    def slow_handle(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        try:
            threading.Event().wait(0.002)
            return handle(request)
        finally:
            with lock:
                in_flight -= 1

    def items() -> Iterator[str]:
        nonlocal pulled
        for i in range(200):
            pulled += 1
            yield f"p{i}"

    client = FakePreo.client(
        fake, http_client=httpx.Client(transport=httpx.MockTransport(slow_handle))
    )
    run = client.purchases.refund_many(items(), reason="sold_out", concurrency=5)
    iterator = iter(run)
    first = next(iterator)
    assert first.ok
    assert pulled <= 5 + 1  # only what the workers hold, not the whole input
    rest = list(iterator)
    assert len(rest) == 199
    assert peak <= 5


async def test_async_iterable_input_and_async_on_result() -> None:
    fake = make_fake(30)
    seen: list[str] = []

    async def items() -> AsyncIterator[RefundItem]:
        for i in range(30):
            await asyncio.sleep(0)
            yield RefundItem(f"p{i}", reference=f"batch-7/{i}")

    async def on_result(outcome: RefundOutcome) -> None:
        seen.append(outcome.item.purchase_id)

    async with fake.async_client(backoff=NO_WAIT) as client:
        summary = await client.purchases.refund_many(
            items(), reason="event_cancelled", concurrency=4, on_result=on_result
        ).run()
    assert summary.succeeded == 30
    assert sorted(seen) == sorted(f"p{i}" for i in range(30))
    assert {r.idempotency_key for r in fake.refunds} == {
        idempotency_key_for(f"p{i}", f"batch-7/{i}") for i in range(30)
    }


def test_a_429_pauses_every_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(client_module, "_async_sleep", record)
    fake = make_fake(40)
    fake.inject(Fault.http_status(429, retry_after="5"))
    _, summary = run_async(fake, [f"p{i}" for i in range(40)], reason="sold_out",
                                  concurrency=8)  # fmt: skip
    assert summary.succeeded == 40
    # the worker that got the 429 and every worker that started an attempt after it waited
    # for the shared pause, not only the one that was refused
    assert len([w for w in waits + fake.slept if w > 4]) >= 2  # fake.slept: virtual waits
    assert len(fake.refunds) == 40


def test_journal_resume_skips_done_and_resends_in_flight_with_the_same_key(
    tmp_path: Path, runner: Any
) -> None:
    fake = make_fake(20)
    journal = tmp_path / "run.journal"
    items = [f"p{i}" for i in range(20)]
    # The first run "dies": five read timeouts after the refund was recorded leave five items
    # whose outcome is unknown to the client.
    fake.inject(*[Fault.read_timeout()] * 5)
    first, summary1 = runner(fake, items, reason="sold_out", concurrency=4, journal=journal)
    assert summary1.succeeded == 15
    assert summary1.failed == {"APITimeoutOutcomeUnknownError": 5}
    unknown_keys = {o.idempotency_key for o in first if not o.ok}
    assert len(fake.refunds) == 20  # the server did make all 20

    second, summary2 = runner(fake, items, reason="sold_out", concurrency=4, journal=journal)
    assert summary2.skipped == 15
    assert summary2.succeeded == 5
    resent = {o.idempotency_key for o in second if not o.skipped}
    assert resent == unknown_keys  # the recorded keys, so the server replays
    assert all(o.refund is not None and o.refund.replayed for o in second if not o.skipped)
    assert len(fake.refunds) == 20
    assert collections.Counter(r.purchase_id for r in fake.refunds) == dict.fromkeys(items, 1)

    events = [json.loads(line)["event"] for line in journal.read_text().splitlines()]
    assert events.count("start") == 25
    assert events.count("done") == 20
    assert events.count("failed") == 5


def test_a_truncated_journal_line_is_ignored(tmp_path: Path) -> None:
    fake = make_fake(2)
    journal = tmp_path / "j"
    run_sync(fake, ["p0"], reason="sold_out", journal=journal)
    with journal.open("a") as f:
        f.write('{"event": "start", "purchase_id": "p1", "idem')  # killed mid-write
    _, summary = run_sync(fake, ["p0", "p1"], reason="sold_out", journal=journal)
    assert (summary.skipped, summary.succeeded) == (1, 1)


def test_over_refund_in_bulk_is_a_bad_request(runner: Any) -> None:
    fake = make_fake(1)
    items = [
        RefundItem("p0", reason="compensation", amount="8.00", reference=f"r{i}") for i in range(2)
    ]
    outcomes, summary = runner(fake, items, concurrency=1)
    assert summary.succeeded == 1
    assert summary.failed == {"BadRequestError": 1}
    (failed,) = [o for o in outcomes if not o.ok]
    assert isinstance(failed.error, BadRequestError)
    assert "amount" in failed.error.field_errors
