"""Bulk-run invariants under Hypothesis: random items x random server behaviour, with a watchdog.

Whatever the items (valid, invalid, odd Unicode, huge ids, duplicates, two rows per purchase)
and whatever the server does (faults, a 401 mid-run, 429s with long Retry-After, made virtual):

- a run yields exactly one outcome per item, or raises a systemic error, and never hangs;
- an item identity (position + request) never gets more than one key, nor more than one refund;
- after a resume on the same journal with a healthy server, every item is accounted for and
  every successful item has exactly one refund in the sandbox ledger;
- a transaction group (items of one transaction sending one transaction-scope request, each
  with its ``transaction_id``) is refunded at most once in the ledger whatever the faults
  (429s that exhaust a leader's retries, lost answers, a stop) and resumes, and exactly once
  once any of its items is reported done;
- (issue 16 S8) whatever the server does, drawn from ``CATALOGUE`` below (rate limit checked
  before idempotency, replays with and without ``Idempotent-Replayed``, ``400 Already
  refunded`` on a resend, ``409`` in flight, ``422`` key reused, an answer for another amount,
  ``503`` with ``Retry-After: 0``, answers lost after the commit), with the run stopped after
  any number of outcomes (a kill: what is in flight stays journaled) and resumed with an input
  whose rows were inserted, removed or reordered, the sandbox's ledger holds at most one
  refund per item and per transaction, one for each item reported refunded, and none under
  the key of an item reported "no refund".
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import tempfile
import threading
from pathlib import Path
from typing import Any

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preo_client import (
    AuthenticationError,
    Backoff,
    ItemFailedError,
    JournalError,
    RateLimitError,
    RefundItem,
    RefundOutcome,
    RefundOutcomeUnknownError,
)
from preo_client._bulk import (
    AsyncBulkRun,
    BulkRun,
    BulkSummary,
    canonical_request,
    group_of_request,
)
from preo_client.testing import FakePreo, Fault

NO_WAIT = Backoff(base=0, cap=0)
WATCHDOG = 30.0
PURCHASES = [f"p{i}" for i in range(6)]
TRANSACTIONS = {"p0": "t0", "p1": "t0", "p2": "t0", "p3": "t1", "p4": "t1", "p5": "t2"}

purchase_ids = st.one_of(
    st.sampled_from(PURCHASES),
    st.sampled_from(["missing", "bad id", "\ud83d", "x" * 70_000, "", "..", "p\x00"]),
    st.text(min_size=1, max_size=8),
)


@st.composite
def transaction_items(draw: st.DrawFn) -> RefundItem:
    """A transaction-scope item of a real purchase, with its (true) transaction id."""
    purchase_id = draw(st.sampled_from(PURCHASES))
    request = draw(
        st.sampled_from(
            [
                {"reason": "event_cancelled"},
                {"reason": "compensation", "scope": "transaction_custom", "amount": "2.50"},
                {"reason": "overcharge", "scope": "transaction_custom", "amount": "1.00"},
            ]
        )
    )
    reference = draw(st.one_of(st.none(), st.just("r1")))
    return RefundItem(
        purchase_id, transaction_id=TRANSACTIONS[purchase_id], reference=reference, **request
    )


def one_request_per_transaction(rows: list[Any]) -> list[Any]:
    """The rows with every transaction-scope row of a transaction asking it its first such
    row's request (reason, scope, amount): an input asking one transaction two requests is
    refused before anything is sent (tested in ``test_bulk_review4.py``)."""
    first: dict[str, RefundItem] = {}
    fixed: list[Any] = []
    for row in rows:
        if isinstance(row, RefundItem) and row.transaction_id is not None:
            model = first.setdefault(row.transaction_id, row)
            row = attrs.evolve(row, reason=model.reason, scope=model.scope, amount=model.amount)
        fixed.append(row)
    return fixed


items = st.lists(
    st.one_of(
        transaction_items(),
        st.sampled_from(PURCHASES),
        st.builds(
            RefundItem,
            purchase_ids,
            reason=st.sampled_from(["compensation", "overcharge"]),
            amount=st.sampled_from(["0.01", "1.00", "2.50", "3", "-1", "0.001", "abc"]),
            comment=st.one_of(st.none(), st.text(max_size=5)),
            reference=st.one_of(st.none(), st.sampled_from(["r1", "r2"])),
        ),
        st.builds(
            RefundItem, purchase_ids, reason=st.sampled_from(["deposit_reclaim", "sold-out"])
        ),
    ),
    min_size=1,
    max_size=25,
).map(one_request_per_transaction)
EXHAUST = (Fault.http_status(429, retry_after="1"),) * 9  # a leader refused for good
faults = st.lists(
    st.sampled_from(
        [
            (Fault.read_timeout(),),
            (Fault.read_timeout(after_commit=False),),
            (Fault.connection_reset(),),
            (Fault.connect_error(),),
            (Fault.http_status(500),),
            (Fault.http_status(503),),
            (Fault.http_status(429, retry_after="120"),),  # above the single-call cap: a pause
            (Fault.http_status(429, retry_after="3600"),),  # above the run's cap: it stops
            (Fault.http_status(401),),
            (Fault.malformed_json(),),
            EXHAUST,
        ]
    ),
    max_size=8,
).map(lambda groups: [fault for group in groups for fault in group])


def _fake() -> FakePreo:
    fake = FakePreo()
    for purchase_id in PURCHASES:
        fake.add_purchase(
            purchase_id, price="10.00", deposit="1.00", transaction_id=TRANSACTIONS[purchase_id]
        )
    return fake


async def _virtual_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


Result = tuple[list[RefundOutcome], BulkSummary, bool]


def _run_async(fake: FakePreo, inputs: list[Any], journal: Path, concurrency: int = 4) -> Result:
    outcomes: list[RefundOutcome] = []

    async def go() -> tuple[BulkSummary, bool]:
        async with fake.async_client(backoff=NO_WAIT) as client:
            client._sleep = _virtual_sleep
            run = AsyncBulkRun(client, inputs, reason="sold_out", scope=None,
                               concurrency=concurrency, journal=journal,
                               on_result=None)  # fmt: skip
            try:
                async for outcome in run:
                    outcomes.append(outcome)
            except (AuthenticationError, RateLimitError):
                return run.summary, True
            return run.summary, False

    summary, stopped = asyncio.run(asyncio.wait_for(go(), WATCHDOG))
    return outcomes, summary, stopped


def _run_sync(fake: FakePreo, inputs: list[Any], journal: Path, concurrency: int = 4) -> Result:
    outcomes: list[RefundOutcome] = []
    result: list[Any] = []

    def go() -> None:
        with fake.client(backoff=NO_WAIT) as client:
            client._sleep = lambda seconds: None
            try:
                run = BulkRun(client, inputs, reason="sold_out", scope=None,
                              concurrency=concurrency, journal=journal,
                              on_result=None)  # fmt: skip
                outcomes.extend(run)
            except (AuthenticationError, RateLimitError):
                result.append((run.summary, True))
            except BaseException as exc:
                result.append(exc)
            else:
                result.append((run.summary, False))

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(WATCHDOG)
    assert not worker.is_alive(), "the sync run hung"
    if isinstance(result[0], BaseException):
        raise result[0]
    summary, stopped = result[0]
    return outcomes, summary, stopped


def _check(fake: FakePreo, inputs: list[Any], runner: Any, concurrency: int = 4) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        journal = Path(tmp) / "run.journal"
        first, summary, stopped = runner(fake, inputs, journal, concurrency)
        positions = [o.position for o in first]
        assert len(positions) == len(set(positions)), "an item got two outcomes"
        if not stopped:
            assert sorted(positions) == list(range(len(inputs))), "an item got no outcome"
        assert summary.total == len(first)
        keys = {o.position: o.idempotency_key for o in first if o.idempotency_key}

        with fake._lock:  # resume on the same journal against a healthy server
            fake._faults.clear()
        second, _, stopped2 = runner(fake, inputs, journal, concurrency)
        assert not stopped2
        assert sorted(o.position for o in second) == list(range(len(inputs)))
        for outcome in second:  # an identity keeps its key across runs (never re-keyed)
            if outcome.position in keys and outcome.idempotency_key and outcome.covered_by is None:
                assert outcome.idempotency_key == keys[outcome.position]
        per_key = collections.Counter(r.idempotency_key for r in fake.refunds)
        assert all(count == 1 for count in per_key.values()), "one key, two refunds"
        for outcome in second:
            # a row an earlier run recorded covered keeps its own (refused) key: its refund
            # is its group's (checked by _check_groups)
            covered_earlier = outcome.earlier is not None and outcome.earlier.state == "covered"
            if outcome.ok and outcome.covered_by is None and not covered_earlier:
                assert per_key[outcome.idempotency_key] == 1, "a done item without its refund"
        all_keys = {o.idempotency_key for o in first + second if o.idempotency_key}
        assert set(per_key) <= all_keys, "a refund no item accounts for"
        _check_groups(fake, inputs, first, second)


def _groups(inputs: list[Any]) -> dict[int, str]:
    """The transaction group of each input position that has one."""
    groups = {}
    for position, raw in enumerate(inputs):
        if isinstance(raw, RefundItem) and raw.transaction_id is not None:
            try:
                canonical = canonical_request(raw)
            except Exception:  # noqa: S112  # nosec B112  # an invalid item has no group
                continue
            name = group_of_request(canonical)
            if name is not None:
                groups[position] = name
    return groups


def _check_groups(
    fake: FakePreo, inputs: list[Any], first: list[RefundOutcome], second: list[RefundOutcome]
) -> None:
    """Each transaction group: at most one refund in the ledger under all the keys its items
    were ever sent or reported with, and exactly one once any item of it is done."""
    groups = _groups(inputs)
    keys: dict[str, set[str]] = collections.defaultdict(set)
    for outcome in first + second:
        if outcome.position in groups and outcome.idempotency_key:
            keys[groups[outcome.position]].add(outcome.idempotency_key)
    for name in set(groups.values()):
        refunds = [r for r in fake.refunds if r.idempotency_key in keys[name]]
        assert len(refunds) <= 1, f"a transaction group refunded {len(refunds)} times"
        done = [o for o in second if groups.get(o.position) == name and o.ok]
        if done:
            assert len(refunds) == 1, "a transaction group reported done without its refund"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs=items, server=faults)
def test_async_runs_account_for_every_item_once(inputs: list[Any], server: list[Fault]) -> None:
    fake = _fake()
    fake.inject(*server)
    _check(fake, inputs, _run_async)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs=items, server=faults)
def test_sync_runs_account_for_every_item_once(inputs: list[Any], server: list[Fault]) -> None:
    fake = _fake()
    fake.inject(*server)
    _check(fake, inputs, _run_sync)


group_faults = st.lists(
    st.sampled_from(
        [
            EXHAUST,
            (Fault.read_timeout(),),
            (Fault.connection_reset(),),
            (Fault.read_timeout(after_commit=False),),
            (Fault.connect_error(),),
            (Fault.http_status(429, retry_after="3600"),),
            (Fault.http_status(401),),
        ]
    ),
    max_size=4,
).map(lambda groups: [fault for group in groups for fault in group])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    inputs=st.lists(transaction_items(), min_size=2, max_size=8).map(one_request_per_transaction),
    server=group_faults,
    concurrency=st.sampled_from([1, 2, 4]),
    sync=st.booleans(),
)
def test_transaction_groups_are_refunded_at_most_once(
    inputs: list[Any], server: list[Fault], concurrency: int, sync: bool
) -> None:
    """Transaction groups under refused leaders, lost answers and stops, then a resume: the
    class of the reviewer's double refund (a takeover resent beside its leader)."""
    fake = _fake()
    fake.inject(*server)
    _check(fake, inputs, _run_sync if sync else _run_async, concurrency)


# -- issue 16 S8: the server-behaviour catalogue, a kill and a resume with an edited input ------

CATALOGUE: dict[str, tuple[Fault, ...]] = {
    # the server rate-limits before it looks at keys: a resend of a landed key gets 429s
    "rate limit before idempotency": EXHAUST,
    "one 429 then fine": (Fault.http_status(429, retry_after="0"),),
    "400 Already refunded": (
        Fault.http_status(400, body=b'{"non_field_errors": ["Already refunded: p0."]}'),
    ),
    "409 in flight": (Fault.http_status(409),),
    "422 key reused with another body": (Fault.http_status(422),),
    "answer for another amount": (Fault.edit_json(amount="0.37"),),
    "503 Retry-After: 0": (Fault.http_status(503, retry_after="0"),),
    "answer lost after the commit (timeout)": (Fault.read_timeout(),),
    "answer lost after the commit (reset)": (Fault.connection_reset(),),
    "answer lost, nothing committed": (Fault.read_timeout(after_commit=False),),
    "unreadable 2xx after the commit": (Fault.malformed_json(),),
    "never connected": (Fault.connect_error(),),
}
# Replays with Idempotent-Replayed come from the sandbox itself on every resend of a stored key;
# replays without the header from a second item answered with an already counted refund id.
catalogue = st.lists(st.sampled_from(sorted(CATALOGUE)), max_size=8).map(
    lambda names: [fault for name in names for fault in CATALOGUE[name]]
)
edits = st.sampled_from(["same", "insert", "remove done", "reorder"])


def _edited(inputs: list[Any], first: list[RefundOutcome], edit: str) -> list[Any]:
    if edit == "insert":
        return [RefundItem("p5", reason="overcharge", amount="0.50"), *inputs]
    if edit == "reorder":
        return inputs[::-1]
    if edit == "remove done":
        done = {o.position for o in first if o.ok and not o.skipped}
        return [raw for position, raw in enumerate(inputs) if position not in done]
    return inputs


def _ledger_oracle(
    fake: FakePreo, versions: list[list[Any]], outcomes: list[RefundOutcome]
) -> None:
    """At most one refund per item (of the input versions run, the largest count of each
    request) and per transaction; every item reported refunded has its refund; none
    reported "no refund" has one under its key."""
    wanted: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for inputs in versions:
        counts = collections.Counter(
            (raw.purchase_id, str(raw.reason), str(raw.amount))
            for raw in inputs
            if isinstance(raw, RefundItem) and raw.transaction_id is None
        )
        wanted |= counts  # the larger count of each
    made: collections.Counter[tuple[str, str, str]] = collections.Counter()
    per_transaction: collections.Counter[str] = collections.Counter()
    for refund in fake.refunds:
        if refund.scope.startswith("transaction_"):
            per_transaction[TRANSACTIONS[refund.purchase_id]] += 1
        else:
            made[(refund.purchase_id, refund.reason, f"{refund.amount:.2f}")] += 1
    assert all(count <= 1 for count in per_transaction.values()), per_transaction
    for request, count in made.items():
        assert count <= wanted[request], f"{request} refunded {count} times"
    ids = {refund.id for refund in fake.refunds}
    keys = {refund.idempotency_key for refund in fake.refunds}
    for outcome in outcomes:
        if outcome.refund is not None:
            assert outcome.refund.id in ids, "reported refunded without a refund"
        if (
            outcome.error is not None
            and not isinstance(outcome.error, RefundOutcomeUnknownError | ItemFailedError)
            and outcome.attempts > 0
        ):
            assert outcome.idempotency_key not in keys, "reported 'no refund' but it has one"


plain_items = st.lists(
    st.one_of(
        transaction_items(),
        st.builds(
            RefundItem,
            st.sampled_from(PURCHASES),
            reason=st.just("compensation"),
            amount=st.sampled_from(["1.00", "2.50"]),
        ),
    ),
    min_size=1,
    max_size=10,
).map(one_request_per_transaction)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    inputs=plain_items,
    server=catalogue,
    kill_after=st.integers(min_value=0, max_value=10),
    edit=edits,
    sync=st.booleans(),
)
def test_the_catalogue_never_pays_twice(
    inputs: list[Any], server: list[Fault], kill_after: int, edit: str, sync: bool
) -> None:
    """Run 1 against catalogue behaviour, killed (stopped) after some outcomes; run 2 on the
    same journal with an edited input (refused before sending when it lacks or changes an
    item that may have been refunded: then run 2 uses the original input); run 3 healthy.
    The sandbox's ledger is the oracle after every run."""
    fake = _fake()
    fake.inject(*server)
    with tempfile.TemporaryDirectory() as tmp:
        journal = Path(tmp) / "run.journal"
        first = _killed(fake, inputs, journal, kill_after, sync)
        _ledger_oracle(fake, [inputs], first)
        edited = _edited(inputs, first, edit)
        runner = _run_sync if sync else _run_async
        try:
            second, _, _ = runner(fake, edited, journal, 2)
        except JournalError:
            edited = inputs
            second, _, _ = runner(fake, edited, journal, 2)
        _ledger_oracle(fake, [inputs, edited], second)
        with fake._lock:
            fake._faults.clear()
        third, _, stopped = runner(fake, edited, journal, 2)
        assert not stopped
        _ledger_oracle(fake, [inputs, edited], third)


def _killed(
    fake: FakePreo, inputs: list[Any], journal: Path, kill_after: int, sync: bool
) -> list[RefundOutcome]:
    """A run stopped after ``kill_after`` outcomes (what is in flight stays journaled as
    started, as after a kill -9)."""
    outcomes: list[RefundOutcome] = []
    if sync:

        def go() -> None:
            with fake.client(backoff=NO_WAIT) as client:
                client._sleep = lambda seconds: None
                run = BulkRun(client, inputs, reason="sold_out", scope=None, concurrency=2,
                              journal=journal, on_result=None)  # fmt: skip
                with contextlib.suppress(AuthenticationError, RateLimitError):
                    for outcome in run:
                        outcomes.append(outcome)
                        if len(outcomes) >= kill_after:
                            break

        worker = threading.Thread(target=go, daemon=True)
        worker.start()
        worker.join(WATCHDOG)
        assert not worker.is_alive(), "the sync run hung"
        return outcomes

    async def main() -> None:
        async with fake.async_client(backoff=NO_WAIT) as client:
            client._sleep = _virtual_sleep
            run = AsyncBulkRun(client, inputs, reason="sold_out", scope=None, concurrency=2,
                               journal=journal, on_result=None)  # fmt: skip
            with contextlib.suppress(AuthenticationError, RateLimitError):
                async with contextlib.aclosing(run.__aiter__()) as stream:  # type: ignore[type-var]
                    async for outcome in stream:
                        outcomes.append(outcome)
                        if len(outcomes) >= kill_after:
                            break

    asyncio.run(asyncio.wait_for(main(), WATCHDOG))
    return outcomes
