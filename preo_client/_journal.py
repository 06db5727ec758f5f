"""The bulk-run journal: an SQLite file, held by one run, with each item's key before it is sent.

Layout (schema ``preo-bulk-journal/1``): ``meta`` (``schema``, ``run_id``) and ``items``, one row
per input position with the item's canonical request, its idempotency key, its state
(``started`` / ``done`` / ``covered`` / ``failed``) and, when done, the refund id and amount;
``groups`` (made on first use) names, per transaction group, the row whose key carries the
group's refund, committed before that row's request is sent.

Durability: WAL with ``synchronous=NORMAL``. Every commit is in the OS page cache (the WAL file)
when ``commit()`` returns, so it survives the death of the process (``kill -9``, a crash),
which is the threat here; only a power loss or kernel crash could lose the last commits. An
item's row is committed *before* its request is sent, so a resumed run resends it with the same
key. One run holds the journal at a time: an exclusive ``flock`` on ``PATH.lock`` (released by
the OS when the process dies, so a killed run never leaves a stale lock).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import uuid
import weakref
from pathlib import Path
from typing import Final, NamedTuple

from ._exceptions import PreoError

__all__ = ["SCHEMA", "Journal", "JournalEntry", "JournalError"]

SCHEMA: Final = "preo-bulk-journal/1"
_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_COLUMNS: Final = (
    "position",
    "request",
    "idempotency_key",
    "state",
    "refund_id",
    "amount",
    "error",
)
_CREATE: Final = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS items (position INTEGER PRIMARY KEY, request TEXT NOT NULL, "
    "idempotency_key TEXT NOT NULL, state TEXT NOT NULL, refund_id TEXT, amount TEXT, "
    "error TEXT)",
)


class JournalError(PreoError, ValueError):
    """A journal that cannot be used: held by another run, damaged, another format, or an
    input that differs from what it recorded (``position``: that item's 0-based index)."""

    def __init__(self, message: str, *, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


class JournalEntry(NamedTuple):
    """What an earlier run recorded for one input position."""

    request: str
    idempotency_key: str
    state: str
    refund_id: str | None
    amount: str | None
    error: str | None = None  # the error class name of a failed item


class _Lock:
    """An exclusive, non-blocking lock on ``PATH.lock`` holding the owner's pid."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _lock_fd(fd)
        except OSError:
            owner = "unknown"
            with contextlib.suppress(OSError):
                owner = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise JournalError(
                f"journal {path.with_suffix('')} in use by another run (pid {owner})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        # a run dropped without being iterated or closed still releases its lock when collected
        self._finalizer = weakref.finalize(self, os.close, fd)

    def release(self) -> None:
        self._finalizer()  # closing the descriptor releases the lock (once)


def _lock_fd(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined,unused-ignore]
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _refuse_foreign(path: Path) -> None:
    """Refuse a file that is not an SQLite database (an old JSON-lines journal, garbage)."""
    try:
        with path.open("rb") as data:
            head = data.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise JournalError(f"cannot read journal {path}: {exc.strerror}") from None
    if not head or head == _SQLITE_MAGIC:
        return
    if head.lstrip().startswith(b"{"):
        raise JournalError(
            f"{path} is a journal in the old JSON-lines format, which cannot be resumed safely "
            "(it identified items by purchase id and reference only). Finish that run with the "
            "preo-client version that wrote it, or move the file away and start a new journal "
            "(with the same --batch-id as before if you set one)."
        )
    raise JournalError(f"{path} is not a preo journal (not an SQLite database)")


class Journal:
    """The journal of one bulk run at ``path``; raises :class:`JournalError` if unusable.

    ``batch_id`` fixes the run id (and so every derived key); a journal made with another
    batch id is refused. Thread-safe.
    """

    def __init__(self, path: str | Path, *, batch_id: str | None = None) -> None:
        self.path = Path(path)
        _refuse_foreign(self.path)
        try:
            self._lock_file = _Lock(Path(f"{self.path}.lock"))
        except OSError as exc:
            raise JournalError(f"cannot lock journal {self.path}: {exc.strerror}") from None
        self._mutex = threading.Lock()
        self._groups_ready = False
        try:
            self._db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=0
            )
        except sqlite3.Error as exc:
            self._lock_file.release()
            raise JournalError(f"cannot open journal {self.path}: {exc}") from None
        # a journal dropped without close() is still closed (and unlocked) when collected
        self._finalizer = weakref.finalize(self, _shut, self._db, self._lock_file)
        try:
            self.run_id = self._setup(batch_id)
        except BaseException:
            self.close()
            raise

    def _setup(self, batch_id: str | None) -> str:
        db = self._db
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            if tables and not {"meta", "items"} <= tables:
                raise JournalError(f"{self.path} is not a preo journal (unknown tables)")
            with db:
                db.execute("BEGIN IMMEDIATE")
                for statement in _CREATE:
                    db.execute(statement)
                meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
                if not meta:
                    meta = {"schema": SCHEMA, "run_id": batch_id or str(uuid.uuid4())}
                    db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            columns = tuple(row[1] for row in db.execute("PRAGMA table_info(items)"))
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path} is not a usable preo journal: {exc}") from None
        if meta.get("schema") != SCHEMA or columns != _COLUMNS or "run_id" not in meta:
            raise JournalError(
                f"{self.path} is not a preo journal of schema {SCHEMA} "
                f"(found {meta.get('schema')!r})"
            )
        if batch_id is not None and meta["run_id"] != batch_id:
            raise JournalError(
                f"journal {self.path} belongs to batch {meta['run_id']!r}, not {batch_id!r}"
            )
        return str(meta["run_id"])

    def _execute(self, sql: str, parameters: tuple[object, ...] = ()) -> sqlite3.Cursor:
        with self._mutex:
            try:
                return self._db.execute(sql, parameters)
            except sqlite3.Error as exc:  # disk full, file removed, ...: never send unjournaled
                raise JournalError(f"journal {self.path} failed: {exc}") from exc

    def recorded(self, position: int) -> JournalEntry | None:
        """What an earlier run recorded at input ``position``, if anything."""
        row = self._execute(
            "SELECT request, idempotency_key, state, refund_id, amount, error FROM items "
            "WHERE position = ?",
            (position,),
        ).fetchone()
        return None if row is None else JournalEntry(*row)

    def is_empty(self) -> bool:
        """Whether no item has been recorded yet (a fresh journal)."""
        return self._execute("SELECT 1 FROM items LIMIT 1").fetchone() is None

    def start(self, position: int, request: str, key: str) -> None:
        """Record (and commit) the item at ``position`` before its request is sent."""
        self._execute(
            "INSERT INTO items (position, request, idempotency_key, state) "
            "VALUES (?, ?, ?, 'started') ON CONFLICT(position) DO UPDATE SET "
            "state = 'started', error = NULL",
            (position, request, key),
        )

    def finish(
        self,
        position: int,
        state: str,
        *,
        refund_id: str | None = None,
        amount: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record the outcome of the item at ``position`` (``done``, ``covered`` or ``failed``)."""
        self._execute(
            "UPDATE items SET state = ?, refund_id = ?, amount = ?, error = ? WHERE position = ?",
            (state, refund_id, amount, error, position),
        )

    def cover(self, position: int, request: str, key: str, refund_id: str | None) -> None:
        """Record (one commit) the item at ``position`` as covered by the refund sent with
        ``key`` (its transaction's), never as started: nothing of its own is ever sent. A row
        that already had a key of its own (a refused earlier attempt) keeps it."""
        self._execute(
            "INSERT INTO items (position, request, idempotency_key, state, refund_id) "
            "VALUES (?, ?, ?, 'covered', ?) ON CONFLICT(position) DO UPDATE SET "
            "state = 'covered', refund_id = excluded.refund_id, amount = NULL, error = NULL",
            (position, request, key, refund_id),
        )

    def _groups(self) -> None:
        if not self._groups_ready:
            self._execute(
                "CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, "
                "position INTEGER NOT NULL, idempotency_key TEXT NOT NULL)"
            )
            self._groups_ready = True

    def carrier(self, group: str) -> tuple[int, str] | None:
        """The row (position, key) recorded as carrying transaction group ``group``'s refund."""
        self._groups()
        row = self._execute(
            "SELECT position, idempotency_key FROM groups WHERE name = ?", (group,)
        ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def claim(self, group: str, position: int, key: str) -> None:
        """Record (and commit), before it is sent, that the row at ``position`` and its ``key``
        carry transaction group ``group``'s refund (a takeover replaces the previous row)."""
        self._groups()
        self._execute(
            "INSERT INTO groups (name, position, idempotency_key) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET position = excluded.position, "
            "idempotency_key = excluded.idempotency_key",
            (group, position, key),
        )

    def close(self) -> None:
        """Close the database and release the lock (idempotent)."""
        with self._mutex:
            self._finalizer()


def _shut(db: sqlite3.Connection, lock: _Lock) -> None:
    with contextlib.suppress(sqlite3.Error):
        db.close()
    lock.release()
