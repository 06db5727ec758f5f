"""The journal as the audit trail: ``preo journal show`` / ``export`` and ``read_journal`` read it
without writing, per input item, across killed and resumed runs."""

from __future__ import annotations

import collections
import contextlib
import csv
import hashlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preo_client import JournalError, JournalRecord, read_journal
from preo_client._cli import cli
from preo_client._journal import Journal
from preo_client._journal_reader import EXPORT_FIELDS, journal_report
from preo_client.testing import FakePreo, Fault, serve
from tests.test_cli import PREO, _journal_rows, env_for

COUNT = 300
ISSUE_FIELDS = (
    "line", "purchase_id", "transaction_id", "reason", "scope", "requested_amount", "standing",
    "refund_id", "amount", "refund_status", "covered_by", "idempotency_key", "request_id",
    "error", "first_sent_at", "answered_at", "attempts", "replayed",
)  # fmt: skip


def _answers(fake: FakePreo) -> dict[str, set[str]]:
    """Record the request id of every 2xx the sandbox answers, per idempotency key."""
    sent: dict[str, set[str]] = collections.defaultdict(set)
    handle = fake.handle
    lock = threading.Lock()

    def recording(request: httpx.Request) -> httpx.Response:
        response = handle(request)
        if response.is_success:
            with lock:
                sent[request.headers["idempotency-key"]].add(response.headers["x-request-id"])
        return response

    fake.handle = recording  # type: ignore[method-assign]
    return sent


def _bulk_until_killed(command: list[str], url: str, journal: Path, threshold: int) -> bool:
    """Run ``command``; kill -9 it once the journal holds ``threshold`` items. True if killed.
    A run that ended by itself first must have ended well (else its output is the failure)."""
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(command, env=env_for(url), stdout=output, stderr=output)
        try:
            deadline = time.monotonic() + 60
            while _journal_rows(journal) < threshold and proc.poll() is None:
                assert time.monotonic() < deadline, "the run hung"  # watchdog
                time.sleep(0.005)
            killed = proc.poll() is None
            if killed:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            if not killed:
                output.seek(0)
                text = output.read().decode(errors="replace")[-3000:]
                assert proc.returncode in (0, 1), f"exit {proc.returncode}: {text}"
            return killed
        finally:
            if proc.poll() is None:
                proc.kill()


@settings(
    max_examples=3,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(points=st.lists(st.integers(5, COUNT * 2 // 3), min_size=1, max_size=2, unique=True))
def test_killed_and_resumed_run_exports_every_item_with_the_sandbox_ledger(
    points: list[int],
) -> None:
    fake = FakePreo()
    for i in range(COUNT):
        fake.add_purchase(f"pur_{i}", price="10.00", fees=f"0.{i % 100:02d}")
    answers = _answers(fake)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = folder / "cancel.csv"
        source.write_text("purchase_id\n" + "".join(f"pur_{i}\n" for i in range(COUNT)))
        journal = folder / "cancel.journal"
        command = [PREO, "refund-bulk", str(source), "--reason", "event_cancelled",
                   "--concurrency", "8", "--journal", str(journal)]  # fmt: skip
        fake.chaos(0.05, seed=len(points), faults=[Fault.read_timeout()])  # unknown outcomes
        # slow enough that the run cannot end before it is killed (it once did, in CI, once
        # the call path got faster): 300 answers / 8 workers x 10 ms is about 0.4 s at least
        fake.set_latency(0.01)
        with serve(fake) as server:
            kills = [
                _bulk_until_killed(command, server.url, journal, threshold)
                for threshold in sorted(points)
            ]
            assert any(kills), points  # at least one run really died mid-way
            fake.chaos(0.0, seed=0)
            fake.set_latency(0.0)
            final = subprocess.run(command, env=env_for(server.url), capture_output=True,
                                   text=True, timeout=120, check=False)  # fmt: skip
            assert final.returncode == 0, final.stdout + final.stderr
        exported = subprocess.run(
            [PREO, "journal", "export", str(journal), "--format", "jsonl"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert exported.returncode == 0, exported.stderr
        shown = subprocess.run([PREO, "journal", "show", str(journal), "--json"],
                               capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        records = list(read_journal(journal))
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert rows == [record.to_dict() for record in records]
    assert len(rows) == COUNT
    assert [r["line"] for r in rows] == list(range(2, COUNT + 2))  # input order, file lines
    assert [r["purchase_id"] for r in rows] == [f"pur_{i}" for i in range(COUNT)]
    ledger = {r.id: r for r in fake.refunds}
    assert len(ledger) == COUNT  # one refund per purchase: the resume paid nothing twice
    for record in records:
        assert record.standing == "done"
        assert record.refund_id in ledger
        entry = ledger[record.refund_id]
        assert entry.purchase_id == record.purchase_id
        assert record.amount == entry.amount
        assert record.idempotency_key == entry.idempotency_key
        assert record.request_id in answers[entry.idempotency_key]  # the one the sandbox sent
        assert record.attempts >= 1
        assert record.first_sent_at is not None
        assert record.answered_at is not None
        assert record.first_sent_at <= record.answered_at
        assert record.refund_status == "requested"
    total = sum((r.amount for r in fake.refunds), Decimal(0))
    assert sum((r.amount or Decimal(0) for r in records), Decimal(0)) == total
    report = json.loads(shown.stdout)
    assert Decimal(report["refunded_total"]) == total
    assert report["counts"]["done"] == COUNT
    assert report["attention"] == []
    # a run killed before it opened the journal leaves no trace: at most one per start
    assert 2 <= len(report["runs"]) <= len(points) + 1
    assert all(run["started_at"] for run in report["runs"])
    assert report["runs"][-1]["ended_at"] is not None


# -- unit cases ------------------------------------------------------------------------------


def _run(tmp_path: Path, rows: str, *extra: str, fake: FakePreo | None = None) -> Path:
    source = tmp_path / "in.csv"
    source.write_text(rows)
    journal = tmp_path / "j.db"
    fake = fake or FakePreo.demo(auto_purchases=True)
    with serve(fake) as server:
        result = CliRunner().invoke(
            cli, ["refund-bulk", str(source), "--journal", str(journal), "--overwrite", *extra],
            env={"PREO_API_KEY": fake.api_key, "PREO_BASE_URL": server.url},
        )  # fmt: skip
    assert result.exit_code in (0, 1), result.output
    return journal


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_reading_never_writes(tmp_path: Path) -> None:
    journal = _run(tmp_path, "purchase_id\npur_a\npur_b\n", "--reason", "sold_out")
    before = _snapshot(tmp_path)
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    list(read_journal(journal))
    result = CliRunner().invoke(cli, ["journal", "show", str(journal)])
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(cli, ["journal", "export", str(journal)]).exit_code == 0
    assert _snapshot(tmp_path) == before  # no -wal, -shm or lock file made, nothing changed
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamps


def test_export_csv_has_every_issue_field_in_input_order(tmp_path: Path) -> None:
    fake = FakePreo()
    fake.add_purchase("pur_1", price="7.00")
    fake.add_purchase("pur_c", price="9.00")
    fake.add_purchase("pur_t1", price="5.00", transaction_id="tx1")
    fake.add_purchase("pur_t2", price="6.00", transaction_id="tx1")
    journal = _run(
        tmp_path,
        "purchase_id,transaction_id,reason,amount\n"
        "pur_1,,sold_out,\npur_missing_404,,sold_out,\npur_t1,tx1,event_cancelled,\n"
        "pur_t2,tx1,event_cancelled,\npur_c,,compensation,2.50\n",
        fake=fake,
    )
    output = tmp_path / "export.csv"
    result = CliRunner().invoke(cli, ["journal", "export", str(journal), "-o", str(output)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(output.read_text())))
    assert tuple(rows[0]) == EXPORT_FIELDS
    assert set(ISSUE_FIELDS) <= set(EXPORT_FIELDS)
    assert [r["line"] for r in rows] == ["2", "3", "4", "5", "6"]
    by_id = {r["purchase_id"]: r for r in rows}
    assert by_id["pur_1"]["standing"] == "done"
    assert by_id["pur_missing_404"]["standing"] == "failed"
    assert by_id["pur_missing_404"]["error"] == "NotFoundError"
    assert by_id["pur_t1"]["standing"] == "done"
    assert by_id["pur_t2"]["standing"] == "covered"
    assert by_id["pur_t2"]["covered_by"] == "4"  # the line of the row whose request covers it
    assert by_id["pur_t2"]["refund_id"] == by_id["pur_t1"]["refund_id"]
    assert by_id["pur_t2"]["amount"] == ""  # counted once, on the row that carried it
    assert by_id["pur_c"]["requested_amount"] == "2.50"
    assert by_id["pur_c"]["amount"] == "2.50"
    report = journal_report(journal)
    assert report.counts == {"done": 3, "covered": 1, "failed": 1, "outcome_unknown": 0,
                             "not_sent": 0}  # fmt: skip
    expected = sum(Decimal(by_id[p]["amount"]) for p in ("pur_1", "pur_t1", "pur_c"))
    assert report.refunded_total == expected
    assert [r.purchase_id for r in report.attention] == ["pur_missing_404"]


def test_a_run_holding_the_journal_is_refused(tmp_path: Path) -> None:
    journal = _run(tmp_path, "purchase_id\npur_a\n", "--reason", "sold_out")
    held = Journal(journal)
    try:
        with pytest.raises(JournalError, match="held by a running refund-bulk"):
            read_journal(journal)
        result = CliRunner().invoke(cli, ["journal", "show", str(journal), "--json"])
        assert result.exit_code == 2
        assert json.loads(result.output)["error"]["type"] == "JournalError"
    finally:
        held.close()
    assert len(list(read_journal(journal))) == 1


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"not a database at all"),
        lambda p: p.write_bytes(p.read_bytes()[:1500]),
        lambda p: p.write_bytes(p.read_bytes()[:100] + b"\xff" * 400 + p.read_bytes()[500:]),
        lambda p: p.unlink(),
    ],
    ids=["garbage", "truncated", "flipped", "missing"],
)
def test_a_damaged_journal_is_a_journal_error(
    tmp_path: Path, damage: Callable[[Path], object]
) -> None:
    journal = _run(tmp_path, "purchase_id\npur_a\npur_b\n", "--reason", "sold_out")
    damage(journal)
    with pytest.raises(JournalError):
        read_journal(journal)
    result = CliRunner().invoke(cli, ["journal", "export", str(journal)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_a_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE t (x)")
        db.commit()
    with pytest.raises(JournalError, match="not a preo journal"):
        read_journal(path)


def _old_journal(path: Path) -> None:
    """A journal as the version before the audit trail wrote it (meta and items only)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute(
            "CREATE TABLE items (position INTEGER PRIMARY KEY, request TEXT NOT NULL, "
            "idempotency_key TEXT NOT NULL, state TEXT NOT NULL, refund_id TEXT, amount TEXT, "
            "error TEXT)"
        )
        db.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("schema", "preo-bulk-journal/1"), ("run_id", "old-batch"), ("clean", "1")],
        )
        request = {"purchase_id": "pur_1", "reason": "sold_out", "scope": "purchase_full",
                   "amount": None, "comment": None, "pickup_point_id": None,
                   "reference": None}  # fmt: skip
        db.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (0, json.dumps(request), "k0", "done", "rr_1", "28.50", None),
                (1, json.dumps({**request, "purchase_id": "pur_2"}), "k1", "failed", None,
                 None, "InternalServerOutcomeUnknownError"),
                (2, json.dumps({**request, "purchase_id": "pur_3"}), "k2", "failed", None,
                 None, "NotFoundError"),
                (3, json.dumps({**request, "purchase_id": "pur_4"}), "k3", "started", None,
                 None, None),
                (4, json.dumps({**request, "purchase_id": "pur_5"}), "k4", "failed", None,
                 None, "ItemFailedError"),
            ],
        )  # fmt: skip
        db.commit()


def test_an_old_journal_reads_and_then_migrates_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _old_journal(path)
    before = path.read_bytes()
    records = list(read_journal(path))
    assert path.read_bytes() == before  # reading migrates nothing
    assert [r.standing for r in records] == [
        "done", "outcome_unknown", "failed", "outcome_unknown", "outcome_unknown",
    ]  # fmt: skip
    assert records[0].amount == Decimal("28.50")
    assert records[0].line is None
    assert records[0].attempts == 0
    for _ in range(2):  # a run opens it (adds the audit tables), twice: idempotent
        journal = Journal(path)
        journal.record_inputs([2, 3, 4, 5, 6, 7])
        journal.close()
    report = journal_report(path)
    assert [r.line for r in report.records] == [2, 3, 4, 5, 6, 7]
    assert report.records[-1].standing == "not_sent"
    assert report.counts["not_sent"] == 1
    assert len(report.runs) == 2
    assert all(run.ended_at is not None for run in report.runs)
    assert report.refunded_total == Decimal("28.50")


def test_every_attempt_is_recorded(tmp_path: Path) -> None:
    fake = FakePreo.demo(auto_purchases=True)
    fake.inject(Fault.http_status(503, retry_after="0"), Fault.http_status(429, retry_after="0"))
    journal = _run(tmp_path, "purchase_id\npur_a\n", "--reason", "sold_out",
                   "--concurrency", "1", fake=fake)  # fmt: skip
    with contextlib.closing(sqlite3.connect(f"file:{journal}?mode=ro", uri=True)) as db:
        outcomes = [row[0] for row in db.execute("SELECT outcome FROM attempts ORDER BY id")]
    assert outcomes == ["InternalServerError", "RateLimitError", "Refund"]
    (record,) = read_journal(journal)
    assert record.attempts == 3
    assert record.standing == "done"
    assert record.replayed is False
    assert isinstance(record, JournalRecord)


def test_export_to_the_journal_itself_is_refused(tmp_path: Path) -> None:
    journal = _run(tmp_path, "purchase_id\npur_a\n", "--reason", "sold_out")
    before = journal.read_bytes()
    result = CliRunner().invoke(cli, ["journal", "export", str(journal), "-o", str(journal)])
    assert result.exit_code == 2
    assert journal.read_bytes() == before


def test_record_to_dict_is_json_with_exact_amounts() -> None:
    fields: dict[str, Any] = dict.fromkeys(EXPORT_FIELDS)
    fields.update(position=0, purchase_id="p", reason="compensation", scope="purchase_custom",
                  standing="done", attempts=1, amount=Decimal("12.50"),
                  requested_amount=Decimal("12.5"))  # fmt: skip
    data = JournalRecord(**fields).to_dict()
    assert data["amount"] == "12.50"
    assert data["requested_amount"] == "12.50"
    json.dumps(data)


@pytest.mark.parametrize("args", [["journal"], ["journal", "show"], ["journal", "export"]])
def test_journal_help(args: list[str]) -> None:
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert result.exit_code == 0
    assert "Usage: " in result.output


def test_the_sync_bulk_run_records_its_attempts_too(tmp_path: Path) -> None:
    fake = FakePreo.demo(auto_purchases=True)
    fake.inject(Fault.http_status(503, retry_after="0"))
    journal = tmp_path / "sync.db"
    with fake.client() as client:
        summary = client.purchases.refund_many(
            ["pur_1", "pur_2"], reason="sold_out", journal=journal, concurrency=1
        ).run()
    assert summary.succeeded == 2
    records = list(read_journal(journal))
    assert [r.attempts for r in records] == [2, 1]
    assert [r.line for r in records] == [None, None]  # no input file: positions only
    assert all(r.request_id and r.request_id.startswith("req_") for r in records)


def test_a_killed_run_reads_without_being_resumed(tmp_path: Path) -> None:
    """After kill -9 (no run holds it, -wal beside it) the journal reads as it stands, and
    reading changes neither the file nor its -wal."""
    count = 200
    fake = FakePreo.demo(auto_purchases=True)
    fake.set_latency(0.02)  # long enough for the test to kill it mid-run under load
    source = tmp_path / "in.csv"
    source.write_text("purchase_id\n" + "".join(f"pur_{i}\n" for i in range(count)))
    journal = tmp_path / "j.db"
    command = [PREO, "refund-bulk", str(source), "--reason", "sold_out", "--journal",
               str(journal), "--concurrency", "4"]  # fmt: skip
    with serve(fake) as server:
        killed = _bulk_until_killed(command, server.url, journal, 40)
    assert killed
    wal, shm = Path(f"{journal}-wal"), Path(f"{journal}-shm")
    before = {p: p.read_bytes() for p in (journal, wal, shm) if p.exists()}
    assert wal in before
    report = journal_report(journal)
    assert {p: p.read_bytes() for p in before} == before  # -shm too: no file is written
    for args in (["show", "--json"], ["export", "--format", "jsonl"]):
        result = CliRunner().invoke(cli, ["journal", args[0], str(journal), *args[1:]])
        assert result.exit_code == 0, result.output
    assert len(list(read_journal(journal))) == count
    assert {p: p.read_bytes() for p in (journal, wal, shm) if p.exists()} == before
    assert not report.closed_cleanly
    assert report.runs[0].ended_at is None  # killed: never ended
    assert len(report.records) == count  # every input line is known, sent or not
    assert report.counts["not_sent"] >= 1
    assert report.counts["done"] >= 1
    assert sum(report.counts.values()) == count
    done = [r for r in report.records if r.standing == "done"]
    assert report.refunded_total == sum((r.amount or Decimal(0) for r in done), Decimal(0))
