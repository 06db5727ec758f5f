"""The audit trail reads a transaction group through its carrier (adversary round 3, P1/P2).

A refused carrier (429 until its retries ran out) hands its group over to the next row. When
that row's refund is made, the refused row is covered by it; when that row's answer is lost, the
transaction may be refunded. The journal export must never call such a row ``failed`` ("surely
no refund"), and a covered row names its carrier's line.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preo_client import RefundItem, read_journal
from preo_client._retry import Backoff
from preo_client.testing import FakePreo, Fault


def _run(tmp: Path, kind: str, rows: int, refused: int, lost: bool, event: bool) -> FakePreo:
    fake = FakePreo()
    names = [f"pur_{i}" for i in range(1, rows + 1)]
    for name in names:
        fake.add_purchase(name, price="10.00", transaction_id="tx1")
    faults = [Fault.http_status(429, retry_after="0")] * (9 * refused)
    fake.inject(*faults, *([Fault.read_timeout()] * 40 if lost else []))
    if event:
        items = [RefundItem(p, reason="event_cancelled", transaction_id="tx1") for p in names]
    else:
        items = [
            RefundItem(
                p,
                reason="compensation",
                scope="transaction_custom",
                amount="3.00",
                transaction_id="tx1",
            )
            for p in names
        ]
    journal = tmp / "j"
    if kind == "sync":
        with fake.client(backoff=Backoff(0, 0)) as client:
            list(client.purchases.refund_many(items, journal=journal, concurrency=1))
    else:

        async def go() -> None:
            async with fake.async_client(backoff=Backoff(0, 0)) as client:
                async for _ in client.purchases.refund_many(items, journal=journal, concurrency=1):
                    pass

        asyncio.run(go())
    return fake


@settings(max_examples=16, deadline=None)
@given(
    kind=st.sampled_from(["sync", "async"]),
    rows=st.integers(2, 4),
    data=st.data(),
    lost=st.booleans(),
    event=st.booleans(),
)
def test_no_row_of_a_refunded_transaction_is_failed(
    tmp_path_factory: pytest.TempPathFactory,
    kind: str,
    rows: int,
    data: st.DataObject,
    lost: bool,
    event: bool,
) -> None:
    refused = data.draw(st.integers(1, rows - 1))
    tmp = tmp_path_factory.mktemp("j")
    fake = _run(tmp, kind, rows, refused, lost, event)
    records = list(read_journal(tmp / "j"))
    assert len(records) == rows
    assert len(fake.refunds) == 1  # the carrier that got through made the one refund
    carrier_line = refused + 1  # 1-based position of the row whose request was made
    for record in records:
        assert record.standing != "failed", record  # the transaction has a refund
        if record.position + 1 == carrier_line:
            assert record.standing == ("outcome_unknown" if lost else "done")
        elif lost:  # a refused row: may be covered; a row never sent: nothing of its own
            assert record.standing in ("outcome_unknown", "not_sent"), record
            if record.position + 1 <= refused:
                assert record.standing == "outcome_unknown", record
        else:
            assert record.standing == "covered", record
            assert record.covered_by == carrier_line, record


def test_refused_rows_with_no_refund_of_their_transaction_stay_failed(tmp_path: Path) -> None:
    fake = _run(tmp_path, "sync", 2, 2, lost=False, event=True)
    assert fake.refunds == []
    assert [r.standing for r in read_journal(tmp_path / "j")] == ["failed", "failed"]
