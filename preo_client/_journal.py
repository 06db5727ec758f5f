"""The bulk-run journal: an SQLite file, held by one run, with each item's key before it is sent.

Layout (schema ``preo-bulk-journal/2``): ``meta`` (``schema``, ``run_id``, ``clean``) and
``items``, one row per item *identity* (its canonical request and its ordinal among identical
requests of the input: never its position) with the item's purchase id, the position it was last
read at, its canonical request, its idempotency key, its state (``started`` / ``done`` /
``covered`` / ``failed``) and, when done, the refund id, amount and request id; ``groups`` (made
on first use) names, per transaction group, the item whose key carries the group's refund,
committed before that item's request is sent. A journal of schema ``preo-bulk-journal/1`` (items
keyed by position) is migrated in place when opened, keeping every recorded key.

Durability: WAL with ``synchronous=NORMAL``. Every commit is in the OS page cache (the WAL file)
when ``commit()`` returns, so it survives the death of the process (``kill -9``, a crash),
which is the threat here; only a power loss or kernel crash could lose the last commits. An
item's row is committed *before* its request is sent, so a resumed run resends it with the same
key.

A journal is up to three files: ``PATH``, ``PATH-wal`` and ``PATH-shm``. The run id and a
``clean`` flag (``0`` while a run holds it, ``1`` after a clean close) are checkpointed into
``PATH`` itself when a run opens the journal, so a moved ``PATH`` always carries its run id, and
a ``PATH`` that says it was not closed cleanly but has no ``PATH-wal`` beside it (moved or copied
alone after a crash: its latest entries are missing) is refused rather than resumed.

One run holds the journal at a time: an exclusive ``flock`` on ``REAL.lock`` (``REAL``: the
path with symlinks resolved; it holds the owner's pid) and on the journal file itself, so a
second name for the same file (a symlink, a renamed path) finds it held. A journal with more
than one hard link is refused (its ``-wal`` would not follow the other name). Both locks are
released by the OS when the process dies, so a killed run never leaves a stale lock.

Damage: the file is checked (``PRAGMA integrity_check``: tables and their indexes) when opened,
and every ``sqlite3`` error anywhere (open, query, fetch, commit, close) is a
:class:`JournalError`, never a raw one.

The audit trail (tables added in place to any journal of this schema, older ones included, by
:func:`migrate_audit`; the ``items`` table is not touched): ``runs`` (one row per run that held
the journal: start and end time, batch id, pid), ``attempts`` (every answered or failed attempt:
the key, the attempt number, when it was sent and answered, its outcome class, status, request
id and, for a refund, its id, amount, status and ``replayed``) and ``inputs`` (each input
position's line in the input file). ``preo_client._journal_reader`` reads them without writing.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import sqlite3
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Final, NamedTuple, TypeVar

from ._exceptions import PreoError

if TYPE_CHECKING:
    from ._call import AttemptRecord

__all__ = ["SCHEMA", "Journal", "JournalEntry", "JournalError", "item_identity", "migrate_audit"]

SCHEMA: Final = "preo-bulk-journal/2"
LEGACY_SCHEMA: Final = "preo-bulk-journal/1"  # items keyed by position: migrated when opened
STATES: Final = frozenset({"started", "done", "covered", "failed"})
_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_LEGACY_COLUMNS: Final = (
    "position",
    "request",
    "idempotency_key",
    "state",
    "refund_id",
    "amount",
    "error",
)
# the items columns this version reads (a journal may hold more: added by later migrations)
_COLUMNS: Final = ("identity", "purchase_id", *_LEGACY_COLUMNS, "request_id")
_CREATE: Final = ("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",)
_ENTRY_SELECT: Final = (
    "SELECT identity, position, request, idempotency_key, state, refund_id, amount, error, "
    "request_id FROM items"
)
# The audit trail: additive tables, created when missing (see migrate_audit).
_AUDIT: Final = (
    "CREATE TABLE IF NOT EXISTS runs (run INTEGER PRIMARY KEY, started_at TEXT NOT NULL, "
    "ended_at TEXT, batch_id TEXT NOT NULL, pid INTEGER)",
    "CREATE TABLE IF NOT EXISTS attempts (id INTEGER PRIMARY KEY, run INTEGER, "
    "idempotency_key TEXT NOT NULL, attempt INTEGER NOT NULL, sent_at TEXT NOT NULL, "
    "answered_at TEXT NOT NULL, outcome TEXT NOT NULL, failure TEXT, status_code INTEGER, "
    "request_id TEXT, refund_id TEXT, amount TEXT, refund_status TEXT, replayed INTEGER)",
    "CREATE INDEX IF NOT EXISTS attempts_by_key ON attempts (idempotency_key)",
    "CREATE TABLE IF NOT EXISTS inputs (position INTEGER PRIMARY KEY, line INTEGER NOT NULL)",
    # each run's input: which item (identity) it read at each position, and that row's line
    "CREATE TABLE IF NOT EXISTS run_inputs (run INTEGER NOT NULL, position INTEGER NOT NULL, "
    "identity TEXT, purchase_id TEXT, line INTEGER, PRIMARY KEY (run, position))",
)
#: Input items a run notes (``note_input``) before they are written with the next commit.
_INPUT_BATCH: Final = 1000
_NOTE_INPUT: Final = (
    "INSERT INTO run_inputs (run, position, identity, purchase_id) VALUES (?, ?, ?, ?) "
    "ON CONFLICT(run, position) DO UPDATE SET identity = excluded.identity, "
    "purchase_id = excluded.purchase_id"
)
# sqlite3 reports some damage as UnicodeDecodeError (text, or its own message, not UTF-8)
_SQLITE_ERRORS: Final = (sqlite3.Error, UnicodeDecodeError)
_T = TypeVar("_T")


def migrate_audit(db: sqlite3.Connection) -> None:
    """Add the audit-trail tables to a journal that lacks them (idempotent; the caller holds
    the write transaction). Journals written before them open and gain them in place."""
    for statement in _AUDIT:
        db.execute(statement)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


class JournalError(PreoError, ValueError):
    """A journal that cannot be used: held by another run, damaged, another format, or an
    input that differs from what it recorded (``position``: that item's 0-based index)."""

    def __init__(self, message: str, *, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


class JournalEntry(NamedTuple):
    """What an earlier run recorded for one item identity."""

    request: str
    idempotency_key: str
    state: str
    refund_id: str | None
    amount: str | None
    error: str | None = None  # the error class name of a failed item
    identity: str = ""
    position: int = -1  # where the item was when last recorded (0-based)
    request_id: str | None = None  # the X-Request-Id of a done item's answer


def item_identity(request: str, ordinal: int) -> str:
    """An item's journal identity: its canonical request and its ordinal among identical
    requests of the input (0 for the first), never its position."""
    digest = hashlib.sha256(request.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{digest}:{ordinal}"


def _create_items(db: sqlite3.Connection) -> None:
    """The items table of schema ``preo-bulk-journal/2`` (keyed by identity)."""
    db.execute(
        "CREATE TABLE items (identity TEXT PRIMARY KEY, purchase_id TEXT NOT NULL, "
        "position INTEGER NOT NULL, request TEXT NOT NULL, idempotency_key TEXT NOT NULL, "
        "state TEXT NOT NULL, refund_id TEXT, amount TEXT, error TEXT, request_id TEXT) "
        "WITHOUT ROWID"  # one B-tree keyed by identity, not a rowid table plus its index
    )
    db.execute("CREATE INDEX items_purchase ON items (purchase_id)")


def _migrate_items_v1(db: sqlite3.Connection, group_of: Callable[[str], str | None]) -> None:
    """Rewrite a ``preo-bulk-journal/1`` items table (keyed by position) as schema 2, in the
    caller's transaction: each row's identity is its request and its ordinal among identical
    requests by position (identical requests are interchangeable: any order gives each its
    recorded key once), and every recorded key, state and refund is kept. Group carriers are
    renamed to the groups of this version (``group_of`` a request; a transaction's carrier that
    made its refund is preferred)."""
    db.execute("ALTER TABLE items RENAME TO items_v1")
    _create_items(db)
    ordinals: dict[str, int] = {}
    identity_at: dict[int, tuple[str, str, str]] = {}  # position -> identity, request, state
    rows = db.execute(
        "SELECT position, request, idempotency_key, state, refund_id, amount, error "
        "FROM items_v1 ORDER BY position"
    ).fetchall()
    for position, request, key, state, refund_id, amount, error in rows:
        if not isinstance(request, str) or not _is_json_object(request):
            raise JournalError("journal entry of a legacy journal is damaged")
        ordinal = ordinals[request] = ordinals.get(request, -1) + 1
        identity = item_identity(request, ordinal)
        identity_at[position] = (identity, request, str(state))
        purchase_id = json.loads(request).get("purchase_id")
        db.execute(
            "INSERT INTO items (identity, purchase_id, position, request, idempotency_key, "
            "state, refund_id, amount, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (identity, str(purchase_id), position, request, key, state, refund_id, amount, error),
        )
    db.execute("DROP TABLE items_v1")
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    if "groups" not in tables:
        return
    carriers = db.execute("SELECT position, idempotency_key FROM groups").fetchall()
    db.execute("DROP TABLE groups")
    _create_groups(db)
    for position, key in carriers:
        found = identity_at.get(position)
        if found is None:
            continue
        identity, request, state = found
        name = group_of(request)
        if name is None:
            continue
        db.execute(_INSERT_DONE_GROUP if state == "done" else _INSERT_GROUP, (name, identity, key))


def _create_groups(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, identity TEXT NOT NULL, "
        "idempotency_key TEXT NOT NULL)"
    )


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


class _FileLock:
    """An exclusive ``flock`` on the journal file itself: held whatever name reaches it."""

    def __init__(self, path: Path) -> None:
        self._finalizer: Callable[[], object] = lambda: None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: the PATH.lock lock only
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise JournalError(
                f"journal {path} in use by another run (through another name: a symlink or "
                "a renamed path)"
            ) from None
        # closed only after the database: closing a descriptor of the file drops SQLite's
        # own POSIX locks on it
        self._finalizer = weakref.finalize(self, os.close, fd)

    def release(self) -> None:
        self._finalizer()


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


def _refuse_hard_links(path: Path) -> None:
    """Refuse a journal reachable by another hard link: its ``-wal`` would not follow."""
    try:
        links = os.stat(path).st_nlink
    except FileNotFoundError:
        return
    except OSError as exc:
        raise JournalError(f"cannot read journal {path}: {exc.strerror}") from None
    if links > 1:
        raise JournalError(
            f"journal {path} has {links} hard links: one journal must have one name (its "
            "-wal and -shm files are found by name, and its lock must be unique); remove the "
            "other links, or copy it together with its -wal and -shm files"
        )


class Journal:
    """The journal of one bulk run at ``path``; raises :class:`JournalError` if unusable.

    ``batch_id`` fixes the run id (and so every derived key); a journal made with another
    batch id is refused. Thread-safe.
    """

    def __init__(self, path: str | Path, *, batch_id: str | None = None) -> None:
        self.path = Path(path)
        real = Path(os.path.realpath(self.path))
        _refuse_foreign(real)
        try:
            self._lock_file = _Lock(Path(f"{real}.lock"))
        except OSError as exc:
            raise JournalError(f"cannot lock journal {self.path}: {exc.strerror}") from None
        self._mutex = threading.Lock()
        self._groups_ready = False
        self._run_number: int | None = None
        self._noted: list[tuple[int | None, int, str, str]] = []  # see note_input
        try:
            _refuse_hard_links(real)
            self._file_lock = _FileLock(real)
        except OSError as exc:
            self._lock_file.release()
            raise JournalError(f"cannot lock journal {self.path}: {exc.strerror}") from None
        except BaseException:
            self._lock_file.release()
            raise
        wal_beside = Path(f"{real}-wal").exists()
        try:
            self._db = sqlite3.connect(
                real, check_same_thread=False, isolation_level=None, timeout=0
            )
        except _SQLITE_ERRORS as exc:
            self._file_lock.release()
            self._lock_file.release()
            raise JournalError(f"cannot open journal {self.path}: {exc}") from None
        # a journal dropped without close() is still closed (and unlocked) when collected
        self._held = [False]  # set once opened: only then is a close a clean close
        self._finalizer = weakref.finalize(
            self, _shut, self._db, self._held, self._file_lock, self._lock_file
        )
        try:
            self.run_id = self._setup(batch_id, wal_beside=wal_beside)
        except BaseException:
            self._finalizer()
            raise

    def _setup(self, batch_id: str | None, *, wal_beside: bool) -> str:
        db = self._db
        try:
            # A reader of the journal (`preo journal show`, a monitor) may hold a shared lock
            # for a moment while this run opens it: wait for it, do not call it damaged.
            # (Another run is kept out by the file lock, not by SQLite's.)
            db.execute("PRAGMA busy_timeout = 10000")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            check = [str(row[0]) for row in db.execute("PRAGMA integrity_check(3)")]
            if check != ["ok"]:
                found = " ".join("; ".join(check).split())  # one line
                raise JournalError(
                    f"journal {self.path} is damaged ({found}); it cannot be "
                    "resumed safely: restore it from a copy, or start a new journal with the "
                    "same --batch-id (batch_id=) as before if you set one"
                )
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
                    _create_items(db)
                columns = tuple(row[1] for row in db.execute("PRAGMA table_info(items)"))
                self._refuse_unusable(meta, columns, batch_id, wal_beside=wal_beside)
                if meta.get("schema") == LEGACY_SCHEMA:
                    self._migrate(db)
                    meta["schema"] = SCHEMA
                for row in db.execute(_ENTRY_SELECT):
                    self._entry(row)  # every entry readable, before any use
                db.execute("INSERT OR REPLACE INTO meta VALUES ('clean', '0')")
                migrate_audit(db)
                self._check_audit(db)
                self._run_number = db.execute(
                    "INSERT INTO runs (started_at, batch_id, pid) VALUES (?, ?, ?)",
                    (_now(), str(meta["run_id"]), os.getpid()),
                ).lastrowid
            db.execute("PRAGMA busy_timeout = 0")
            self._checkpoint()
        except JournalError:
            raise
        except _SQLITE_ERRORS as exc:
            raise JournalError(
                f"journal {self.path} is damaged or not a usable preo journal ({_one_line(exc)})"
                "; restore it from a copy, or start a new journal with the same --batch-id "
                "(batch_id=) as before if you set one"
            ) from None
        self._held[0] = True
        return str(meta["run_id"])

    def _check_audit(self, db: sqlite3.Connection) -> None:
        """Every audit-trail row readable and of the types this module writes (damage there
        is refused like damage anywhere else)."""
        text, number = (str,), (int,)
        optional_text, optional_number = (str, type(None)), (int, type(None))
        shapes = {
            "SELECT * FROM runs": (number, text, optional_text, text, optional_number),
            "SELECT * FROM attempts": (
                number, optional_number, text, number, text, text, text, optional_text,
                optional_number, optional_text, optional_text, optional_text, optional_text,
                optional_number,
            ),
            "SELECT * FROM inputs": (number, number),
            "SELECT * FROM run_inputs": (
                number, number, optional_text, optional_text, optional_number,
            ),
        }  # fmt: skip
        for query, shape in shapes.items():
            table = query.rsplit(" ", 1)[1]
            for row in db.execute(query):
                if len(row) != len(shape) or not all(
                    isinstance(value, kinds) for value, kinds in zip(row, shape, strict=False)
                ):
                    raise JournalError(
                        f"journal {self.path} is damaged: an entry of its {table} table is not "
                        "one this library writes; restore the journal from a copy"
                    )

    def _checkpoint(self) -> None:
        """Copy the WAL into the main file: a moved PATH carries the run id and the "held"
        flag. Waits for readers (another process polling the journal) up to 10 s."""
        db = self._db
        db.execute("PRAGMA busy_timeout = 10000")
        try:
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            db.execute("PRAGMA busy_timeout = 0")
        if busy:
            raise JournalError(
                f"cannot write the identity of journal {self.path} into the file: another "
                "process keeps reading it; try again when it has stopped"
            )

    def _refuse_unusable(
        self,
        meta: dict[str, str],
        columns: tuple[str, ...],
        batch_id: str | None,
        *,
        wal_beside: bool,
    ) -> None:
        """Refuse (before writing anything) another schema, another batch, or a journal
        whose latest entries were left behind in a ``-wal`` file that did not travel with it."""
        usable = (meta.get("schema") == SCHEMA and set(_COLUMNS) <= set(columns)) or (
            meta.get("schema") == LEGACY_SCHEMA and columns == _LEGACY_COLUMNS
        )
        if not usable or "run_id" not in meta:
            raise JournalError(
                f"{self.path} is not a preo journal of schema {SCHEMA} "
                f"(found {meta.get('schema')!r})"
            )
        if batch_id is not None and meta["run_id"] != batch_id:
            raise JournalError(
                f"journal {self.path} belongs to batch {meta['run_id']!r}, not {batch_id!r}"
            )
        if meta.get("clean") == "0" and not wal_beside:
            raise JournalError(
                f"journal {self.path} was not closed cleanly and its {self.path}-wal "
                "file is missing: its latest entries are in that file. A journal is up "
                "to three files (PATH, PATH-wal, PATH-shm) that must be moved or "
                "copied together; put the -wal (and -shm) file back beside it"
            )

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Rewrite a schema-1 journal as schema 2 (in the open transaction), keys kept."""
        from ._bulk_items import group_of_request  # the groups of this version

        _migrate_items_v1(db, group_of_request)
        db.execute("UPDATE meta SET value = ? WHERE name = 'schema'", (SCHEMA,))

    def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """``work`` on the database under the mutex; any sqlite3 error is a JournalError."""
        with self._mutex:
            try:
                return work(self._db)
            except _SQLITE_ERRORS as exc:  # disk full, file removed, damage: never unjournaled
                raise JournalError(f"journal {self.path} failed: {_one_line(exc)}") from exc

    def _execute(self, sql: str, parameters: tuple[object, ...] = ()) -> None:
        def work(db: sqlite3.Connection) -> None:
            if not self._noted:
                db.execute(sql, parameters)
                return
            with db:  # the noted input items ride along with this commit
                db.execute("BEGIN IMMEDIATE")
                self._write_noted(db)
                db.execute(sql, parameters)
            self._noted.clear()

        self._run(work)

    def _write_noted(self, db: sqlite3.Connection) -> None:
        """Write the noted input items (the caller holds the mutex and a write transaction
        and clears ``_noted`` once it has committed)."""
        db.executemany(_NOTE_INPUT, self._noted)

    def recorded(self, identity: str) -> JournalEntry | None:
        """What an earlier run recorded for the item ``identity``, if anything."""
        row = self._run(
            lambda db: db.execute(f"{_ENTRY_SELECT} WHERE identity = ?", (identity,)).fetchone()
        )
        return None if row is None else self._entry(row)

    def for_purchase(self, purchase_id: str) -> list[JournalEntry]:
        """Every entry recorded for ``purchase_id``."""
        rows = self._run(
            lambda db: db.execute(
                f"{_ENTRY_SELECT} WHERE purchase_id = ? ORDER BY position", (purchase_id,)
            ).fetchall()
        )
        return [self._entry(row) for row in rows]

    def entries(self) -> Iterator[JournalEntry]:
        """Every entry, by the position it was last read at (read in pages: memory stays flat)."""
        after: tuple[int, str] = (-2, "")
        while True:
            page = self._run(
                lambda db, after=after: db.execute(  # type: ignore[misc]
                    f"{_ENTRY_SELECT} WHERE (position, identity) > (?, ?) "
                    "ORDER BY position, identity LIMIT 500",
                    after,
                ).fetchall()
            )
            if not page:
                return
            for row in page:
                yield self._entry(row)
            after = (page[-1][1], page[-1][0])

    def refunded(self) -> tuple[int, Decimal]:
        """The distinct refunds the journal holds as made by an item's own request: how many
        and their exact total."""
        rows = self._run(
            lambda db: db.execute(
                "SELECT refund_id, amount FROM items WHERE state = 'done' "
                "AND refund_id IS NOT NULL AND amount IS NOT NULL ORDER BY position, identity"
            ).fetchall()
        )
        from ._amounts import exact_sum

        # one amount per refund id (the first answer's, as `preo journal show` counts it): a
        # refund answered twice with different amounts is still one refund
        amounts: dict[str, str] = {}
        for refund_id, amount in rows:
            amounts.setdefault(str(refund_id), str(amount))
        return len(amounts), exact_sum(Decimal(amount) for amount in amounts.values())

    def _entry(self, row: tuple[object, ...]) -> JournalEntry:
        """A row as an entry, or :class:`JournalError` if it is not one this module writes."""
        identity, position, request, key, state, refund_id, amount, error, request_id = row
        if (
            isinstance(identity, str)
            and isinstance(position, int)
            and isinstance(request, str)
            and _is_json_object(request)
            and isinstance(key, str)
            and state in STATES
            and isinstance(refund_id, str | None)
            and (amount is None or (isinstance(amount, str) and _is_amount(amount)))
            and isinstance(error, str | None)
            and isinstance(request_id, str | None)
            and _identity_holds(identity, request)
        ):
            return JournalEntry(
                request, key, str(state), refund_id, amount, error, identity, position, request_id
            )
        where = f"input item {position + 1}" if isinstance(position, int) else "an item"
        raise JournalError(
            f"journal {self.path} is damaged: the entry of {where} is not one this library "
            "writes; restore the journal from a copy",
            position=position if isinstance(position, int) else None,
        )

    def is_empty(self) -> bool:
        """Whether no item has been recorded yet (a fresh journal)."""
        return self._run(lambda db: db.execute("SELECT 1 FROM items LIMIT 1").fetchone()) is None

    def start(
        self, identity: str, position: int, request: str, key: str, purchase_id: str | None = None
    ) -> None:
        """Record (and commit) the item ``identity`` before its request is sent
        (``purchase_id``: the request's, when the caller has it at hand)."""
        if purchase_id is None:
            purchase_id = str(json.loads(request).get("purchase_id"))
        self._execute(
            "INSERT INTO items (identity, purchase_id, position, request, idempotency_key, "
            "state) VALUES (?, ?, ?, ?, ?, 'started') ON CONFLICT(identity) DO UPDATE SET "
            "state = 'started', error = NULL, position = excluded.position",
            (identity, purchase_id, position, request, key),
        )

    def finish(
        self,
        identity: str,
        state: str,
        *,
        refund_id: str | None = None,
        amount: str | None = None,
        error: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Record the outcome of the item ``identity`` (``done``, ``covered`` or ``failed``)."""
        self._execute(
            "UPDATE items SET state = ?, refund_id = ?, amount = ?, error = ?, request_id = ? "
            "WHERE identity = ?",
            (state, refund_id, amount, error, request_id, identity),
        )

    def cover(
        self, identity: str, position: int, request: str, key: str, refund_id: str | None
    ) -> None:
        """Record (one commit) the item ``identity`` as covered by the refund sent with ``key``
        (its transaction's), never as started: nothing of its own is ever sent. A row that
        already had a key of its own (a refused earlier attempt) keeps it."""
        purchase_id = str(json.loads(request).get("purchase_id"))
        self._execute(
            "INSERT INTO items (identity, purchase_id, position, request, idempotency_key, "
            "state, refund_id) VALUES (?, ?, ?, ?, ?, 'covered', ?) ON CONFLICT(identity) DO "
            "UPDATE SET state = 'covered', refund_id = excluded.refund_id, amount = NULL, "
            "error = NULL, position = excluded.position",
            (identity, purchase_id, position, request, key, refund_id),
        )

    def _groups(self) -> None:
        if not self._groups_ready:
            self._run(_create_groups)
            self._groups_ready = True

    def carrier(self, group: str) -> tuple[str, str] | None:
        """The item (identity, key) recorded as carrying transaction group ``group``'s refund."""
        self._groups()
        row = self._run(
            lambda db: db.execute(
                "SELECT identity, idempotency_key FROM groups WHERE name = ?", (group,)
            ).fetchone()
        )
        if row is None:
            return None
        identity, key = row
        if not isinstance(identity, str) or not isinstance(key, str):
            raise JournalError(f"journal {self.path} is damaged: a transaction group entry")
        return identity, key

    def claim(self, group: str, identity: str, key: str) -> None:
        """Record (and commit), before it is sent, that the item ``identity`` and its ``key``
        carry transaction group ``group``'s refund (a takeover replaces the previous item)."""
        self._groups()
        self._execute(
            "INSERT INTO groups (name, identity, idempotency_key) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET identity = excluded.identity, "
            "idempotency_key = excluded.idempotency_key",
            (group, identity, key),
        )

    # -- the audit trail (additive: see migrate_audit) -----------------------------------

    def record_attempt(self, key: str, record: AttemptRecord) -> None:
        """Record (and commit) one attempt of the request sent with ``key``: when it was sent
        and answered, how it ended, the answer's request id and, for a refund, its id, amount,
        status and whether it was a replay. The bulk run calls it from the retry loop
        (``CallState.on_attempt``)."""
        refund = record.refund
        status = None if refund is None else getattr(refund.status, "value", refund.status)
        self._execute(
            "INSERT INTO attempts (run, idempotency_key, attempt, sent_at, answered_at, outcome, "
            "failure, status_code, request_id, refund_id, amount, refund_status, replayed) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self._run_number,
                key,
                record.attempt,
                record.sent_at.isoformat(),
                record.answered_at.isoformat(),
                record.outcome,
                record.failure,
                record.status_code,
                record.request_id,
                None if refund is None else refund.id,
                None if refund is None else str(refund.amount),
                status if isinstance(status, str) else None,
                None if refund is None else int(refund.replayed),
            ),
        )

    def record_inputs(self, lines: Sequence[int], *, start: int = 0) -> None:
        """Record (one commit) this run's input line of each position from ``start``
        (``lines[i]`` is position ``start + i``'s line). Tells readers which input items exist,
        sent or not, and where they are in this run's input. (The ``inputs`` table, which
        earlier versions read, keeps the first line recorded for a position.)"""

        def work(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN IMMEDIATE")
                self._write_noted(db)
                db.executemany(
                    "INSERT OR IGNORE INTO inputs (position, line) VALUES (?, ?)",
                    ((start + offset, line) for offset, line in enumerate(lines)),
                )
                db.executemany(
                    "INSERT INTO run_inputs (run, position, line) VALUES (?, ?, ?) "
                    "ON CONFLICT(run, position) DO UPDATE SET line = excluded.line",
                    ((self._run_number, start + o, line) for o, line in enumerate(lines)),
                )
            self._noted.clear()

        self._run(work)

    def note_input(self, position: int, identity: str, purchase_id: str) -> None:
        """Note that this run read the item ``identity`` at input ``position`` (sent, skipped
        as settled, or waiting for its transaction): the audit trail's record of this run's
        input. Written with the next commit of the journal, at the latest every
        1,000 items, so a resume that skips every item does not commit per item."""
        with self._mutex:
            self._noted.append((self._run_number, position, identity, purchase_id))
            full = len(self._noted) >= _INPUT_BATCH
        if full:
            self._flush_noted()

    def input_read(self) -> None:
        """Mark (one commit) this run's input as read to its end: readers take the input of
        the last run so marked as *the* input (a run stopped early noted only a part)."""
        self._flush_noted(
            "INSERT OR REPLACE INTO meta VALUES ('input_run', ?)", (str(self._run_number),)
        )

    def _flush_noted(self, sql: str | None = None, parameters: tuple[object, ...] = ()) -> None:
        def work(db: sqlite3.Connection) -> None:
            if not self._noted and sql is None:
                return
            with db:
                db.execute("BEGIN IMMEDIATE")
                self._write_noted(db)
                if sql is not None:
                    db.execute(sql, parameters)
            self._noted.clear()

        self._run(work)

    def _end_run(self) -> None:
        with contextlib.suppress(JournalError):  # a failing journal: the run stays open-ended
            self._flush_noted()
            self._execute("UPDATE runs SET ended_at = ? WHERE run = ?", (_now(), self._run_number))

    def close(self) -> None:
        """Mark the journal closed cleanly, close it and release the lock (idempotent)."""
        if self._held[0] and self._finalizer.alive:
            self._end_run()
        with self._mutex:
            self._finalizer()


def _identity_holds(identity: str, request: str) -> bool:
    """Whether ``identity`` is the one ``request`` has (a damaged byte in either breaks it)."""
    _, _, ordinal = identity.partition(":")
    if not (ordinal.isdigit() and ordinal.isascii()):
        return False
    return identity == item_identity(request, int(ordinal))


_INSERT_GROUP: Final = (
    "INSERT OR IGNORE INTO groups (name, identity, idempotency_key) VALUES (?, ?, ?)"
)
_INSERT_DONE_GROUP: Final = (
    "INSERT OR REPLACE INTO groups (name, identity, idempotency_key) VALUES (?, ?, ?)"
)


def _is_amount(text: str) -> bool:
    """Whether ``text`` is a finite decimal number, as this module writes amounts."""
    try:
        return Decimal(text).is_finite()
    except ArithmeticError:  # decimal.InvalidOperation
        return False


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _shut(db: sqlite3.Connection, held: list[bool], file_lock: _FileLock, lock: _Lock) -> None:
    if held[0]:  # never write to a journal that was refused
        with contextlib.suppress(*_SQLITE_ERRORS):  # on failure it stays unclean: conservative
            db.execute("UPDATE meta SET value = '1' WHERE name = 'clean'")
    with contextlib.suppress(*_SQLITE_ERRORS):
        db.close()  # checkpoints the WAL into the main file and removes it
    file_lock.release()
    lock.release()
