"""The standing table (issue 16 S1), exhaustively, and the round-3 bulk reproductions as
regression tests (each against both drivers where the driver matters, under a watchdog).

Server-behaviour catalogue the tests here draw from (``FakePreo`` faults):

====================================  =====================================================
behaviour                             how
====================================  =====================================================
rate limit checked before idempotency ``Fault.http_status(429)`` on a resend (the sandbox's
                                      own limiter also answers before looking at keys)
replay with ``Idempotent-Replayed``   the sandbox on a resend of a stored key
replay without the header             a second item answered with an already-counted id
``400 Already refunded`` on a resend  ``Fault.http_status(400)`` on a key that may have landed
``409`` in flight                     ``Fault.http_status(409)``
``422`` key reused, another body      ``Fault.http_status(422)``
answer amount differs                 ``Fault.edit_json(amount=...)``
``503`` with ``Retry-After: 0``       ``Fault.http_status(503, retry_after="0")``
answer lost after the commit          ``Fault.read_timeout()`` / ``Fault.connection_reset()``
resume with an edited input           rows inserted, removed, reordered between runs
====================================  =====================================================

Oracle: the sandbox's ledger (``fake.refunds``): at most one refund per item and per
transaction, one for each item reported done, none reported "no refund" that has one.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from preo_client import (
    RefundItem,
    RefundOutcomeUnknownError,
    RefundValidationError,
)
from preo_client._amounts import amount_text, exact_sum
from preo_client._bulk import BulkRun, JournalError, _Stopped
from preo_client._bulk_standing import TABLE, Answer, Reported, Standing, commit, verdict
from preo_client.testing import FakePreo, Fault
from tests.test_bulk import NO_WAIT, WATCHDOG, run_async, run_sync

EXHAUST_429 = [Fault.http_status(429, retry_after="1")] * 9  # 1 + 8 retries: refused for good
REFUSALS = [
    ("429", EXHAUST_429),
    ("400", [Fault.http_status(400, body=b'{"non_field_errors": ["Already refunded: x."]}')]),
    ("404", [Fault.http_status(404)]),
    ("409", [Fault.http_status(409)] * 9),
    ("422", [Fault.http_status(422)]),
    ("500", [Fault.http_status(500)] * 9),
    ("connect", [Fault.connect_error()] * 9),
]


@pytest.fixture(params=["sync", "async"])
def runner(request: pytest.FixtureRequest) -> Any:
    return run_sync if request.param == "sync" else run_async


# -- the table -------------------------------------------------------------------------------


def test_the_table_is_exhaustive() -> None:
    assert set(TABLE) == {(s, a) for s in Standing for a in Answer}


@pytest.mark.parametrize("standing", list(Standing))
@pytest.mark.parametrize("answer", list(Answer))
def test_every_cell_holds_the_rule(standing: Standing, answer: Answer) -> None:
    """Once a key may have landed, only a 2xx resolves it; no cell lets another row take
    over a group whose carrier may have made the refund, and only a 2xx reports a refund."""
    cell = verdict(standing, answer)
    if standing is Standing.DONE or answer is Answer.OK:
        assert cell == (Standing.DONE, Reported.REFUNDED, False)
        return
    if standing is Standing.MAY_HAVE_LANDED or commit(standing) is Standing.MAY_HAVE_LANDED:
        assert cell.standing is Standing.MAY_HAVE_LANDED
        assert cell.reported in (Reported.UNKNOWN, Reported.IN_FLIGHT)
        assert not cell.takeover
    if cell.reported is Reported.NO_REFUND:
        assert cell.standing is Standing.NOTHING
        assert cell.takeover
        assert answer not in (Answer.LOST, Answer.IN_FLIGHT, Answer.KEY_REUSED, Answer.STOPPED)
    if cell.takeover:
        assert cell.standing in (Standing.NEW, Standing.NOTHING)
    if answer in (Answer.LOST, Answer.IN_FLIGHT, Answer.KEY_REUSED):
        assert cell == (Standing.MAY_HAVE_LANDED, Reported.UNKNOWN, False)


# -- reproduction 1: a resend's non-2xx never reopens a group or reports "no refund" ------------


@pytest.mark.parametrize(("name", "faults"), REFUSALS, ids=[n for n, _ in REFUSALS])
def test_a_resend_that_is_refused_stays_outcome_unknown(
    tmp_path: Path, runner: Any, name: str, faults: list[Fault]
) -> None:
    """Repro resume_429_takeover_double_refund.py: run 1's answer is lost after the commit;
    whatever run 2's resend gets, the item is outcome-unknown and the group's other row never
    sends its own refund (10.00 for a 5.00 transaction before the fix)."""
    fake = FakePreo()
    fake.add_purchase("pur_a", price="40.00", transaction_id="tx_1")
    fake.add_purchase("pur_b", price="40.00", transaction_id="tx_1")
    items = [RefundItem(p, reason="compensation", scope="transaction_custom", amount="5.00",
                        transaction_id="tx_1") for p in ("pur_a", "pur_b")]  # fmt: skip
    journal = tmp_path / "j"
    fake.inject(Fault.read_timeout(after_commit=True))
    runner(fake, items, journal=journal, concurrency=1)
    assert len(fake.refunds) == 1
    fake.inject(*faults)
    second, summary = runner(fake, items, journal=journal, concurrency=1)
    assert len(fake.refunds) == 1, name  # never a second refund of the transaction
    carrier = next(o for o in second if o.item.purchase_id == "pur_a")
    assert isinstance(carrier.error, RefundOutcomeUnknownError), carrier.error
    other = next(o for o in second if o.item.purchase_id == "pur_b")
    assert other.refund is None
    assert other.attempts == 0
    assert summary.succeeded == 0
    # a third run with a healthy server resolves it with the recorded key: still one refund
    fake._faults.clear()
    third, _ = runner(fake, items, journal=journal, concurrency=1)
    assert all(o.ok for o in third)
    assert len(fake.refunds) == 1


@pytest.mark.parametrize(("name", "faults"), REFUSALS, ids=[n for n, _ in REFUSALS])
def test_a_plain_row_resent_and_refused_is_outcome_unknown(
    tmp_path: Path, runner: Any, name: str, faults: list[Fault]
) -> None:
    fake = FakePreo()
    fake.add_purchase("pur_x", price="40.00")
    items = [RefundItem("pur_x", reason="compensation", amount="5.00")]
    journal = tmp_path / "j"
    fake.inject(Fault.read_timeout(after_commit=True))
    runner(fake, items, journal=journal)
    fake.inject(*faults)
    (outcome,), _ = runner(fake, items, journal=journal)
    assert isinstance(outcome.error, RefundOutcomeUnknownError), (name, outcome.error)
    fake._faults.clear()
    (outcome,), _ = runner(fake, items, journal=journal)  # and the journal keeps saying so
    assert outcome.ok
    assert len(fake.refunds) == 1


# -- reproduction 3: a BaseException from a lazy input never hangs ----------------------------


def _exiting() -> Iterator[str]:
    yield "pur_1"
    yield "pur_2"
    sys.exit("row 3 is bad")


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_base_exception_from_the_input_stops_the_run(kind: str) -> None:
    fake = FakePreo(auto_purchases=True)
    result: dict[str, BaseException | None] = {"raised": None}

    def go() -> None:
        try:
            if kind == "sync":
                with fake.client(backoff=NO_WAIT) as client:
                    list(client.purchases.refund_many(_exiting(), reason="sold_out"))
            else:

                async def main() -> None:
                    async with fake.async_client(backoff=NO_WAIT) as client:
                        async for _ in client.purchases.refund_many(_exiting(), reason="sold_out"):
                            pass

                asyncio.run(main())
        except BaseException as exc:
            result["raised"] = exc

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(WATCHDOG)
    assert not worker.is_alive(), "the run hung"
    assert isinstance(result["raised"], SystemExit)


# -- reproduction 4: one refund counted once, replays from the header -------------------------


def test_one_refund_answered_twice_is_counted_once(runner: Any) -> None:
    fake = FakePreo(auto_purchases=True)
    # a server that answers the second request with the refund it already made
    # two items (two keys) answered with one refund id: one refund, counted once
    fake.inject(Fault.edit_json(id="rr_same"), Fault.edit_json(id="rr_same"))
    items = [RefundItem("pur_1", reason="compensation", amount="1.00", reference="r1")] * 2
    outcomes, summary = runner(fake, items, concurrency=1)
    refunded = sorted((o for o in outcomes if o.refund is not None), key=lambda o: o.position)
    assert len({o.refund.id for o in refunded}) == 1
    assert len({o.idempotency_key for o in refunded}) == 2
    assert summary.total_amount == refunded[0].refund.amount
    assert [o.replayed for o in refunded] == [False, True]  # the id repeats


def test_the_summary_total_is_exact_at_any_size() -> None:
    huge = Decimal("1e26")
    assert exact_sum([huge, Decimal("0.01")]) == Decimal("100000000000000000000000000.01")
    assert amount_text(huge) == "100000000000000000000000000.00"
    assert amount_text(Decimal("1.005")) == "1.005"


# -- reproduction 5: rows of one transaction are one group whatever their text ----------------


def test_rows_of_a_transaction_with_distinct_references_are_one_group(runner: Any) -> None:
    fake = FakePreo()
    for p in ("pur_a", "pur_b", "pur_c"):
        fake.add_purchase(p, price="10.00", transaction_id="tx_1")
    items = [RefundItem(p, transaction_id="tx_1", reference=f"line-{i}", comment=f"c{i}")
             for i, p in enumerate(("pur_a", "pur_b", "pur_c"))]  # fmt: skip
    _, summary = runner(fake, items, reason="event_cancelled", concurrency=1)
    assert (summary.succeeded, summary.covered, summary.failures) == (1, 2, 0)
    assert (len(fake.refunds), len(fake.requests)) == (1, 1)


def test_rows_of_a_transaction_asking_different_amounts_are_refused(runner: Any) -> None:
    fake = FakePreo()
    for p in ("pur_a", "pur_b"):
        fake.add_purchase(p, price="10.00", transaction_id="tx_1")
    asked = (("pur_a", "5.00"), ("pur_b", "4.00"))
    items = [RefundItem(p, reason="compensation", scope="transaction_custom", amount=a,
                        transaction_id="tx_1") for p, a in asked]  # fmt: skip
    with pytest.raises(RefundValidationError, match=r"input item 2 but for 5\.00 by input item 1"):
        runner(fake, items, concurrency=1)  # an in-memory input: before anything is sent
    assert fake.requests == []
    outcomes, _ = runner(fake, iter(items), concurrency=1)  # a lazy one: that row refused
    refused = next(o for o in outcomes if o.position == 1)
    assert isinstance(refused.error, RefundValidationError)
    assert refused.attempts == 0
    assert len(fake.refunds) == 1


# -- reproduction 6: a huge amount answered: printed, never a traceback -------------------------


def test_a_huge_refund_amount_is_reported_exactly(runner: Any) -> None:
    fake = FakePreo(auto_purchases=True)
    fake.inject(Fault.edit_json(amount=10**26))
    _, summary = runner(fake, ["pur_1"], reason="sold_out")
    assert summary.total_amount == Decimal(10**26)
    assert amount_text(summary.total_amount) == "100000000000000000000000000.00"


def test_an_answer_for_another_amount_is_flagged(runner: Any) -> None:
    fake = FakePreo(auto_purchases=True)
    fake.inject(Fault.edit_json(amount="7.00"))
    items = [RefundItem("pur_1", reason="compensation", amount="5.00")]
    (outcome,), summary = runner(fake, items)
    assert outcome.ok
    assert outcome.amount_differs
    assert "7.00" in (outcome.note or "")
    assert summary.amount_differs == 1


# -- reproduction 8: any pause up to infinity in the sync driver -------------------------------


@pytest.mark.parametrize("seconds", [1e10, float("inf")])
def test_a_sync_wait_of_any_length_is_interrupted_by_a_stop(seconds: float) -> None:
    fake = FakePreo(auto_purchases=True)
    with fake.client(real_sleep=True) as client:
        run = BulkRun(client, [], reason="sold_out", scope=None, concurrency=1, journal=None,
                      on_result=None)  # fmt: skip
        stop = threading.Event()
        sender = run._sender(stop)
        raised: list[BaseException] = []

        sleep: Any = sender._sleep

        def wait() -> None:
            try:
                sleep(seconds)
            except BaseException as exc:
                raised.append(exc)

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        waiter.join(0.2)
        assert waiter.is_alive()  # waiting, not OverflowError
        assert not raised
        stop.set()
        waiter.join(WATCHDOG)
        assert not waiter.is_alive()
        assert isinstance(raised[0], _Stopped)
        run.close()


# -- reproduction 9: an item changed on resume is refused -------------------------------------


@pytest.mark.parametrize("changed", ["4.00", "5.001"])
def test_a_changed_item_that_may_have_landed_is_refused(tmp_path: Path, changed: str) -> None:
    fake = FakePreo()
    fake.add_purchase("pur_1", price="50.00")
    fake.add_purchase("pur_2", price="50.00")
    journal = tmp_path / "j"
    fake.inject(Fault.read_timeout(after_commit=True))
    items = [RefundItem("pur_1", amount="5.00"), RefundItem("pur_2", amount="5.00")]
    run_sync(fake, items, reason="compensation", journal=journal, concurrency=1)
    sent = len(fake.requests)
    edited = [RefundItem("pur_1", amount=changed), RefundItem("pur_2", amount="5.00")]
    with pytest.raises(JournalError, match="input item 1 differs"):
        run_sync(fake, edited, reason="compensation", journal=journal, concurrency=1)
    with pytest.raises(JournalError, match="missing from this input"):
        run_sync(fake, items[1:], reason="compensation", journal=journal, concurrency=1)
    assert len(fake.requests) == sent


def test_a_lazy_input_lacking_a_may_have_landed_item_reports_it(tmp_path: Path) -> None:
    fake = FakePreo(auto_purchases=True)
    journal = tmp_path / "j"
    fake.inject(Fault.read_timeout(after_commit=True))
    run_sync(fake, ["pur_1", "pur_2"], reason="sold_out", journal=journal, concurrency=1)

    def lazy() -> Iterator[str]:
        yield "pur_2"

    _, summary = run_sync(fake, lazy(), reason="sold_out", journal=journal, concurrency=1)
    assert summary.missing == ["pur_1"]
    assert summary.journal_refunds == 1  # pur_1 may have been refunded: unknown, not counted


# -- reproduction 10: wrong argument types -----------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"max_pause": "300"},
        {"max_pause": None},
        {"max_pause": True},
        {"max_pause": float("nan")},
        {"journal": 7},
        {"on_result": 5},
        {"items": 5},
        {"items": "pur_1"},
    ],
)
def test_wrong_argument_types_are_validation_errors(options: dict[str, Any]) -> None:
    fake = FakePreo.demo(auto_purchases=True)
    arguments = {"items": ["pur_1"], "reason": "sold_out", **options}
    with fake.client() as client, pytest.raises(RefundValidationError):
        client.purchases.refund_many(**arguments)


# -- reproduction 11: keys from content, not position ------------------------------------------


@pytest.mark.parametrize("edit", ["insert", "remove", "reorder"])
def test_batch_id_keys_survive_edits_of_other_rows(runner: Any, edit: str) -> None:
    fake = FakePreo(auto_purchases=True)
    items = [RefundItem(f"pur_{n}", reason="compensation", amount="1.00") for n in range(4)]
    first, _ = runner(fake, items, batch_id="b-11", concurrency=1)
    keys = {o.item.purchase_id: o.idempotency_key for o in first}
    edited = {
        "insert": [RefundItem("pur_new", reason="compensation", amount="1.00"), *items],
        "remove": items[1:],
        "reorder": items[::-1],
    }[edit]
    second, _ = runner(fake, edited, batch_id="b-11", concurrency=1)
    for outcome in second:
        if outcome.item.purchase_id in keys:
            assert outcome.idempotency_key == keys[outcome.item.purchase_id]
            assert outcome.replayed
    assert len(fake.refunds) == len({o.item.purchase_id for o in [*first, *second]})


def test_the_second_of_two_identical_rows_is_a_second_item(runner: Any) -> None:
    fake = FakePreo(auto_purchases=True)
    items = [RefundItem("pur_1", reason="compensation", amount="1.00")] * 2
    outcomes, _ = runner(fake, items, batch_id="b-2", concurrency=1)
    assert len({o.idempotency_key for o in outcomes}) == 2
    assert len(fake.refunds) == 2


# -- journals of schema 1 (keyed by position) resume with the keys they recorded -----------------


def _legacy_journal(path: Path, rows: list[tuple[int, str, str, str]], groups: Any = ()) -> None:
    """A ``preo-bulk-journal/1`` file as the previous version wrote it."""
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute(
            "CREATE TABLE items (position INTEGER PRIMARY KEY, request TEXT NOT NULL, "
            "idempotency_key TEXT NOT NULL, state TEXT NOT NULL, refund_id TEXT, amount TEXT, "
            "error TEXT)"
        )
        db.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("schema", "preo-bulk-journal/1"), ("run_id", "legacy-run"), ("clean", "1")],
        )
        db.executemany(
            "INSERT INTO items (position, request, idempotency_key, state) VALUES (?, ?, ?, ?)",
            rows,
        )
        if groups:
            db.execute(
                "CREATE TABLE groups (name TEXT PRIMARY KEY, position INTEGER NOT NULL, "
                "idempotency_key TEXT NOT NULL)"
            )
            db.executemany("INSERT INTO groups VALUES (?, ?, ?)", groups)


def test_a_schema_1_journal_resumes_with_its_recorded_keys(tmp_path: Path, runner: Any) -> None:
    from preo_client._bulk import canonical_request

    fake = FakePreo()
    for p in ("pur_a", "pur_b", "pur_c"):
        fake.add_purchase(p, price="20.00", transaction_id="tx")
    items = [RefundItem(p, reason="compensation", scope="transaction_custom", amount="5.00",
                        transaction_id="tx") for p in ("pur_a", "pur_b", "pur_c")]  # fmt: skip
    plain = RefundItem("pur_a", reason="compensation", amount="1.00")
    # the earlier version sent pur_b's transaction refund (its answer lost) and the plain row
    with fake.client() as client:
        client.purchases.refund("pur_b", reason="compensation", scope="transaction_custom",
                                amount="5.00", idempotency_key="legacy-key-b")  # fmt: skip
        client.purchases.refund("pur_a", reason="compensation", amount="1.00",
                                idempotency_key="legacy-key-plain")  # fmt: skip
    journal = tmp_path / "j"
    _legacy_journal(
        journal,
        [
            (1, canonical_request(items[1]), "legacy-key-b", "started"),
            (3, canonical_request(plain), "legacy-key-plain", "started"),
        ],
        groups=[("old-group-name", 1, "legacy-key-b")],
    )
    outcomes, summary = runner(fake, [*items, plain], journal=journal, concurrency=1)
    by_purchase = {(o.item.purchase_id, o.item.scope): o for o in outcomes}
    carrier = by_purchase["pur_b", "transaction_custom"]
    assert carrier.idempotency_key == "legacy-key-b"
    assert carrier.ok
    assert by_purchase["pur_a", None].idempotency_key == "legacy-key-plain"
    assert summary.failures == 0
    assert summary.covered == 2
    assert len(fake.refunds) == 2  # nothing sent twice: the recorded keys were replayed
    _, summary = runner(fake, [*items, plain], journal=journal, concurrency=1)
    assert summary.skipped == 4
    assert len(fake.refunds) == 2


def test_a_stopped_run_says_how_many_rows_were_never_read() -> None:
    from preo_client import AuthenticationError

    fake = FakePreo(auto_purchases=True)
    fake.inject(Fault.http_status(401))
    items = [f"pur_{n}" for n in range(10)]

    def go() -> Any:
        with fake.client(backoff=NO_WAIT) as client:
            run = client.purchases.refund_many(items, reason="sold_out", concurrency=1)
            with pytest.raises(AuthenticationError):
                list(run)
            return run.summary

    done: list[Any] = []
    worker = threading.Thread(target=lambda: done.append(go()), daemon=True)
    worker.start()
    worker.join(WATCHDOG)
    assert not worker.is_alive()
    (summary,) = done
    assert summary.unread == len(items) - 1  # only the first row was read
    assert summary.stopped is not None


FRESH = [
    ("429", EXHAUST_429, Reported.NO_REFUND),
    ("400", [Fault.http_status(400)], Reported.NO_REFUND),
    ("404", [Fault.http_status(404)], Reported.NO_REFUND),
    ("409", [Fault.http_status(409)] * 9, Reported.UNKNOWN),
    ("422", [Fault.http_status(422)], Reported.UNKNOWN),
    ("connect", [Fault.connect_error()] * 9, Reported.NO_REFUND),
    ("lost", [Fault.read_timeout()], Reported.UNKNOWN),
    ("ok", [], Reported.REFUNDED),
]


@pytest.mark.parametrize(("name", "faults", "reported"), FRESH, ids=[n for n, _, _ in FRESH])
def test_a_fresh_item_is_reported_as_the_table_says(
    runner: Any, name: str, faults: list[Fault], reported: Reported
) -> None:
    """The committed standing (a fresh item, its key journaled) in both drivers: the reported
    outcome is the table's, and the ledger agrees with it."""
    fake = FakePreo(auto_purchases=True)
    fake.inject(*faults)
    (outcome,), _ = runner(fake, [RefundItem("pur_1", reason="compensation", amount="1.00")])
    keys = {refund.idempotency_key for refund in fake.refunds}
    if reported is Reported.REFUNDED:
        assert outcome.ok
        assert outcome.idempotency_key in keys
    elif reported is Reported.UNKNOWN:
        assert isinstance(outcome.error, RefundOutcomeUnknownError), (name, outcome.error)
    else:
        assert outcome.error is not None
        assert not isinstance(outcome.error, RefundOutcomeUnknownError), (name, outcome.error)
        assert outcome.idempotency_key not in keys


def test_a_reordered_resume_never_refunds_a_transaction_for_two_amounts(
    tmp_path: Path, runner: Any
) -> None:
    """Run 1 sent the 4.00 row (answer lost) and refused the 5.00 row; a resume with the rows
    reordered must not send the 5.00 row first: the 4.00 row's key may have landed."""
    fake = FakePreo()
    for p in ("pur_a", "pur_b"):
        fake.add_purchase(p, price="20.00", transaction_id="tx_1")
    asked = (("pur_b", "4.00"), ("pur_a", "5.00"))
    items = [RefundItem(p, reason="compensation", scope="transaction_custom", amount=a,
                        transaction_id="tx_1") for p, a in asked]  # fmt: skip
    journal = tmp_path / "j"
    fake.inject(Fault.read_timeout())
    runner(fake, iter(items), journal=journal, concurrency=1)
    assert [str(r.amount) for r in fake.refunds] == ["4.00"]
    second, _ = runner(fake, iter(items[::-1]), journal=journal, concurrency=1)
    assert [str(r.amount) for r in fake.refunds] == ["4.00"]
    refused = next(o for o in second if o.item.purchase_id == "pur_a")
    assert isinstance(refused.error, RefundValidationError)
    assert refused.attempts == 0


@pytest.mark.parametrize(("name", "faults", "reported"), FRESH, ids=[n for n, _, _ in FRESH])
def test_an_item_refused_earlier_is_reported_as_the_table_says(
    tmp_path: Path, runner: Any, name: str, faults: list[Fault], reported: Reported
) -> None:
    """The ``nothing`` standing (an earlier run's request was refused: surely no refund),
    resent with its recorded key in both drivers."""
    fake = FakePreo(auto_purchases=True)
    items = [RefundItem("pur_1", reason="compensation", amount="1.00")]
    journal = tmp_path / "j"
    fake.inject(Fault.http_status(404))
    (first,), _ = runner(fake, items, journal=journal)
    assert first.error is not None
    assert not isinstance(first.error, RefundOutcomeUnknownError)
    fake.inject(*faults)
    (outcome,), _ = runner(fake, items, journal=journal)
    assert outcome.idempotency_key == first.idempotency_key  # the recorded key
    keys = {refund.idempotency_key for refund in fake.refunds}
    if reported is Reported.REFUNDED:
        assert outcome.ok
    elif reported is Reported.UNKNOWN:
        assert isinstance(outcome.error, RefundOutcomeUnknownError), (name, outcome.error)
    else:
        assert not isinstance(outcome.error, RefundOutcomeUnknownError), (name, outcome.error)
        assert outcome.idempotency_key not in keys
