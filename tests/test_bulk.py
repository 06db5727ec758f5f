"""refund_many: lazy, bounded, a task group that never hangs, journal and resume, keys, summary."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from preo_client import (
    AuthenticationError,
    Backoff,
    BadRequestError,
    NotFoundError,
    RateLimitError,
    RefundItem,
    RefundOutcome,
    RefundValidationError,
)
from preo_client import _client as client_module
from preo_client._bulk import (
    TRANSACTION_HINT,
    AsyncBulkRun,
    BulkRun,
    CoveringRefundUnknownError,
    InvalidItem,
    ItemFailedError,
    JournalError,
    bulk_idempotency_key,
    canonical_request,
)
from preo_client.testing import FakePreo, Fault

NO_WAIT = Backoff(base=0, cap=0)
WATCHDOG = 30.0  # seconds: a hang fails the test instead of blocking CI


def make_fake(count: int, **kw: Any) -> FakePreo:
    fake = FakePreo(**kw)
    for i in range(count):
        fake.add_purchase(f"p{i}", price="10.00", deposit="1.00")
    return fake


async def _no_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


def _run_options(kw: dict[str, Any]) -> dict[str, Any]:
    return {"reason": None, "scope": None, "concurrency": 16, "journal": None, "on_result": None,
            **kw}  # fmt: skip


def run_sync(
    fake: FakePreo, items: Any, client_options: dict[str, Any] | None = None, **kw: Any
) -> tuple[list[RefundOutcome], Any]:
    result: list[Any] = []

    def go() -> None:
        try:
            with fake.client(backoff=NO_WAIT, **(client_options or {})) as client:
                client._sleep = lambda seconds: None
                run = BulkRun(client, items, **_run_options(kw))
                result.append((list(run), run.summary))
        except BaseException as exc:  # re-raised in the test's thread
            result.append(exc)

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(WATCHDOG)
    assert not worker.is_alive(), "the sync run hung"
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]  # type: ignore[no-any-return]


def run_async(
    fake: FakePreo, items: Any, client_options: dict[str, Any] | None = None, **kw: Any
) -> tuple[list[RefundOutcome], Any]:
    async def go() -> tuple[list[RefundOutcome], Any]:
        async with fake.async_client(backoff=NO_WAIT, **(client_options or {})) as client:
            client._sleep = _no_sleep
            run = AsyncBulkRun(client, items, **_run_options(kw))
            return [o async for o in run], run.summary

    return asyncio.run(asyncio.wait_for(go(), WATCHDOG))


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
    assert sorted(o.position for o in outcomes) == list(range(50))
    assert all(o.ok and o.attempts == 1 for o in outcomes)
    assert summary.succeeded == 50
    assert summary.failures == 0
    assert summary.total_amount == Decimal("11.00") * 45 + Decimal("2.50") * 5
    assert collections.Counter(r.purchase_id for r in fake.refunds) == {
        f"p{i}": 1 for i in range(50)
    }
    assert {o.idempotency_key for o in outcomes} == {r.idempotency_key for r in fake.refunds}


def test_the_public_refund_many_still_works() -> None:
    fake = make_fake(5)
    with fake.client(backoff=NO_WAIT) as client:
        summary = client.purchases.refund_many([f"p{i}" for i in range(5)], reason="sold_out").run()
    assert summary.succeeded == 5


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
        RefundItem("p0", reference=7),  # type: ignore[arg-type]
        "\ud83d",
        "x" * 70_000,
    ]
    outcomes, summary = runner(fake, items, reason="sold_out", concurrency=4)
    assert len(outcomes) == len(items)
    by_position = {o.position: o for o in outcomes}
    assert by_position[0].ok
    for position, field in [(1, "purchase_id"), (2, "reason"), (3, "amount"), (4, "item"),
                            (5, "items"), (7, "reference"), (8, "purchase_id")]:  # fmt: skip
        error = by_position[position].error
        assert isinstance(error, RefundValidationError), position
        assert error.field == field
        assert by_position[position].attempts == 0
    assert isinstance(by_position[6].error, NotFoundError)
    assert not by_position[9].ok  # a 70,000-character id: some failure, never a hang
    assert summary.succeeded == 1
    assert summary.total == len(items)


class _Hostile:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_hostile_objects_are_item_failures(runner: Any) -> None:
    outcomes, summary = runner(make_fake(1), [_Hostile(), "p0"], reason="sold_out")
    assert len(outcomes) == 2
    (bad,) = [o for o in outcomes if not o.ok]
    assert bad.item.purchase_id == "<_Hostile>"
    assert summary.succeeded == 1


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
    seen: list[str] = []

    async def items() -> AsyncIterator[RefundItem]:
        for i in range(30):
            await asyncio.sleep(0)
            yield RefundItem(f"p{i}", reference=f"batch-7/{i}")

    async def on_result(outcome: RefundOutcome) -> None:
        seen.append(outcome.item.purchase_id)

    keys = []
    for _ in range(2):  # a reference makes the keys reproducible: no journal, fresh sandbox
        fake = make_fake(30)
        async with fake.async_client(backoff=NO_WAIT) as client:
            run = client.purchases.refund_many(
                items(), reason="event_cancelled", concurrency=4, on_result=on_result
            )
            summary = await asyncio.wait_for(run.run(), WATCHDOG)
        assert summary.succeeded == 30
        keys.append({r.idempotency_key for r in fake.refunds})
    assert sorted(seen) == sorted([f"p{i}" for i in range(30)] * 2)
    expected = {
        bulk_idempotency_key(
            "any run",
            0,
            canonical_request(RefundItem(f"p{i}", "event_cancelled", reference=f"batch-7/{i}")),
            f"batch-7/{i}",
        )
        for i in range(30)
    }
    assert keys[0] == keys[1] == expected


def test_batch_id_makes_keys_reproducible_without_a_journal(runner: Any) -> None:
    items = [f"p{i}" for i in range(10)] + ["p0"]  # p0 twice: two items, two keys
    keys = []
    for batch in ("cancel-7", "cancel-7", "cancel-8"):
        outcomes, _ = runner(make_fake(10), items, reason="deposit_reclaim", batch_id=batch)
        keys.append({o.position: o.idempotency_key for o in outcomes})
    assert keys[0] == keys[1]
    assert set(keys[0].values()).isdisjoint(keys[2].values())
    assert len(set(keys[0].values())) == len(items)


@pytest.mark.parametrize("status", [429, 503])
def test_without_adaptive_pacing_a_refusal_pauses_every_worker(
    monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(client_module, "_async_sleep", record)
    fake = make_fake(40)
    fake.inject(Fault.http_status(status, retry_after="5"))

    async def go() -> Any:
        async with fake.async_client(backoff=NO_WAIT) as client:
            return await client.purchases.refund_many(
                [f"p{i}" for i in range(40)], reason="sold_out", concurrency=8, pacing="fixed"
            ).run()

    summary = asyncio.run(asyncio.wait_for(go(), WATCHDOG))
    assert summary.succeeded == 40
    # the worker that got the 429 and every worker that started an attempt after it waited
    # for the shared pause, not only the one that was refused
    assert len([w for w in waits + fake.slept if w > 4]) >= 2  # fake.slept: virtual waits
    assert len(fake.refunds) == 40


def test_under_adaptive_pacing_a_short_429_holds_back_its_item_and_cuts_the_rate() -> None:
    fake = make_fake(40)
    fake.inject(Fault.http_status(429, retry_after="5"))

    async def go() -> Any:
        async with fake.async_client(backoff=NO_WAIT) as client:
            run = client.purchases.refund_many(
                [f"p{i}" for i in range(40)], reason="sold_out", concurrency=8
            )
            summary = await run.run()
            return summary, run.pacer

    summary, pacer = asyncio.run(asyncio.wait_for(go(), WATCHDOG))
    assert summary.succeeded == 40
    assert fake.slept.count(5.0) == 1  # only the refused item waited out the Retry-After
    assert pacer.rate is not None  # and the shared rate is now enforced
    assert pacer.throttled == 1
    assert len(fake.refunds) == 40


@pytest.mark.parametrize("status", [429, 503])
def test_a_503_or_a_long_429_pauses_every_worker_under_adaptive_pacing(status: int) -> None:
    fake = make_fake(40)
    wait = "5" if status == 503 else "90"
    fake.inject(Fault.http_status(status, retry_after=wait))

    async def go() -> Any:
        async with fake.async_client(backoff=NO_WAIT) as client:
            return await client.purchases.refund_many(
                [f"p{i}" for i in range(40)], reason="sold_out", concurrency=8
            ).run()

    summary = asyncio.run(asyncio.wait_for(go(), WATCHDOG))
    assert summary.succeeded == 40
    assert len([w for w in fake.slept if w > 4]) >= 2  # more than the refused item waited
    assert len(fake.refunds) == 40


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_long_retry_after_pauses_the_run_instead_of_hammering(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: a Retry-After above the single-call cap sent 5,000 requests in 1.8 s."""
    fake = make_fake(60)
    fake.inject(*[Fault.http_status(429, retry_after="120")] * 3)
    waits: list[float] = []
    items = [f"p{i}" for i in range(60)]
    with caplog.at_level(logging.WARNING, logger="preo_client"):
        if kind == "async":

            async def go() -> Any:
                async with fake.async_client(backoff=NO_WAIT) as client:

                    async def sleep(seconds: float) -> None:
                        waits.append(seconds)

                    client._sleep = sleep
                    run = AsyncBulkRun(client, items, reason="sold_out", scope=None,
                                       concurrency=8, journal=None, on_result=None)  # fmt: skip
                    return await run.run()

            summary = asyncio.run(asyncio.wait_for(go(), WATCHDOG))
        else:
            with fake.client(backoff=NO_WAIT) as client:
                client._sleep = waits.append
                summary = BulkRun(client, items, reason="sold_out", scope=None, concurrency=8,
                                  journal=None, on_result=None).run()  # fmt: skip
    assert summary.succeeded == 60
    assert len(fake.requests) == 60 + 3  # each refusal retried once, after the pause
    assert any(w >= 119 for w in waits)
    assert "pausing the whole bulk run" in caplog.text


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_retry_after_above_max_pause_stops_the_run(kind: str) -> None:
    fake = make_fake(300)
    fake.inject(*[Fault.http_status(429, retry_after="3600")] * 500)
    items = [f"p{i}" for i in range(300)]
    with pytest.raises(RateLimitError) as stopped:
        (run_sync if kind == "sync" else run_async)(fake, items, reason="sold_out", concurrency=8)
    assert stopped.value.retry_after == 3600
    assert len(fake.requests) <= 8 + 8  # a few, never a flood


def _rows(journal: Path) -> dict[int, tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(journal)) as db:
        return {p: (k, s) for p, k, s in db.execute("SELECT position, idempotency_key, state "
                                                     "FROM items")}  # fmt: skip


def test_journal_resume_skips_done_and_resends_in_flight_with_the_same_key(
    tmp_path: Path, runner: Any
) -> None:
    fake = make_fake(20)
    journal = tmp_path / "run.journal"
    items = [f"p{i}" for i in range(20)]
    # five read timeouts after the refund was recorded: five items whose outcome is unknown
    fake.inject(*[Fault.read_timeout()] * 5)
    first, summary1 = runner(fake, items, reason="sold_out", concurrency=4, journal=journal)
    assert summary1.succeeded == 15
    assert summary1.failed == {"APITimeoutOutcomeUnknownError": 5}
    unknown_keys = {o.idempotency_key for o in first if not o.ok}
    assert len(fake.refunds) == 20  # the server did make all 20
    assert collections.Counter(s for _, s in _rows(journal).values()) == {"done": 15, "failed": 5}

    second, summary2 = runner(fake, items, reason="sold_out", concurrency=4, journal=journal)
    assert summary2.skipped == 15
    assert (summary2.succeeded, summary2.replayed) == (0, 5)  # Idempotent-Replayed: true
    assert summary2.total_amount == sum(o.refund.amount for o in second if o.refund)
    resent = {o.idempotency_key for o in second if not o.skipped}
    assert resent == unknown_keys  # the recorded keys, so the server replays
    assert all(o.refund is not None and o.refund.replayed for o in second if not o.skipped)
    assert len(fake.refunds) == 20
    assert collections.Counter(r.purchase_id for r in fake.refunds) == dict.fromkeys(items, 1)
    assert {k for k, s in _rows(journal).values()} == {r.idempotency_key for r in fake.refunds}


def test_two_rows_for_one_purchase_are_two_items(tmp_path: Path, runner: Any) -> None:
    """Regression: a second row for the same purchase was 'skipped (done before)'."""
    fake = make_fake(1)
    items = [
        RefundItem("p0", reason="compensation", amount="5.00", reference="T-1"),
        RefundItem("p0", reason="overcharge", amount="3.00", reference="T-1"),
    ]
    journal = tmp_path / "j"
    _, summary = runner(fake, items, journal=journal)
    assert summary.succeeded == 2
    assert sorted(r.amount for r in fake.refunds) == [Decimal("3.00"), Decimal("5.00")]
    _, again = runner(fake, items, journal=journal)
    assert again.skipped == 2
    assert len(fake.refunds) == 2


def test_resuming_with_a_changed_row_is_refused_before_sending(tmp_path: Path) -> None:
    """Regression: a changed amount resent the recorded key with a new body: 422 forever."""
    fake = make_fake(3)
    journal = tmp_path / "j"
    items = [RefundItem(f"p{i}", reason="compensation", amount="5.00") for i in range(3)]
    fake.inject(Fault.read_timeout())
    run_sync(fake, items, journal=journal)
    sent = len(fake.requests)
    changed = [*items[:1], RefundItem("p1", reason="compensation", amount="4.00"), items[2]]
    with fake.client(backoff=NO_WAIT) as client, pytest.raises(JournalError) as refused:
        BulkRun(client, changed, reason=None, scope=None, concurrency=2, journal=journal,
                on_result=None)  # fmt: skip
    assert "item 2" in str(refused.value)
    assert "amount was '5.00', now '4.00'" in str(refused.value)
    assert len(fake.requests) == sent

    async def lazy() -> AsyncIterator[RefundItem]:  # a lazy input is checked item by item
        for item in changed:
            yield item

    async def go() -> list[RefundOutcome]:
        async with fake.async_client(backoff=NO_WAIT) as client:
            run = AsyncBulkRun(client, lazy(), reason=None, scope=None, concurrency=1,
                               journal=journal, on_result=None)  # fmt: skip
            return [o async for o in run]

    with pytest.raises(JournalError):
        asyncio.run(asyncio.wait_for(go(), WATCHDOG))


def test_a_journal_is_held_by_one_run(tmp_path: Path) -> None:
    """Regression: two runs on one journal at once refunded 292 of 300 purchases twice."""
    journal = tmp_path / "j"
    fake = make_fake(2)
    with fake.client(backoff=NO_WAIT) as client:
        first = BulkRun(client, ["p0"], reason="sold_out", scope=None, concurrency=1,
                        journal=journal, on_result=None)  # fmt: skip
        with pytest.raises(JournalError, match=r"in use by another run \(pid \d+\)"):
            BulkRun(client, ["p0"], reason="sold_out", scope=None, concurrency=1,
                    journal=journal, on_result=None)  # fmt: skip
        first.run()
        second = BulkRun(client, ["p0"], reason="sold_out", scope=None, concurrency=1,
                         journal=journal, on_result=None)  # fmt: skip
        assert second.run().skipped == 1  # the lock is released when a run ends
    assert len(fake.refunds) == 1


def test_a_run_dropped_without_iterating_releases_its_journal(tmp_path: Path) -> None:
    import gc

    journal = tmp_path / "j"
    with make_fake(1).client() as client:
        BulkRun(client, ["p0"], reason="sold_out", scope=None, concurrency=1, journal=journal,
                on_result=None)  # fmt: skip
        gc.collect()
        assert BulkRun(client, ["p0"], reason="sold_out", scope=None, concurrency=1,
                       journal=journal, on_result=None).run().succeeded == 1  # fmt: skip


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"event": "start", "purchase_id": "p1", "idem', "old JSON-lines format"),
        (b"\x00\x01garbage" * 50, "not a preo journal"),
    ],
)
def test_a_foreign_or_damaged_journal_is_refused(
    tmp_path: Path, content: bytes, message: str
) -> None:
    journal = tmp_path / "j"
    journal.write_bytes(content)
    with make_fake(1).client() as client, pytest.raises(JournalError, match=message):
        BulkRun(client, ["p0"], reason="sold_out", scope=None, concurrency=1, journal=journal,
                on_result=None)  # fmt: skip
    assert journal.read_bytes() == content  # never "repaired" or appended to


def test_a_failing_journal_stops_the_run_before_sending_unjournaled(tmp_path: Path) -> None:
    journal = tmp_path / "j"
    fake = make_fake(30)

    async def go() -> None:
        async with fake.async_client(backoff=NO_WAIT) as client:
            items = [f"p{i}" for i in range(30)]
            run = AsyncBulkRun(client, items, reason="sold_out", scope=None, concurrency=2,
                               journal=journal, on_result=None)  # fmt: skip
            db = run._core.journal._db  # type: ignore[union-attr]
            async for outcome in run:
                if outcome.position == 3:
                    db.execute("DROP TABLE items")  # the journal breaks mid-run

    with pytest.raises(JournalError, match="failed"):
        asyncio.run(asyncio.wait_for(go(), WATCHDOG))
    assert len(fake.requests) <= 4 + 2  # nothing sent once its key could not be committed


def test_a_journal_of_another_schema_or_batch_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE notes (x)")
        db.commit()
    journal = tmp_path / "j"
    with make_fake(1).client() as client:
        with pytest.raises(JournalError, match="not a preo journal"):
            BulkRun(client, [], reason="sold_out", scope=None, concurrency=1, journal=other,
                    on_result=None)  # fmt: skip
        BulkRun(client, [], reason="sold_out", scope=None, concurrency=1, journal=journal,
                on_result=None, batch_id="b1").run()  # fmt: skip
        with pytest.raises(JournalError, match="belongs to batch 'b1'"):
            BulkRun(client, [], reason="sold_out", scope=None, concurrency=1, journal=journal,
                    on_result=None, batch_id="b2")  # fmt: skip


def test_the_same_item_twice_with_a_reference_is_two_items(runner: Any) -> None:
    """Issue 16 S2: the second of two identical rows is a second item, with or without a
    reference: two keys, two refunds; a rerun sends the same two keys (both replayed)."""
    fake = make_fake(1)
    item = RefundItem("p0", reason="compensation", amount="2.00", reference="ticket-9")
    outcomes, summary = runner(fake, [item, item], concurrency=1)
    assert (summary.succeeded, summary.replayed) == (2, 0)
    assert summary.total_amount == Decimal("4.00")
    keys = {o.position: o.idempotency_key for o in outcomes}
    assert len(set(keys.values())) == 2
    assert len(fake.refunds) == 2
    again, summary = runner(fake, [item, item], concurrency=1)
    assert {o.position: o.idempotency_key for o in again} == keys
    assert (summary.succeeded, summary.replayed) == (0, 2)  # both answered as replays
    assert len(fake.refunds) == 2


def _transaction_fake() -> FakePreo:
    fake = FakePreo()
    fake.add_purchase("ticket", price="49.00", fees="2.50", transaction_id="tx1")
    fake.add_purchase("cup", price="3.00", deposit="2.00", transaction_id="tx1")
    fake.add_purchase("locker", price="10.00", deposit="20.00", transaction_id="tx2")
    return fake


def test_one_request_per_transaction_the_others_covered(tmp_path: Path, runner: Any) -> None:
    fake = _transaction_fake()
    items = [RefundItem("ticket", transaction_id="tx1"), RefundItem("cup", transaction_id="tx1"),
             RefundItem("locker", transaction_id="tx2")]  # fmt: skip
    journal = tmp_path / "j"
    outcomes, summary = runner(fake, items, reason="event_cancelled", journal=journal)
    assert all(o.ok for o in outcomes)
    assert (summary.succeeded, summary.covered, summary.failures) == (2, 1, 0)
    assert summary.total_amount == Decimal("56.50") + Decimal("30.00")
    (cup,) = [o for o in outcomes if o.item.purchase_id == "cup"]
    assert cup.covered_by == 0
    assert len(fake.requests) == 2
    _, again = runner(fake, items, reason="event_cancelled", journal=journal)
    assert again.skipped == 3
    assert len(fake.requests) == 2


def test_a_transaction_refund_of_unknown_outcome_is_never_sent_twice(
    tmp_path: Path, runner: Any
) -> None:
    fake = _transaction_fake()
    items = [RefundItem("ticket", reason="compensation", scope="transaction_custom",
                        amount="5.00", transaction_id="tx1"),
             RefundItem("cup", reason="compensation", scope="transaction_custom",
                        amount="5.00", transaction_id="tx1")]  # fmt: skip
    journal = tmp_path / "j"
    fake.inject(Fault.read_timeout())  # the leader's refund lands, its answer is lost
    outcomes, _ = runner(fake, items, journal=journal, concurrency=2)
    cup = next(o for o in outcomes if o.position == 1)
    assert isinstance(cup.error, CoveringRefundUnknownError)
    assert len(fake.refunds) == 1  # the follower did not send a second custom refund
    outcomes, summary = runner(fake, items, journal=journal, concurrency=2)
    assert (summary.replayed, summary.covered) == (1, 1)  # the leader's resend is replayed
    assert len(fake.refunds) == 1


def test_the_readme_flow_without_transaction_ids_is_explained(runner: Any) -> None:
    """Regression: event_cancelled on two purchases of one transaction ended in a bare 400."""
    outcomes, summary = runner(_transaction_fake(), ["ticket", "cup"], reason="event_cancelled",
                               concurrency=1)  # fmt: skip
    assert summary.succeeded == 1
    (failed,) = [o for o in outcomes if not o.ok]
    assert isinstance(failed.error, BadRequestError)
    assert failed.note == TRANSACTION_HINT


def _workers() -> list[asyncio.Task[Any]]:
    """The run's worker tasks still alive."""
    return [
        t for t in asyncio.all_tasks() if "_process" in getattr(t.get_coro(), "__qualname__", "")
    ]


# -- B1: no hangs, one outcome per item or a raise, on every path ---------------------------


def _patched_send(client: Any, bad: set[str], exc: BaseException) -> None:
    send = client._send

    def wrapper(call: Any, state: Any = None) -> Any:
        if any(f"/purchases/{p}/" in str(call.request.url) for p in bad):
            raise exc
        return send(call, state)

    async def async_wrapper(call: Any, state: Any = None) -> Any:
        if any(f"/purchases/{p}/" in str(call.request.url) for p in bad):
            raise exc
        return await send(call, state)

    client._send = async_wrapper if asyncio.iscoroutinefunction(send) else wrapper


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_non_preo_error_in_a_worker_is_that_items_failure(kind: str) -> None:
    """Regression: any non-PreoError killed an async worker without a done signal: a hang."""
    fake = make_fake(20)
    items = [f"p{i}" for i in range(20)]
    bad = {"p3", "p11"}
    if kind == "async":

        async def go() -> list[RefundOutcome]:
            async with fake.async_client(backoff=NO_WAIT) as client:
                _patched_send(client, bad, TypeError("boom"))
                return [o async for o in client.purchases.refund_many(items, reason="sold_out",
                                                                     concurrency=4)]  # fmt: skip

        outcomes = asyncio.run(asyncio.wait_for(go(), WATCHDOG))
    else:
        with fake.client(backoff=NO_WAIT) as client:
            _patched_send(client, bad, TypeError("boom"))
            outcomes = list(client.purchases.refund_many(items, reason="sold_out", concurrency=4))
    assert len(outcomes) == 20
    failed = {o.item.purchase_id: o.error for o in outcomes if not o.ok}
    assert set(failed) == bad
    assert all(isinstance(e, ItemFailedError) and "TypeError: boom" in str(e)
               for e in failed.values())  # fmt: skip


def test_a_corrupt_gzip_body_is_an_item_failure_not_a_hang() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, content=b"\x1f\x8bnot gzip at all",
                              headers={"content-encoding": "gzip",
                                       "content-type": "application/json"})  # fmt: skip

    async def go() -> list[RefundOutcome]:
        http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        async with FakePreo().async_client(backoff=NO_WAIT, http_client=http) as client:
            run = client.purchases.refund_many(["a", "b", "c"], reason="sold_out")
            outcomes = [o async for o in run]
        await http.aclose()
        return outcomes

    outcomes = asyncio.run(asyncio.wait_for(go(), WATCHDOG))
    assert len(outcomes) == 3
    assert not any(o.ok for o in outcomes)


def test_a_wrong_key_stops_the_run_promptly(runner: Any) -> None:
    """Regression: a wrong key on 200 rows hung (the feeder waited on a full queue)."""
    fake = make_fake(200, api_key="sk_right")
    items = [f"p{i}" for i in range(200)]
    with pytest.raises(AuthenticationError):
        runner(fake, items, {"api_key": "sk_wrong"}, reason="sold_out", concurrency=8)
    assert len(fake.requests) <= 8 + 8  # stopped at the first 401, not after 200


def test_on_result_raising_stops_the_run(runner: Any) -> None:
    fake = make_fake(100)
    items = [f"p{i}" for i in range(100)]

    def on_result(outcome: RefundOutcome) -> None:
        if outcome.position == 10:
            raise LookupError("consumer bug")

    with pytest.raises(LookupError):
        runner(fake, items, reason="sold_out", concurrency=4, on_result=on_result)
    assert len(fake.refunds) < 100


def test_break_inside_aclosing_ends_every_task(tmp_path: Path) -> None:
    fake = make_fake(100)
    journal = tmp_path / "j"

    async def go() -> Any:
        async with fake.async_client(backoff=NO_WAIT) as client:
            run = client.purchases.refund_many([f"p{i}" for i in range(100)],
                                               reason="sold_out", concurrency=8,
                                               journal=journal)  # fmt: skip
            async with contextlib.aclosing(run.__aiter__()) as outcomes:  # type: ignore[type-var]
                async for outcome in outcomes:
                    if outcome.position >= 5:
                        break
            tasks = _workers()
            return run.summary, tasks

    summary, leftover = asyncio.run(asyncio.wait_for(go(), WATCHDOG))
    assert leftover == []
    assert summary.stopped == "the consumer stopped reading outcomes"
    # the journal is released and complete: a resume finishes the run exactly once
    _, resumed = run_async(fake, [f"p{i}" for i in range(100)], reason="sold_out",
                           journal=journal)  # fmt: skip
    assert resumed.failures == 0
    assert collections.Counter(r.purchase_id for r in fake.refunds) == {
        f"p{i}": 1 for i in range(100)
    }


def test_cancelling_the_run_ends_every_task() -> None:
    fake = make_fake(50)

    async def go() -> list[asyncio.Task[Any]]:
        async with fake.async_client(backoff=NO_WAIT) as client:
            client._sleep = asyncio.sleep  # a real, long pause: only cancellation ends it
            fake.inject(Fault.http_status(429, retry_after="200"))
            run = client.purchases.refund_many([f"p{i}" for i in range(50)], reason="sold_out",
                                               concurrency=4)  # fmt: skip
            task = asyncio.ensure_future(run.run())
            await asyncio.sleep(0.2)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return _workers()

    assert asyncio.run(asyncio.wait_for(go(), WATCHDOG)) == []


def test_the_sync_run_interrupts_its_pauses_when_stopped() -> None:
    fake = make_fake(50)
    fake.inject(Fault.http_status(429, retry_after="200"))
    done = threading.Event()

    def items() -> Iterator[str]:
        yield from ("p0", "p1", "p2")
        while not fake.requests:  # the 429 is in: the workers are pausing for 200 s
            threading.Event().wait(0.01)
        threading.Event().wait(0.05)
        yield "bad id"  # an immediate outcome, after which the consumer stops

    def go() -> None:
        with fake.client(backoff=NO_WAIT) as client:  # real sleeps: only the stop ends them
            run = client.purchases.refund_many(items(), reason="sold_out", concurrency=4)
            for _ in run:
                break
        done.set()

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    assert done.wait(WATCHDOG), "the sync run did not stop"


def test_a_wide_run_on_a_sandbox_client_never_leaves_the_process() -> None:
    """Regression: a sandbox client owns its HTTP client, and a run wider than two shards
    replaced it with real network pools (DNS lookups of the sandbox's made-up host, a hang)."""
    fake = make_fake(100)

    async def go() -> Any:
        async with fake.async_client(backoff=NO_WAIT) as client:
            return await client.purchases.refund_many(
                [f"p{i}" for i in range(100)], reason="sold_out", concurrency=64
            ).run()

    summary = asyncio.run(asyncio.wait_for(go(), WATCHDOG))
    assert summary.succeeded == 100
    assert len(fake.refunds) == 100


def test_every_distinct_refund_is_remembered_for_replay_counting() -> None:
    """Issue 16 S6: refunds are counted once by refund id with or without a reference (one id
    remembered per distinct refund: see benchmarks/memory.py)."""
    fake = make_fake(20)
    items: list[Any] = [RefundItem("p10", reference="t-1"), RefundItem("p11", reference="t-2")]
    items += [f"p{i}" for i in range(10)]
    # a server answering the first two requests with one refund id: counted once
    fake.inject(Fault.edit_json(id="rr_same"), Fault.edit_json(id="rr_same"))

    async def go() -> Any:
        async with fake.async_client(backoff=NO_WAIT) as client:
            return await client.purchases.refund_many(items, reason="sold_out", concurrency=1).run()

    summary = asyncio.run(asyncio.wait_for(go(), WATCHDOG))
    assert (summary.succeeded, summary.replayed) == (11, 1)
    assert len(summary._refund_ids) == 11
