"""Regressions of an adversarial review of bulk runs: transaction groups across resumes, item
identity with ``transaction_id``, and slow input sources (every run under a watchdog)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from preo_client import AuthenticationError, RateLimitError, RefundItem, RefundOutcome
from preo_client._bulk import (
    AsyncBulkRun,
    BulkRun,
    CoveringRefundUnknownError,
    JournalError,
    bulk_idempotency_key,
    canonical_request,
)
from preo_client.testing import FakePreo, Fault
from tests.test_bulk import NO_WAIT, WATCHDOG, run_async, run_sync

EXHAUST_429 = [Fault.http_status(429, retry_after="1")] * 9  # 1 + 8 retries: refused for good


@pytest.fixture(params=["sync", "async"])
def runner(request: pytest.FixtureRequest) -> Any:
    return {"sync": run_sync, "async": run_async}[request.param]


def _pair(count: int = 2) -> FakePreo:
    fake = FakePreo()
    for name in "abcdef"[:count]:
        fake.add_purchase(f"pur_{name}", price="20.00", transaction_id="tx")
    return fake


def _carriers(journal: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(journal)) as db:
        return dict(
            db.execute(
                "SELECT g.name, i.position FROM groups g JOIN items i ON i.identity = g.identity"
            ).fetchall()
        )


CUSTOM = {"reason": "compensation", "scope": "transaction_custom", "amount": "5.00"}


@pytest.mark.parametrize("request_kind", ["custom", "full"])
def test_a_takeover_after_a_refused_leader_is_what_a_resume_resends(
    tmp_path: Path, runner: Any, request_kind: str
) -> None:
    """Regression (tx_custom_double.py, tx_full_variant.py): the leader's 429s ran out, the
    next row sent its own transaction refund and its answer was lost; the resume resent the
    leader (a second refund: 10.00 for 5.00 asked; or 400 'Already refunded' forever) and
    called the row that had really sent 'covered'."""
    fake = _pair()
    fields = CUSTOM if request_kind == "custom" else {"reason": "event_cancelled"}
    items = [RefundItem(p, transaction_id="tx", **fields) for p in ("pur_a", "pur_b")]
    journal = tmp_path / "j"
    fake.inject(*EXHAUST_429, Fault.read_timeout())  # pur_b's refund lands, its answer is lost
    first, _ = runner(fake, items, journal=journal, concurrency=1)
    errors = {o.position: type(o.error).__name__ for o in first}
    # the refused leader's purchase may be refunded by the takeover's lost refund
    assert errors == {0: "CoveringRefundUnknownError", 1: "APITimeoutOutcomeUnknownError"}
    assert len(fake.refunds) == 1
    assert list(_carriers(journal).values()) == [1]  # the takeover was journaled

    second, summary = runner(fake, items, journal=journal, concurrency=1)
    by_position = {o.position: o for o in second}
    assert by_position[1].ok
    assert by_position[1].refund is not None
    assert by_position[1].refund.replayed  # resent with its recorded key
    recorded_key = next(o for o in first if o.position == 1).idempotency_key
    assert by_position[1].idempotency_key == recorded_key
    assert by_position[0].covered_by == 1  # the refused row is covered by the real request
    assert (summary.replayed, summary.covered, summary.failures) == (1, 1, 0)
    assert len(fake.refunds) == 1
    expected = Decimal("5.00") if request_kind == "custom" else Decimal("40.00")
    assert sum(r.amount for r in fake.refunds) == expected

    _, third = runner(fake, items, journal=journal, concurrency=1)
    assert (third.skipped, third.failures) == (2, 0)  # done: no exit 1 forever
    assert len(fake.refunds) == 1


def test_only_one_row_takes_over_a_refused_group(tmp_path: Path, runner: Any) -> None:
    """All followers of a refused leader used to send at once: one transaction refund each."""
    fake = _pair(4)
    items = [RefundItem(f"pur_{n}", transaction_id="tx", **CUSTOM) for n in "abcd"]
    fake.inject(*EXHAUST_429)
    outcomes, summary = runner(fake, items, journal=tmp_path / "j", concurrency=4)
    assert len(outcomes) == 4
    assert len(fake.refunds) == 1  # one 5.00 transaction refund, not three
    # the refused leader is covered by the takeover's refund (its purchase is in it)
    assert summary.failed == {}
    assert (summary.succeeded, summary.covered) == (1, 3)
    carrier = next(o for o in outcomes if o.ok and o.covered_by is None)
    assert all(o.covered_by == carrier.position for o in outcomes if o.covered_by is not None)


def test_a_row_that_sent_its_own_request_keeps_its_key_and_role(tmp_path: Path) -> None:
    """A row in flight when the run was killed is resent with its key, never 'covered' by a
    row read before it; a row of the group read first waits for it (no slot held)."""
    fake = _pair(3)
    items = [RefundItem(f"pur_{n}", transaction_id="tx", **CUSTOM) for n in "abc"]
    journal = tmp_path / "j"
    fake.inject(*EXHAUST_429, Fault.connection_reset())  # pur_a refused, pur_b: unknown
    first, _ = run_sync(fake, items, journal=journal, concurrency=1)
    assert isinstance(next(o for o in first if o.position == 2).error, CoveringRefundUnknownError)
    assert len(fake.refunds) == 1

    async def lazy() -> AsyncIterator[RefundItem]:  # the carrier is read after the others
        for position in (0, 1, 2):
            yield items[position]

    second, summary = run_async(fake, lazy(), journal=journal, concurrency=1)
    assert {o.position: o.covered_by for o in second} == {0: 1, 1: None, 2: 1}
    assert (summary.succeeded + summary.replayed, summary.failures) == (1, 0)
    assert len(fake.refunds) == 1


def test_a_carrier_missing_from_a_resumed_input_leaves_the_group_unknown(tmp_path: Path) -> None:
    fake = _pair()
    items = [RefundItem(p, transaction_id="tx", **CUSTOM) for p in ("pur_a", "pur_b")]
    journal = tmp_path / "j"
    fake.inject(*EXHAUST_429, Fault.read_timeout())
    run_sync(fake, items, journal=journal, concurrency=1)
    sent = len(fake.requests)

    def first_row_only() -> Iterator[RefundItem]:
        yield items[0]

    outcomes, _ = run_sync(fake, first_row_only(), journal=journal, concurrency=1)
    (only,) = outcomes
    assert isinstance(only.error, CoveringRefundUnknownError)
    assert only.error.leader == 1
    assert len(fake.requests) == sent  # nothing sent: the refund may exist


@pytest.mark.parametrize("lazy", [False, True])
def test_a_changed_transaction_id_is_refused_on_resume(tmp_path: Path, lazy: bool) -> None:
    """Regression (txid_changed_resume.py): a corrected transaction_id was accepted and the
    row 'skipped (done before)' though nothing was ever sent for it."""
    fake = FakePreo()
    fake.add_purchase("pur_a", price="10.00", transaction_id="tx1")
    fake.add_purchase("pur_b", price="7.00", transaction_id="tx2")
    wrong = [RefundItem("pur_a", transaction_id="tx1"), RefundItem("pur_b", transaction_id="tx1")]
    fixed = [RefundItem("pur_a", transaction_id="tx1"), RefundItem("pur_b", transaction_id="tx2")]
    journal = tmp_path / "j"
    run_sync(fake, wrong, reason="event_cancelled", journal=journal)
    sent = len(fake.requests)
    with pytest.raises(JournalError) as refused:
        run_sync(fake, iter(fixed) if lazy else fixed, reason="event_cancelled", journal=journal)
    assert "item 2" in str(refused.value)
    assert "transaction_id was 'tx1', now 'tx2'" in str(refused.value)
    assert refused.value.position == 1
    assert len(fake.requests) == sent


def test_transaction_id_is_identity_and_part_of_the_key() -> None:
    """Two rows differing only by transaction_id are two items: two identities, two keys; a
    row without one keeps the key earlier versions gave it."""
    plain = RefundItem("pur_a", "event_cancelled", reference="r")
    with_tx = RefundItem("pur_a", "event_cancelled", reference="r", transaction_id="tx")
    assert canonical_request(plain) != canonical_request(with_tx)
    for reference in ("r", None):
        assert bulk_idempotency_key("run", 3, canonical_request(plain), reference) != (
            bulk_idempotency_key("run", 3, canonical_request(with_tx), reference)
        )


# -- slow sources: outcomes and stops are handled while the source makes the run wait ------


def _blocking_source(release: threading.Event) -> Iterator[str]:
    yield "p0"
    release.wait(WATCHDOG * 2)  # blocks in next(): only the test (or the watchdog) ends it
    yield "p1"


def _fake(api_key: str = "sk_sandbox_demo") -> FakePreo:
    fake = FakePreo(api_key=api_key)
    fake.add_purchase("p0", price="10.00")
    fake.add_purchase("p1", price="10.00")
    return fake


@pytest.mark.parametrize("kind", ["sync", "async-iterable", "async-sync-iterator"])
def test_an_outcome_is_handed_out_while_the_source_waits(kind: str) -> None:
    """Regression (slow_source_async.py): the first outcome came only when the next row did.
    The source releases its second row only once the first outcome is out: without the fix
    the run deadlocks and the watchdog fails the test."""
    fake = _fake()
    release = threading.Event()
    seen: list[RefundOutcome] = []

    def on_result(outcome: RefundOutcome) -> None:
        seen.append(outcome)
        release.set()

    if kind == "sync":
        run_sync(fake, _blocking_source(release), reason="sold_out", on_result=on_result)
    elif kind == "async-sync-iterator":
        run_async(fake, _blocking_source(release), reason="sold_out", on_result=on_result)
    else:

        async def slow() -> AsyncIterator[str]:
            yield "p0"
            while not release.is_set():
                await asyncio.sleep(0.01)
            yield "p1"

        run_async(fake, slow(), reason="sold_out", on_result=on_result)
    assert [o.position for o in seen] == [0, 1]
    assert len(fake.refunds) == 2


def _wrong_key_run(kind: str, fake: FakePreo, release: threading.Event) -> None:
    if kind == "sync":
        run_sync(fake, _blocking_source(release), {"api_key": "sk_wrong"}, reason="sold_out")
    elif kind == "async-sync-iterator":
        run_async(fake, _blocking_source(release), {"api_key": "sk_wrong"}, reason="sold_out")
    else:

        async def slow() -> AsyncIterator[str]:
            yield "p0"
            await asyncio.Event().wait()  # never set: cancelled when the run stops
            yield "p1"

        run_async(fake, slow(), {"api_key": "sk_wrong"}, reason="sold_out")


@pytest.mark.parametrize("kind", ["sync", "async-iterable", "async-sync-iterator"])
def test_a_401_stops_the_run_while_the_source_waits(kind: str) -> None:
    """Regression (slow_source_async.py, stdin_slow.sh): a 401 was acted on only when the next
    row arrived (40 s late) and that row was sent after it. The source never yields again
    before the watchdog: the run must raise by itself, having sent nothing more."""
    fake = _fake(api_key="sk_right")
    release = threading.Event()
    try:
        with pytest.raises(AuthenticationError):
            _wrong_key_run(kind, fake, release)
        assert len(fake.requests) == 1  # nothing sent after the 401
    finally:
        release.set()  # let the reader thread finish


def test_no_attempt_starts_after_a_stop_is_handed_out() -> None:
    """A 401 stops the run while another worker is retrying 429s with no wait: it starts no
    further attempt once the stop is known, even while the consumer holds the 401 outcome."""
    fake = FakePreo()
    fake.add_purchase("p0", price="10.00")
    fake.add_purchase("p1", price="10.00")
    fake.inject(*[Fault.http_status(429, retry_after="0")] * 3, Fault.http_status(401),
                *[Fault.http_status(429, retry_after="0")] * 20)  # fmt: skip
    result: list[BaseException] = []
    at_stop: list[int] = []

    def go() -> None:
        with fake.client(backoff=NO_WAIT) as client:
            client._sleep = lambda seconds: None
            run = BulkRun(client, ["p0", "p1"], reason="sold_out", scope=None, concurrency=2,
                          journal=None, on_result=None)  # fmt: skip
            try:
                for outcome in run:
                    if isinstance(outcome.error, AuthenticationError):
                        at_stop.append(len(fake.requests))
                        threading.Event().wait(0.2)  # the consumer holds the stopping outcome
            except BaseException as exc:
                result.append(exc)

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(WATCHDOG)
    assert not worker.is_alive(), "the sync run hung"
    assert isinstance(result[0], AuthenticationError)
    assert len(fake.requests) <= at_stop[0] + 1  # at most the attempt already on its way


def test_a_refused_leader_of_a_systemic_stop_hands_over_nothing(tmp_path: Path) -> None:
    """A 429 above max_pause on the group's carrier stops the run: no takeover is sent."""
    fake = _pair(2)
    items = [RefundItem(p, transaction_id="tx", **CUSTOM) for p in ("pur_a", "pur_b")]
    fake.inject(Fault.http_status(429, retry_after="3600"))
    with pytest.raises(RateLimitError):
        run_async(fake, items, journal=tmp_path / "j", concurrency=2)
    assert len(fake.requests) == 1
    _, summary = run_async(fake, items, journal=tmp_path / "j", concurrency=2)
    assert (summary.succeeded, summary.covered) == (1, 1)
    assert len(fake.refunds) == 1


def test_async_bulk_run_reads_a_sync_iterator_off_the_event_loop() -> None:
    """A sync iterator blocking in next() does not stall the event loop (a heartbeat runs)."""
    fake = _fake()
    release = threading.Event()
    beats = 0

    async def go() -> int:
        nonlocal beats
        async with fake.async_client(backoff=NO_WAIT) as client:
            run = AsyncBulkRun(client, _blocking_source(release), reason="sold_out", scope=None,
                               concurrency=2, journal=None, on_result=None)  # fmt: skip
            count = 0
            async for _ in run:
                count += 1
                if count == 1:
                    for _ in range(3):  # the loop is free while next() blocks in its thread
                        await asyncio.sleep(0)
                        beats += 1
                    release.set()
            return count

    assert asyncio.run(asyncio.wait_for(go(), WATCHDOG)) == 2
    assert beats == 3
