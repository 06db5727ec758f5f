"""Regressions of the fourth adversarial review of bulk runs: one key per item identity, a
refused carrier covered by its group's takeover, lazy resumes with identical rows, closing a
run at once, and one transaction request per transaction (every run under a watchdog)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preo_client import (
    JournalError,
    RefundItem,
    RefundOutcomeUnknownError,
    RefundValidationError,
    read_journal,
)
from preo_client._bulk import (
    AsyncBulkRun,
    BulkRun,
    CoveringRefundUnknownError,
    bulk_idempotency_key,
    canonical_request,
)
from preo_client._cli import cli
from preo_client.testing import DEMO_API_KEY, FakePreo, Fault, serve
from tests.test_bulk import NO_WAIT, WATCHDOG, run_async, run_sync

EXHAUST_429 = [Fault.http_status(429, retry_after="0")] * 9  # 1 + 8 retries: refused for good
FIVE = {"reason": "compensation", "amount": "5.00"}


@pytest.fixture(params=["sync", "async"])
def runner(request: pytest.FixtureRequest) -> Any:
    return {"sync": run_sync, "async": run_async}[request.param]


def _one_purchase() -> FakePreo:
    fake = FakePreo()
    fake.add_purchase("pur_1", price="50.00", transaction_id="tx1")
    return fake


# -- 1. one key per item identity -----------------------------------------------------------


@pytest.mark.parametrize("mode", ["journal", "batch", "fresh"])
def test_rows_differing_only_by_transaction_id_are_two_items(
    tmp_path: Path, runner: Any, mode: str
) -> None:
    """r2: the identity held the transaction_id but the key did not: one key, one refund."""
    options = {"journal": {"journal": tmp_path / "j"}, "batch": {"batch_id": "b"}, "fresh": {}}
    items = [RefundItem("pur_1", **FIVE), RefundItem("pur_1", **FIVE, transaction_id="tx1")]
    fake = _one_purchase()
    outcomes, summary = runner(fake, items, concurrency=1, **options[mode])
    assert len({o.idempotency_key for o in outcomes}) == 2
    assert (summary.succeeded, summary.replayed) == (2, 0)
    assert len(fake.refunds) == 2


@pytest.mark.parametrize(
    "second",
    [
        RefundItem("pur_1", **FIVE, transaction_id="tx1"),  # r3
        RefundItem("pur_1", **FIVE, reference="order-7"),  # r4 (with the first one's reference)
    ],
    ids=["transaction_id", "reference"],
)
def test_no_refund_is_never_reported_for_a_key_that_landed(
    tmp_path: Path, runner: Any, second: RefundItem
) -> None:
    """r3/r4: item 1's refund landed (answer lost); item 2 shared its key, was rate-limited to
    the end and reported 'no refund' although a refund with its key existed."""
    first = attrs_evolve_reference(second)
    fake = _one_purchase()
    fake.inject(Fault.read_timeout(after_commit=True), *EXHAUST_429)
    outcomes, _ = runner(fake, [first, second], journal=tmp_path / "j", concurrency=1)
    by_position = {o.position: o for o in outcomes}
    assert by_position[0].idempotency_key != by_position[1].idempotency_key
    landed = {r.idempotency_key for r in fake.refunds}
    for outcome in outcomes:
        if outcome.error is not None and not isinstance(outcome.error, RefundOutcomeUnknownError):
            assert outcome.idempotency_key not in landed, outcome


def attrs_evolve_reference(second: RefundItem) -> RefundItem:
    """The first row of r3/r4: the second without its transaction_id (same reference)."""
    return RefundItem("pur_1", **FIVE, reference=second.reference)


ROWS = st.lists(
    st.builds(
        RefundItem,
        st.sampled_from(["p0", "p1"]),
        reason=st.just("compensation"),
        amount=st.sampled_from(["1.00", "2.00"]),
        reference=st.sampled_from([None, "r"]),
        transaction_id=st.sampled_from([None, "t"]),
    ),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=ROWS, mode=st.sampled_from(["journal", "batch", "fresh"]))
def test_every_item_gets_a_key_of_its_own(
    tmp_path_factory: Any, rows: list[Any], mode: str
) -> None:
    """Issue 16 S2: whatever the rows (identical ones, references, transaction ids), each item
    is sent with its own key: as many keys and refunds as rows, nothing replayed."""
    fake = FakePreo()
    for name in ("p0", "p1"):
        fake.add_purchase(name, price="100.00")
    options: dict[str, Any] = {"fresh": {}, "batch": {"batch_id": "b"}}.get(mode, {})
    if mode == "journal":
        options = {"journal": tmp_path_factory.mktemp("j") / "j"}
    outcomes, summary = run_sync(fake, rows, concurrency=2, **options)
    assert len({o.idempotency_key for o in outcomes}) == len(rows)
    assert (summary.succeeded, summary.replayed) == (len(rows), 0)
    assert len(fake.refunds) == len(rows)


def test_a_resume_sends_the_key_the_journal_recorded(tmp_path: Path, runner: Any) -> None:
    """Keys are stored: an item an earlier version journaled (with a key derived another way)
    is resent with that key; only new items get derived keys."""
    journal = tmp_path / "j"
    items = [RefundItem("pur_1", **FIVE, transaction_id="tx1"), RefundItem("pur_1", **FIVE)]
    fake = _one_purchase()
    fake.inject(Fault.connect_error(), *[Fault.connect_error()] * 8)  # item 1: never answered
    first, _ = run_sync(fake, items[:1], journal=journal, concurrency=1)
    assert first[0].error is not None
    with contextlib.closing(sqlite3.connect(journal)) as db, db:
        db.execute("UPDATE items SET idempotency_key = 'preo-recorded-by-an-older-version', "
                   "state = 'started'")  # fmt: skip
    outcomes, summary = runner(fake, items, journal=journal, concurrency=1)
    keys = {o.position: o.idempotency_key for o in outcomes}
    assert keys[0] == "preo-recorded-by-an-older-version"
    assert keys[1] not in (keys[0], None)
    assert summary.failures == 0
    assert {r.idempotency_key for r in fake.refunds} == set(keys.values())


# -- 2. a refused carrier is covered by its group's takeover --------------------------------


def _transaction(count: int = 2) -> FakePreo:
    fake = FakePreo()
    for i in range(1, count + 1):
        fake.add_purchase(f"pur_{i}", price=f"{10 * i}.00", transaction_id="tx1")
    return fake


GROUP_A = [RefundItem("pur_1", reason="event_cancelled", transaction_id="tx1"),
           RefundItem("pur_2", reason="event_cancelled", transaction_id="tx1")]  # fmt: skip
SAME = RefundItem("pur_1", reason="event_cancelled", transaction_id="tx1", reference="cancel-1")


@pytest.mark.parametrize("items", [GROUP_A, [SAME, SAME]], ids=["group", "identical"])
def test_a_refused_carrier_is_covered_by_the_takeover(
    tmp_path: Path, runner: Any, items: list[RefundItem]
) -> None:
    """r7: the carrier's 429s ran out, the next row refunded the whole transaction: the
    carrier was reported 'no refund' (and exported failed) although the run's refund covers it."""
    fake = _transaction()
    fake.inject(*EXHAUST_429)
    journal = tmp_path / "j"
    outcomes, summary = runner(fake, items, journal=journal, concurrency=1)
    assert sorted(o.position for o in outcomes) == [0, 1]  # one outcome per item
    by_position = {o.position: o for o in outcomes}
    assert by_position[0].ok
    assert by_position[0].covered_by == 1
    assert by_position[1].refund is not None
    assert by_position[1].covered_by is None
    assert (summary.succeeded, summary.covered, summary.failures) == (1, 1, 0)
    assert [r.standing for r in read_journal(journal)] == ["covered", "done"]
    assert len(fake.refunds) == 1
    _again, summary = runner(fake, items, journal=journal, concurrency=1)
    assert (summary.skipped, summary.failures) == (2, 0)
    assert len(fake.refunds) == 1


def test_a_refused_carrier_nobody_covered_is_its_own_failure(tmp_path: Path, runner: Any) -> None:
    """Every row of the group refused: each reports its own 429 (at the end), once."""
    fake = _transaction()
    fake.inject(*EXHAUST_429, *EXHAUST_429)
    outcomes, summary = runner(fake, GROUP_A, journal=tmp_path / "j", concurrency=1)
    assert sorted(o.position for o in outcomes) == [0, 1]
    assert summary.failed == {"RateLimitError": 2}
    assert fake.refunds == []


def test_a_refused_carrier_is_told_when_the_takeover_is_unknown(
    tmp_path: Path, runner: Any
) -> None:
    """The takeover's answer is lost: the refused carrier's purchase may be refunded by it."""
    fake = _transaction()
    fake.inject(*EXHAUST_429, Fault.read_timeout())
    outcomes, _ = runner(fake, GROUP_A, journal=tmp_path / "j", concurrency=1)
    by_position = {o.position: o for o in outcomes}
    assert isinstance(by_position[0].error, CoveringRefundUnknownError)
    assert by_position[0].error.leader == 1
    assert isinstance(by_position[1].error, RefundOutcomeUnknownError)


# -- 3. a lazy resume with identical rows ---------------------------------------------------

ROWS_15 = [
    RefundItem("pur_a", reason="sold_out"),
    RefundItem("pur_b", reason="sold_out"),
    RefundItem("pur_c", reason="compensation", amount="1.00"),
    RefundItem("pur_c", reason="compensation", amount="1.00"),  # two identical rows
]


def _lazy(rows: list[RefundItem], kind: str) -> Any:
    if kind == "sync":
        return (row for row in rows)

    async def source() -> AsyncIterator[RefundItem]:
        for row in rows:
            yield row

    return source()


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("added", [False, True], ids=["same", "rows-added"])
def test_a_lazy_resume_with_identical_rows_is_accepted(
    tmp_path: Path, runner: Any, kind: str, added: bool
) -> None:
    """r15: the second identical row was checked against the first's fresh entry and refused
    ('input item 4 differs from journal ...: ;')."""
    if kind == "async" and runner is run_sync:
        pytest.skip("an async iterable is for the async driver")
    fake = FakePreo(auto_purchases=True)
    journal = tmp_path / "j"
    run_sync(fake, ROWS_15[:1], journal=journal, concurrency=1)
    more = [ROWS_15[3], RefundItem("pur_d", reason="sold_out"),
            RefundItem("pur_c", reason="compensation", amount="2.00")]  # fmt: skip
    rows = ROWS_15 + (more if added else [])
    outcomes, summary = runner(fake, _lazy(rows, kind), journal=journal, concurrency=1)
    assert len(outcomes) == len(rows)
    assert (summary.skipped, summary.failures) == (1, 0)
    assert len(fake.refunds) == len(rows)
    _, again = run_sync(fake, list(rows), journal=journal, concurrency=1)
    assert (again.skipped, again.failures) == (len(rows), 0)


def test_a_lazy_resume_names_the_field_that_changed(tmp_path: Path, runner: Any) -> None:
    fake = FakePreo(auto_purchases=True)
    journal = tmp_path / "j"
    fake.inject(Fault.read_timeout())  # pur_c may have been refunded
    run_sync(fake, ROWS_15[2:3], journal=journal, concurrency=1)
    changed = [*ROWS_15[:2], RefundItem("pur_c", reason="compensation", amount="2.00")]
    with pytest.raises(JournalError) as refused:
        runner(fake, iter(changed), journal=journal, concurrency=1)
    assert "amount was '1.00', now '2.00'" in str(refused.value)


# -- 4. closing a run at once ---------------------------------------------------------------


def _generator(count: int) -> Iterator[str]:
    yield from (f"pur_{i}" for i in range(count))


@pytest.mark.parametrize("source", ["generator", "list"])
def test_aclosing_an_async_run_releases_its_journal_at_once(tmp_path: Path, source: str) -> None:
    """r14: AsyncBulkRun had no aclose(): `aclosing(run)` raised at the break and the next run
    in the process was refused 'in use by another run (pid <own pid>)' until GC."""
    journal = tmp_path / "j"

    async def first() -> None:
        fake = FakePreo(auto_purchases=True)
        async with fake.async_client(backoff=NO_WAIT) as client:
            items = _generator(50) if source == "generator" else list(_generator(50))
            run = client.purchases.refund_many(items, reason="sold_out", journal=journal,
                                               concurrency=4)  # fmt: skip
            assert isinstance(run, AsyncBulkRun)
            async with contextlib.aclosing(run):
                async for _ in run:
                    break
            assert run.summary.stopped is not None
            await run.aclose()  # idempotent

    async def second() -> int:
        fake = FakePreo(auto_purchases=True)
        async with fake.async_client(backoff=NO_WAIT) as client:
            run = client.purchases.refund_many(list(_generator(50)), reason="sold_out",
                                               journal=journal)  # fmt: skip
            return (await run.run()).failures

    asyncio.run(asyncio.wait_for(first(), WATCHDOG))
    assert asyncio.run(asyncio.wait_for(second(), WATCHDOG)) == 0


@pytest.mark.parametrize("source", ["generator", "list"])
def test_closing_a_sync_run_releases_its_journal_at_once(tmp_path: Path, source: str) -> None:
    journal = tmp_path / "j"
    done: list[int] = []

    def go() -> None:
        fake = FakePreo(auto_purchases=True)
        with fake.client(backoff=NO_WAIT) as client:
            items = _generator(50) if source == "generator" else list(_generator(50))
            run = client.purchases.refund_many(items, reason="sold_out", journal=journal,
                                               concurrency=4)  # fmt: skip
            assert isinstance(run, BulkRun)
            with contextlib.closing(run):
                for _ in run:
                    break
            assert run.summary.stopped is not None
            run.close()  # idempotent
            again = client.purchases.refund_many(list(_generator(50)), reason="sold_out",
                                                 journal=journal)  # fmt: skip
            done.append(again.run().failures)

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(WATCHDOG)
    assert not worker.is_alive(), "the sync run hung"
    assert done == [0]


def test_a_run_never_iterated_is_released_by_aclose(tmp_path: Path) -> None:
    async def go() -> None:
        fake = FakePreo(auto_purchases=True)
        async with fake.async_client(backoff=NO_WAIT) as client:
            for _ in range(2):
                run = client.purchases.refund_many(["pur_1"], reason="sold_out",
                                                   journal=tmp_path / "j")  # fmt: skip
                await run.aclose()

    asyncio.run(asyncio.wait_for(go(), WATCHDOG))


# -- 5. one transaction request per transaction ---------------------------------------------

TWO_REASONS = [
    RefundItem("pur_1", reason="compensation", scope="transaction_custom", amount="5.00",
               transaction_id="tx1"),
    RefundItem("pur_2", reason="overcharge", scope="transaction_custom", amount="5.00",
               transaction_id="tx1"),
]  # fmt: skip


def test_rows_of_a_transaction_asking_two_requests_are_refused_before_sending(
    tmp_path: Path, runner: Any
) -> None:
    """r1: two rows of one transaction, 5.00 for two reasons: two refunds of the transaction."""
    fake = _transaction()
    with pytest.raises(RefundValidationError) as refused:
        runner(fake, TWO_REASONS, journal=tmp_path / "j")
    text = str(refused.value)
    assert "input item 1" in text
    assert "input item 2" in text
    assert "reason" in text
    assert fake.requests == []


def test_a_lazy_row_asking_its_transaction_another_request_is_refused(runner: Any) -> None:
    fake = _transaction()
    outcomes, summary = runner(fake, iter(TWO_REASONS), concurrency=1)
    refused = next(o for o in outcomes if o.position == 1)
    assert isinstance(refused.error, RefundValidationError)
    assert refused.attempts == 0
    assert summary.failed == {"RefundValidationError": 1}
    assert len(fake.refunds) == 1


def test_the_cli_refuses_two_requests_for_one_transaction(tmp_path: Path) -> None:
    fake = _transaction()
    source = tmp_path / "in.csv"
    source.write_text(
        "purchase_id,reason,scope,amount,transaction_id\n"
        "pur_1,compensation,transaction_custom,5.00,tx1\n"
        "pur_2,overcharge,transaction_custom,5.00,tx1\n"
    )
    with serve(fake) as server:
        result = CliRunner().invoke(
            cli, ["refund-bulk", str(source)],
            env={"PREO_API_KEY": DEMO_API_KEY, "PREO_BASE_URL": server.url},
        )  # fmt: skip
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "nothing was sent" in text
    assert "line 2" in text
    assert "line 3" in text
    assert fake.requests == []


def test_the_cli_resumes_from_stdin_with_identical_rows_added(tmp_path: Path) -> None:
    """r15b: a resume from standard input with rows added (two identical ones) was refused."""
    from tests.test_cli import run_cli

    fake = FakePreo(auto_purchases=True)
    journal = str(tmp_path / "j.db")
    args = ["refund-bulk", "-", "--reason", "compensation", "--journal", journal,
            "--concurrency", "1", "--results", str(tmp_path / "r.jsonl")]  # fmt: skip
    with serve(fake) as server:
        first = run_cli(args, server.url, input="purchase_id,amount\npur_a,1.00\n")
        assert first.returncode == 0, first.stdout + first.stderr
        rows = "purchase_id,amount\npur_a,1.00\npur_c,1.00\npur_c,1.00\n"
        second = run_cli([*args, "--json"], server.url, input=rows)
        assert second.returncode == 0, second.stdout + second.stderr
        assert '"skipped": 1' in second.stdout
        assert '"succeeded": 2' in second.stdout
    assert sorted(r.purchase_id for r in fake.refunds) == ["pur_a", "pur_c", "pur_c"]


def test_a_new_item_never_takes_a_key_an_older_version_recorded_for_its_twin(
    tmp_path: Path, runner: Any
) -> None:
    """An earlier version keyed a row with a transaction_id without it: its twin without one,
    new on a resume, would derive that very key (and be answered with the twin's refund)."""
    journal = tmp_path / "j"
    twin = RefundItem("pur_1", **FIVE, transaction_id="tx1")
    plain = RefundItem("pur_1", **FIVE)
    fake = _one_purchase()
    fake.inject(*[Fault.connect_error()] * 9)  # the twin: never sent
    run_sync(fake, [twin], journal=journal, concurrency=1)
    with contextlib.closing(sqlite3.connect(journal)) as db, db:
        (run_id,) = db.execute("SELECT value FROM meta WHERE name = 'run_id'").fetchone()
        old_key = bulk_idempotency_key(run_id, 0, canonical_request(plain), None)
        db.execute("UPDATE items SET idempotency_key = ?, state = 'started'", (old_key,))
    outcomes, summary = runner(fake, [twin, plain], journal=journal, concurrency=1)
    keys = {o.position: o.idempotency_key for o in outcomes}
    assert keys[0] == old_key
    assert keys[1] != old_key
    assert (summary.succeeded, summary.replayed) == (2, 0)
    assert len(fake.refunds) == 2


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_stop_on_the_takeover_hands_out_the_refused_carrier(tmp_path: Path, kind: str) -> None:
    """The takeover's 401 stops the run: the refused carrier's own outcome is handed out
    before the stop (nobody refunded its transaction), never held back."""
    from preo_client import AuthenticationError

    fake = _transaction()
    fake.inject(*EXHAUST_429, Fault.http_status(401))
    seen: list[Any] = []
    runner = run_sync if kind == "sync" else run_async
    with pytest.raises(AuthenticationError):
        runner(fake, GROUP_A, journal=tmp_path / "j", concurrency=1, on_result=seen.append)
    errors = {o.position: type(o.error).__name__ for o in seen}
    assert errors == {0: "RateLimitError", 1: "AuthenticationError"}
    assert fake.refunds == []
