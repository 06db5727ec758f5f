"""The audit trail after resumes with an edited input: one record per item of the latest input,
in its order, at its current position and line; items the journal holds that this input lacks
follow (``in_input`` False, no line), so no refund is hidden; totals count every refund once."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preo_client import JournalError, read_journal
from preo_client._cli import cli
from preo_client._journal_reader import journal_report
from preo_client.testing import FakePreo
from tests.test_models import within_watchdog


def _bulk(folder: Path, name: str, text: str, *extra: str) -> None:
    source = folder / name
    source.write_text(text)
    result = CliRunner().invoke(
        cli,
        ["refund-bulk", str(source), "--sandbox", "--journal", str(folder / "j.db"), "--json",
         *extra],
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def _export(journal: Path) -> list[dict[str, str]]:
    result = CliRunner().invoke(cli, ["journal", "export", str(journal), "--format", "csv"])
    assert result.exit_code == 0, result.output
    return list(csv.DictReader(io.StringIO(result.output)))


def test_a_row_inserted_on_resume_gives_one_record_per_item_at_its_line(tmp_path: Path) -> None:
    """The review's r12: run 1 ``pur_a, pur_b``; run 2 ``pur_new, pur_a, pur_b``."""
    _bulk(tmp_path, "run1.csv", "purchase_id\npur_a\npur_b\n", "--reason", "sold_out")
    _bulk(tmp_path, "run2.csv", "purchase_id\npur_new\npur_a\npur_b\n", "--reason", "sold_out")
    journal = tmp_path / "j.db"
    rows = _export(journal)
    assert [(r["position"], r["line"], r["purchase_id"]) for r in rows] == [
        ("0", "2", "pur_new"), ("1", "3", "pur_a"), ("2", "4", "pur_b"),
    ]  # fmt: skip
    assert {r["standing"] for r in rows} == {"done"}
    assert {r["in_input"] for r in rows} == {"true"}
    show = CliRunner().invoke(cli, ["journal", "show", str(journal), "--json"])
    report = json.loads(show.output)
    assert report["items"] == 3
    assert report["counts"]["not_sent"] == 0
    assert report["attention"] == []
    records = list(read_journal(journal))
    assert [(r.position, r.line, r.purchase_id) for r in records] == [
        (0, 2, "pur_new"), (1, 3, "pur_a"), (2, 4, "pur_b"),
    ]  # fmt: skip
    total = sum((r.amount or Decimal(0) for r in records), Decimal(0))
    assert journal_report(journal).refunded_total == total


def test_covered_by_names_the_carriers_line_in_the_latest_input(tmp_path: Path) -> None:
    """The review's r13: two rows inserted above a transaction group on resume."""
    head = "purchase_id,transaction_id\n"
    group = "pur_demo_ticket,tx_demo\npur_demo_cup,tx_demo\n"
    reason = ("--reason", "event_cancelled")
    _bulk(tmp_path, "run1.csv", head + group, *reason)
    _bulk(tmp_path, "run2.csv", head + "pur_x,\npur_y,\n" + group, *reason)
    rows = _export(tmp_path / "j.db")
    assert [(r["line"], r["purchase_id"], r["standing"], r["covered_by"]) for r in rows] == [
        ("2", "pur_x", "done", ""),
        ("3", "pur_y", "done", ""),
        ("4", "pur_demo_ticket", "done", ""),
        ("5", "pur_demo_cup", "covered", "4"),
    ]


def test_an_item_the_latest_input_lacks_follows_it_with_its_refund(tmp_path: Path) -> None:
    _bulk(tmp_path, "run1.csv", "purchase_id\npur_a\npur_b\n", "--reason", "sold_out")
    _bulk(tmp_path, "run2.csv", "purchase_id\npur_c\npur_a\n", "--reason", "sold_out")
    journal = tmp_path / "j.db"
    records = list(read_journal(journal))
    assert [(r.purchase_id, r.line, r.in_input) for r in records] == [
        ("pur_c", 2, True), ("pur_a", 3, True), ("pur_b", None, False),
    ]  # fmt: skip
    assert records[2].standing == "done"
    assert records[2].refund_id
    report = journal_report(journal)
    assert report.refunded_total == sum((r.amount or Decimal(0) for r in records), Decimal(0))
    assert report.counts["done"] == 3


pool = [f"pur_{i}" for i in range(8)]
inputs = st.lists(st.sampled_from(pool), min_size=1, max_size=6, unique=True)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs=st.lists(inputs, min_size=1, max_size=4), use_async=st.booleans())
def test_records_follow_the_latest_accepted_input(runs: list[list[str]], use_async: bool) -> None:
    """Over random sequences of edited inputs: the records with ``in_input`` are the latest
    accepted input, in order, at positions 0..n-1; every journal item appears exactly once;
    the total is every distinct refund's amount once."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        journal = Path(folder) / "j.db"
        fake = FakePreo(auto_purchases=True)
        latest: list[str] | None = None
        refunds: dict[str, Decimal] = {}

        def run(ids: list[str]) -> None:
            async def go() -> None:
                async with fake.async_client() as client:
                    run = client.purchases.refund_many(ids, reason="sold_out", journal=journal)
                    async for outcome in run:
                        if outcome.refund is not None:
                            refunds[outcome.refund.id] = outcome.refund.amount

            if use_async:
                import asyncio

                asyncio.run(go())
                return
            with fake.client() as client:
                for outcome in client.purchases.refund_many(
                    ids, reason="sold_out", journal=journal
                ):
                    if outcome.refund is not None:
                        refunds[outcome.refund.id] = outcome.refund.amount

        for ids in runs:
            try:
                within_watchdog(lambda ids=ids: run(ids))  # type: ignore[misc]
            except JournalError:
                continue  # an input the journal refuses: nothing of it counts
            latest = ids
        assert latest is not None  # the first run always starts a fresh journal
        records = list(read_journal(journal))
        listed = [r for r in records if r.in_input]
        assert [r.purchase_id for r in listed] == latest
        assert [r.position for r in listed] == list(range(len(latest)))
        assert all(r.line is None for r in records)
        rest = records[len(listed) :]
        assert all(not r.in_input for r in rest)
        seen = [r.purchase_id for r in records]
        assert len(seen) == len(set(seen))  # one record per journal item
        everything = {pid for ids in runs for pid in ids}
        assert set(latest) <= set(seen) <= everything
        report = journal_report(journal)
        assert report.refunded_total == sum(refunds.values(), Decimal(0))
        assert report.counts["not_sent"] == 0


def test_a_resume_skipping_more_items_than_one_batch_lists_them_all(tmp_path: Path) -> None:
    """A resume that sends nothing notes its input in batches (not one commit per item) and
    still lists every item, in the new order."""
    journal = tmp_path / "j.db"
    ids = [f"pur_{i}" for i in range(1300)]
    fake = FakePreo(auto_purchases=True)
    with fake.client() as client:
        first = client.purchases.refund_many(ids, reason="sold_out", journal=journal)
        assert within_watchdog(first.run).succeeded == len(ids)
        again = ["pur_new", *reversed(ids)]
        second = client.purchases.refund_many(again, reason="sold_out", journal=journal)
        summary = within_watchdog(second.run)
    assert summary.succeeded == 1
    records = list(read_journal(journal))
    assert [r.purchase_id for r in records] == again
    assert all(r.in_input and r.standing == "done" for r in records)


@pytest.mark.parametrize("stop_after", [1, 2])
def test_a_run_stopped_early_keeps_the_last_whole_input(tmp_path: Path, stop_after: int) -> None:
    """A run that did not read its whole input noted only part of it: the records follow
    the last input read whole, and the stopped run's new items follow it."""
    journal = tmp_path / "j.db"
    fake = FakePreo(auto_purchases=True)
    with fake.client() as client:
        client.purchases.refund_many(["pur_a", "pur_b", "pur_c"], reason="sold_out",
                                     journal=journal, concurrency=1).run()  # fmt: skip
        edited = ["pur_new", "pur_x", "pur_a", "pur_b", "pur_c"]
        run = client.purchases.refund_many(
            edited, reason="sold_out", journal=journal, concurrency=1
        )
        for done, _ in enumerate(run, 1):
            if done == stop_after:
                break
        run.close()
    records = list(read_journal(journal))
    assert [r.purchase_id for r in records if r.in_input] == ["pur_a", "pur_b", "pur_c"]
    extra = [r for r in records if not r.in_input]
    assert {r.purchase_id for r in extra} <= {"pur_new", "pur_x"}
    assert all(r.line is None for r in extra)
    assert journal_report(journal).refunded_total == sum(
        (r.amount or Decimal(0) for r in records), Decimal(0)
    )
