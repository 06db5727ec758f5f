"""Reading a bulk-run journal without ever writing it: one record per input item, the runs, totals.

No file of the journal is ever written: without a ``-wal`` file beside it the journal is opened
``immutable`` (read-only; nothing is created); with one (a run was killed) a private copy of
the journal and its ``-wal`` is read instead, since SQLite would update the ``-shm`` index of a
WAL journal even in read-only mode. Never migrated, never locked for writing. A journal held
by a running ``refund-bulk`` is refused (its lock file is locked) and so is a damaged one or a
file that is not a preo journal: always a :class:`JournalError`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final, Literal

import attrs

from . import _exceptions
from ._amounts import amount_text, exact_sum
from ._journal import LEGACY_SCHEMA, SCHEMA, JournalError, _refuse_foreign

__all__ = [
    "EXPORT_FIELDS",
    "STANDINGS",
    "JournalRecord",
    "JournalReport",
    "JournalRun",
    "Standing",
    "journal_report",
    "read_journal",
]

Standing = Literal["done", "covered", "failed", "outcome_unknown", "not_sent"]
#: Every standing of an input item, in the order reports list them.
STANDINGS: Final[tuple[Standing, ...]] = (
    "done",
    "covered",
    "failed",
    "outcome_unknown",
    "not_sent",
)
_SQLITE_ERRORS: Final = (sqlite3.Error, UnicodeDecodeError)
_ITEMS: Final = (
    "SELECT position, request, idempotency_key, state, refund_id, amount, error "
    "FROM items ORDER BY position, idempotency_key"
)
_ITEMS_BY_IDENTITY: Final = (  # schema 2 (every journal with noted inputs)
    "SELECT position, request, idempotency_key, state, refund_id, amount, error, identity "
    "FROM items ORDER BY position, idempotency_key"
)


@attrs.frozen(kw_only=True)
class JournalRecord:
    """One input item as the journal knows it (``read_journal`` yields them in input order).

    - ``position`` (0-based) and ``line`` (the input file's line; None when the run was not
      given a file); ``purchase_id``, ``transaction_id``, ``reference``, ``reason``, ``scope``
      and ``requested_amount`` (a ``Decimal`` for the custom scopes, else None): the request.
    - ``standing``: ``done`` (refunded: ``refund_id`` and ``amount``), ``covered`` (by its
      transaction's refund, sent for the item on line ``covered_by``: nothing was sent for it),
      ``failed`` (surely no refund: ``error`` names the class), ``outcome_unknown`` (its request
      may have made a refund: resume the run with the same journal), ``not_sent``.
    - ``refund_id``, ``amount`` (exact), ``refund_status``; ``idempotency_key`` sent;
      ``request_id`` of the answer (quote it to Preo support); ``first_sent_at`` /
      ``answered_at`` (UTC); ``attempts`` made over every run; ``replayed`` (the answer came
      from the server's idempotency store; None when no answer was recorded).
    - ``in_input``: False for an item the journal holds that the latest run's input lacks
      (an earlier run's row, since removed or edited): listed after the input's items, with
      ``line`` None and ``position`` where it was when last sent, so no refund is hidden.
    """

    position: int
    line: int | None
    purchase_id: str
    transaction_id: str | None
    reference: str | None
    reason: str
    scope: str
    requested_amount: Decimal | None
    standing: Standing
    refund_id: str | None
    amount: Decimal | None
    refund_status: str | None
    covered_by: int | None
    idempotency_key: str | None
    request_id: str | None
    error: str | None
    first_sent_at: datetime.datetime | None
    answered_at: datetime.datetime | None
    attempts: int
    replayed: bool | None
    in_input: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: amounts as exact decimal strings (``amount_text``), times ISO 8601."""
        result: dict[str, Any] = {}
        for field in attrs.fields(JournalRecord):
            value = getattr(self, field.name)
            if isinstance(value, Decimal):
                value = amount_text(value)
            elif isinstance(value, datetime.datetime):
                value = value.isoformat()
            result[field.name] = value
        return result


#: The columns of ``preo journal export`` (the fields of a :class:`JournalRecord`, in order).
EXPORT_FIELDS: Final = tuple(field.name for field in attrs.fields(JournalRecord))


@attrs.frozen(kw_only=True)
class JournalRun:
    """One run that held the journal: when it started and ended (None: killed, or the journal
    was written before runs were recorded), its batch id, the attempts it made, the refunds it
    was answered with (replays excluded) and their exact total."""

    run: int
    batch_id: str
    started_at: datetime.datetime | None
    ended_at: datetime.datetime | None
    attempts: int
    refunds: int
    amount: Decimal


@attrs.frozen(kw_only=True)
class JournalReport:
    """A journal at a glance: ``counts`` by standing, ``refunded_total`` (exact, every distinct
    refund of every run), the ``runs``, the ``records`` and those that need ``attention``
    (failed, outcome unknown, not sent)."""

    path: str
    batch_id: str
    closed_cleanly: bool
    counts: dict[str, int]
    refunded_total: Decimal
    runs: tuple[JournalRun, ...]
    records: tuple[JournalRecord, ...]

    @property
    def attention(self) -> tuple[JournalRecord, ...]:
        """The records that need someone: failed, outcome unknown, not sent."""
        return tuple(r for r in self.records if r.standing not in ("done", "covered"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (without the records: ``journal export`` gives those)."""
        return {
            "path": self.path,
            "batch_id": self.batch_id,
            "closed_cleanly": self.closed_cleanly,
            "items": len(self.records),
            "counts": dict(self.counts),
            "refunded_total": amount_text(self.refunded_total),
            "runs": [
                {
                    "run": run.run,
                    "batch_id": run.batch_id,
                    "started_at": _iso(run.started_at),
                    "ended_at": _iso(run.ended_at),
                    "attempts": run.attempts,
                    "refunds": run.refunds,
                    "amount": amount_text(run.amount),
                }
                for run in self.runs
            ],
            "attention": [record.to_dict() for record in self.attention],
        }


def read_journal(path: str | os.PathLike[str]) -> Iterator[JournalRecord]:
    """The journal's input items, in input order, as typed records; never writes to it.

    Everything is read (and checked) when called: :class:`JournalError` for a journal a run
    holds, a damaged one, or a file that is not a preo journal.
    """
    return iter(journal_report(path).records)


def journal_report(path: str | os.PathLike[str]) -> JournalReport:
    """Read the journal at ``path`` (read-only) into a :class:`JournalReport`."""
    shown = Path(path)
    real = Path(os.path.realpath(shown))
    if not real.is_file():
        raise JournalError(f"no journal at {shown}")
    _refuse_foreign(real)
    with _not_held(shown, real):
        try:
            return _read(shown, real)
        except JournalError:
            raise
        except OSError as exc:  # copying a killed run's journal (see _connect)
            raise JournalError(f"cannot read journal {shown}: {exc.strerror or exc}") from None
        except (*_SQLITE_ERRORS, TypeError, ValueError, InvalidOperation, KeyError) as exc:
            raise JournalError(
                f"journal {shown} is damaged or not a preo journal ({' '.join(str(exc).split())})"
            ) from None


@contextlib.contextmanager
def _not_held(shown: Path, real: Path) -> Iterator[None]:
    """Refuse a journal a run holds; hold a shared lock on its lock file while reading, so no
    run starts meanwhile. Creates nothing (a journal no run ever held has no lock file)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no check
        yield
        return
    try:
        fd = os.open(f"{real}.lock", os.O_RDONLY)
    except FileNotFoundError:
        yield
        return
    except OSError as exc:
        raise JournalError(f"cannot read journal {shown}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            owner = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            raise JournalError(
                f"journal {shown} is held by a running refund-bulk (pid {owner}): read it "
                "when that run has finished"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the shared lock


def _connect(real: Path, stack: contextlib.ExitStack) -> sqlite3.Connection:
    """A connection that writes no file of the journal. Everything in the file (no -wal):
    ``immutable``, which creates nothing. A -wal beside it (a killed run): SQLite would
    rebuild its -shm index even read-only, so read a private copy of the file and its -wal
    (consistent: no run can start while the caller holds the shared lock)."""
    wal = Path(f"{real}-wal")
    if not wal.exists():
        uri = f"{real.as_uri()}?mode=ro&immutable=1"
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="preo-journal-")))
    copy = folder / "journal"
    shutil.copyfile(real, copy)
    with contextlib.suppress(FileNotFoundError):  # checkpointed meanwhile: all in the file
        shutil.copyfile(wal, f"{copy}-wal")
    return sqlite3.connect(copy, isolation_level=None, check_same_thread=False)


def _read(shown: Path, real: Path) -> JournalReport:
    with contextlib.ExitStack() as stack:
        db = stack.enter_context(contextlib.closing(_connect(real, stack)))
        check = [str(row[0]) for row in db.execute("PRAGMA quick_check(3)")]
        if check != ["ok"]:
            raise JournalError(f"journal {shown} is damaged ({' '.join('; '.join(check).split())})")
        db.execute("BEGIN")  # one snapshot for every table
        tables = {str(row[0]) for row in db.execute("SELECT name FROM sqlite_master")}
        if not {"meta", "items"} <= tables:
            raise JournalError(f"{shown} is not a preo journal (no meta and items tables)")
        meta = {str(k): str(v) for k, v in db.execute("SELECT name, value FROM meta")}
        # a journal no run has opened since the identity schema came is read as it is
        if meta.get("schema") not in (SCHEMA, LEGACY_SCHEMA) or "run_id" not in meta:
            raise JournalError(
                f"{shown} is not a preo journal of schema {SCHEMA} (found {meta.get('schema')!r})"
            )
        # the input of the last run that read its input whole (else of the last run): which
        # item sits at each position, and its line (journals from before runs noted their
        # input have only the first line recorded per position, in ``inputs``)
        chosen = _input_run(db, meta) if "run_inputs" in tables else None
        noted = (
            db.execute(
                "SELECT position, identity, purchase_id, line FROM run_inputs WHERE run = ? "
                "ORDER BY position",
                (chosen,),
            ).fetchall()
            if chosen is not None
            else []
        )
        items = db.execute(_ITEMS_BY_IDENTITY if noted else _ITEMS).fetchall()
        inputs = dict(db.execute("SELECT position, line FROM inputs")) if "inputs" in tables else {}
        attempts = (
            db.execute(
                "SELECT run, idempotency_key, sent_at, answered_at, outcome, request_id, "
                "refund_id, amount, refund_status, replayed FROM attempts ORDER BY id"
            ).fetchall()
            if "attempts" in tables
            else []
        )
        carriers = (
            dict(db.execute("SELECT name, idempotency_key FROM groups").fetchall())
            if "groups" in tables
            else {}
        )
        runs = (
            db.execute(
                "SELECT run, started_at, ended_at, batch_id FROM runs ORDER BY run"
            ).fetchall()
            if "runs" in tables
            else []
        )
    return _report(shown, meta, items, inputs, attempts, runs, noted, carriers)


def _input_run(db: sqlite3.Connection, meta: dict[str, str]) -> int | None:
    """The run whose input the records follow: the last that read its input whole, else the
    last that noted any item of it (None: no run did; lines alone do not place items)."""
    marked = meta.get("input_run", "")
    if marked.isdigit() and marked.isascii():
        found = db.execute(
            "SELECT 1 FROM run_inputs WHERE run = ? AND identity IS NOT NULL LIMIT 1",
            (int(marked),),
        )
        if found.fetchone() is not None:
            return int(marked)
    latest = db.execute("SELECT MAX(run) FROM run_inputs WHERE identity IS NOT NULL").fetchone()
    return None if latest is None or latest[0] is None else int(latest[0])


@attrs.define
class _Trail:
    """What the attempts of one idempotency key say."""

    attempts: int = 0
    first_sent_at: str | None = None
    answered_at: str | None = None
    request_id: str | None = None
    refund_status: str | None = None
    replayed: bool | None = None


def _trails(attempts: list[tuple[Any, ...]]) -> dict[str, _Trail]:
    trails: dict[str, _Trail] = {}
    for _, key, sent_at, answered_at, outcome, request_id, _, _, status, replayed in attempts:
        trail = trails.setdefault(str(key), _Trail())
        trail.attempts += 1
        trail.first_sent_at = trail.first_sent_at or sent_at
        trail.answered_at = answered_at
        trail.request_id = request_id or trail.request_id
        if outcome == "Refund":
            trail.refund_status, trail.replayed = status, bool(replayed)
            trail.request_id = request_id
    return trails


def _standing(state: str, error: str | None) -> Standing:
    """An item's standing from its journal state and error class name. ``failed`` only for an
    error class of ``_exceptions`` that is not outcome-unknown (surely no refund); any other
    failure (an unknown class, ``ItemFailedError``, ``CoveringRefundUnknownError``) and an
    item still ``started`` (in flight at a stop) are ``outcome_unknown``: conservative."""
    if state == "done":
        return "done"
    if state == "covered":
        return "covered"
    cls = getattr(_exceptions, error or "", None) if state == "failed" else None
    if (
        isinstance(cls, type)
        and issubclass(cls, _exceptions.PreoError)
        and not issubclass(cls, _exceptions.RefundOutcomeUnknownError)
    ):
        return "failed"
    return "outcome_unknown"


def _report(
    shown: Path,
    meta: dict[str, str],
    items: list[tuple[Any, ...]],
    inputs: dict[int, int],
    attempts: list[tuple[Any, ...]],
    runs: list[tuple[Any, ...]],
    noted: list[tuple[Any, ...]],
    carriers: dict[str, str] | None = None,
) -> JournalReport:
    trails = _trails(attempts)
    records = (
        _by_noted_input(shown, items, noted, trails)
        if noted
        else _by_position(shown, items, inputs, trails)
    )
    if carriers:
        records = _through_groups(records, items, carriers)
    counts: dict[str, int] = dict.fromkeys(STANDINGS, 0)
    refunds: dict[str, Decimal] = {}
    for record in records:
        counts[record.standing] += 1
        if record.standing == "done" and record.refund_id is not None and record.amount:
            refunds.setdefault(record.refund_id, record.amount)
    return JournalReport(
        path=str(shown),
        batch_id=meta["run_id"],
        closed_cleanly=meta.get("clean") != "0",
        counts=counts,
        refunded_total=exact_sum(refunds.values()),
        runs=tuple(_runs(runs, attempts, meta["run_id"])),
        records=tuple(records),
    )


def _by_noted_input(
    shown: Path,
    items: list[tuple[Any, ...]],
    noted: list[tuple[Any, ...]],
    trails: dict[str, _Trail],
) -> list[JournalRecord]:
    """One record per item of the chosen run's input, in its order, at its position and
    line; then the journal's items that input lacks (``in_input`` False, no line)."""
    by_identity = {str(row[7]): row for row in items}
    where: dict[str, int] = {}  # identity -> its line (or 1-based position) in this input
    for position, identity, _, line in noted:
        if identity is not None:
            where.setdefault(str(identity), int(position) + 1 if line is None else int(line))
    carriers: dict[str, int | None] = {}  # key -> where its carrier is in this input
    for _, _, key, state, *_, identity in items:
        if state != "covered":
            carriers.setdefault(str(key), where.get(str(identity)))
    records: list[JournalRecord] = []
    for position, identity, purchase_id, line in noted:
        row = None if identity is None else by_identity.get(str(identity))
        if row is None:  # read but not recorded (invalid, or never started)
            records.append(_not_sent(int(position), line, purchase_id))
            continue
        records.append(_record(shown, row, int(position), line, carriers, trails))
    listed = {str(identity) for _, identity, _, _ in noted if identity is not None}
    records.extend(
        _record(shown, row, int(row[0]), None, carriers, trails, in_input=False)
        for row in items
        if str(row[7]) not in listed
    )
    return records


def _by_position(
    shown: Path, items: list[tuple[Any, ...]], inputs: dict[int, int], trails: dict[str, _Trail]
) -> list[JournalRecord]:
    """A journal no run noted the input of: items by the position they were last sent at,
    lines from ``inputs`` (as first recorded for each position)."""
    # Items are keyed by identity (content and ordinal): after a resume with an edited input
    # two items may carry one position (an earlier run's row and this run's), and both are kept.
    by_position: dict[int, list[tuple[Any, ...]]] = {}
    for row in items:
        by_position.setdefault(int(row[0]), []).append(row)
    carriers: dict[str, int | None] = {}
    for position, _, key, state, *_ in items:
        if state != "covered":
            carriers.setdefault(str(key), inputs.get(int(position), int(position) + 1))
    records: list[JournalRecord] = []
    for position in sorted({*by_position, *inputs}):
        line = inputs.get(position)
        rows = by_position.get(position)
        if not rows:
            records.append(_not_sent(position, line))
            continue
        records.extend(_record(shown, row, position, line, carriers, trails) for row in rows)
    return records


def _through_groups(
    records: list[JournalRecord], items: list[tuple[Any, ...]], carriers: dict[str, str]
) -> list[JournalRecord]:
    """Rows of a transaction group read through the group's carrier (``carriers``: group name
    -> the key that carries its refund). A refused row whose group another row took over is
    ``covered`` when that row's refund is done and ``outcome_unknown`` while it may exist (its
    transaction may be refunded: never "surely no refund"); a covered row keeping a key of
    its own names the carrier's line in ``covered_by``."""
    from ._bulk_items import group_of_request  # pure; only for journals with groups

    group_of_key: dict[str, str] = {}
    for row in items:
        name = group_of_request(str(row[1]))
        if name is not None:
            group_of_key[str(row[2])] = name
    by_key = {r.idempotency_key: r for r in records if r.standing != "covered"}
    result: list[JournalRecord] = []
    for record in records:
        name = group_of_key.get(record.idempotency_key or "")
        carrier_key = carriers.get(name) if name is not None else None
        carrier = by_key.get(carrier_key) if carrier_key else None
        if carrier is None or carrier_key == record.idempotency_key:
            result.append(record)
            continue
        where = carrier.line if carrier.line is not None else carrier.position + 1
        if record.standing == "covered" and record.covered_by is None:
            record = attrs.evolve(record, covered_by=where)
        elif record.standing == "failed" and carrier.standing == "done":
            record = attrs.evolve(record, standing="covered", covered_by=where)
        elif record.standing == "failed" and carrier.standing == "outcome_unknown":
            record = attrs.evolve(
                record, standing="outcome_unknown", error="CoveringRefundUnknownError"
            )
        result.append(record)
    return result


def _not_sent(position: int, line: int | None, purchase_id: object = None) -> JournalRecord:
    return JournalRecord(
        position=position, line=line, purchase_id=_text(purchase_id) or "",
        transaction_id=None, reference=None, reason="", scope="", requested_amount=None,
        standing="not_sent", refund_id=None,
        amount=None, refund_status=None, covered_by=None, idempotency_key=None,
        request_id=None, error=None, first_sent_at=None, answered_at=None, attempts=0,
        replayed=None,
    )  # fmt: skip


def _record(
    shown: Path,
    row: tuple[Any, ...],
    position: int,
    line: int | None,
    carriers: dict[str, int | None],
    trails: dict[str, _Trail],
    *,
    in_input: bool = True,
) -> JournalRecord:
    """The record of one journal item (``row``) at ``position`` and ``line``; ``carriers``
    gives the line (or 1-based position) of each key's carrier, for ``covered_by``."""
    _, request_text, key, state, refund_id, amount, error = row[:7]
    try:
        request = json.loads(request_text)
        if not isinstance(request, dict):
            raise TypeError
        requested = _decimal(request.get("amount"))
        recorded = _decimal(amount)
    except (TypeError, ValueError, InvalidOperation):
        raise JournalError(
            f"journal {shown} is damaged: the entry of input item {int(row[0]) + 1} is not "
            "one this library writes",
            position=int(row[0]),
        ) from None
    covered = state == "covered"
    carrier = carriers.get(str(key)) if covered else None  # its line (or 1-based position)
    trail = trails.get(str(key), _Trail()) if not covered else _Trail()
    return JournalRecord(
        position=position,
        line=line,
        purchase_id=str(request.get("purchase_id", "")),
        transaction_id=_text(request.get("transaction_id")),
        reference=_text(request.get("reference")),
        reason=str(request.get("reason", "")),
        scope=str(request.get("scope", "")),
        requested_amount=requested,
        standing=_standing(str(state), _text(error)),
        refund_id=_text(refund_id),
        amount=None if covered else recorded,
        refund_status=trail.refund_status,
        covered_by=carrier,
        idempotency_key=_text(key),
        request_id=trail.request_id,
        error=_text(error),
        first_sent_at=_time(trail.first_sent_at),
        answered_at=_time(trail.answered_at),
        attempts=trail.attempts,
        replayed=trail.replayed,
        in_input=in_input,
    )


def _runs(
    runs: list[tuple[Any, ...]], attempts: list[tuple[Any, ...]], batch_id: str
) -> Iterator[JournalRun]:
    for number, started_at, ended_at, run_batch in runs:
        mine = [a for a in attempts if a[0] == number]
        fresh = {a[6]: _decimal(a[7]) or Decimal(0) for a in mine if a[4] == "Refund" and not a[9]}
        yield JournalRun(
            run=int(number),
            batch_id=str(run_batch or batch_id),
            started_at=_time(started_at),
            ended_at=_time(ended_at),
            attempts=len(mine),
            refunds=len(fresh),
            amount=sum(fresh.values(), Decimal(0)),
        )


def _decimal(value: object) -> Decimal | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("not a decimal string")
    return Decimal(value)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _time(value: object) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.fromisoformat(value)
    except ValueError:
        return None


def _iso(value: datetime.datetime | None) -> str | None:
    return None if value is None else value.isoformat()
