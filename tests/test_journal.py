"""The bulk journal's own promises: one file identity, one holder, damage always refused.

- A journal moved or copied without its ``-wal`` after a ``kill -9`` is refused (its latest
  entries are in that file), never silently restarted under a new run id; the run id is in the
  main file from the moment the journal is created.
- One journal reached through two names (symlink, rename, hard link) is held by one run only.
- Hypothesis: random truncations and byte flips of a finished journal end in a clean resume or
  a :class:`JournalError`, never another exception, never a request sent, never a double refund.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preo_client import RefundItem
from preo_client._journal import Journal, JournalError, item_identity
from preo_client.testing import FakePreo

EMPTY = item_identity("{}", 0)

WATCHDOG = 60.0
_T = TypeVar("_T")


def watchdog(work: Callable[[], _T], timeout: float = WATCHDOG) -> _T:
    """``work()`` in a thread: a hang fails the test instead of blocking CI."""
    result: list[Any] = []

    def go() -> None:
        try:
            result.append(("ok", work()))
        except BaseException as exc:  # handed back to the test
            result.append(("error", exc))

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(timeout)
    assert result, f"hung for {timeout}s"
    kind, value = result[0]
    if kind == "error":
        raise value
    return value  # type: ignore[no-any-return]


def main_file_meta(path: Path, name: str = "run_id") -> str | None:
    """A meta value as stored in the main file alone (read-only, without any -wal)."""
    alone = path.parent / "alone" / path.name
    alone.parent.mkdir(exist_ok=True)
    shutil.copyfile(path, alone)
    with contextlib.closing(sqlite3.connect(f"file:{alone}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])


KILLED_RUN = """
import os, signal, sys
from preo_client._journal import Journal, item_identity
journal = Journal(sys.argv[1])
for position in range(50):
    identity = item_identity('{"p": %d}' % position, 0)
    journal.start(identity, position, '{"p": %d}' % position, "key-%d" % position)
    journal.finish(identity, "done", refund_id="rr_%d" % position, amount="1.00")
print(journal.run_id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_journal(tmp_path: Path) -> tuple[Path, str]:
    """A journal whose run was killed with ``kill -9`` after 50 entries: (path, run id)."""
    path = tmp_path / "run" / "cancel.journal"
    path.parent.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(path)],
        capture_output=True, text=True, timeout=WATCHDOG, check=False,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert Path(f"{path}-wal").exists()  # the entries are (partly) in the -wal
    return path, done.stdout.strip()


def test_the_run_id_is_in_the_main_file_from_creation(tmp_path: Path) -> None:
    """Regression: the run id stayed in the -wal; a main file moved alone was a new journal."""
    path, run_id = killed_journal(tmp_path)
    assert main_file_meta(path) == run_id


def test_the_held_flag_reaches_the_main_file_despite_a_reader(tmp_path: Path) -> None:
    """Regression: with another process reading the journal when a run opened it, the
    checkpoint silently did nothing, so a main file moved alone was not known as unclean."""
    path = tmp_path / "j"
    Journal(path).close()
    assert main_file_meta(path, "clean") == "1"
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM meta").fetchall()  # holds a snapshot
    release = threading.Timer(0.3, reader.rollback)
    release.start()
    journal = watchdog(lambda: Journal(path))
    try:
        assert main_file_meta(path, "clean") == "0"
    finally:
        journal.close()
        release.join()
        reader.close()


def test_a_journal_moved_without_its_wal_after_kill_9_is_refused(tmp_path: Path) -> None:
    """Regression: a resume from the moved main file exited 0 under a new run id (every key
    new: 143 purchases refunded twice)."""
    path, run_id = killed_journal(tmp_path)
    moved = tmp_path / "moved" / "cancel.journal"
    moved.parent.mkdir()
    shutil.move(path, moved)
    for _ in range(2):  # the refusal writes nothing: it stays refused
        with pytest.raises(JournalError, match=r"-wal file is missing.*three files"):
            Journal(moved)
    for suffix in ("-wal", "-shm"):  # moved together: resumes with every entry
        shutil.move(f"{path}{suffix}", f"{moved}{suffix}")
    journal = Journal(moved)
    try:
        assert journal.run_id == run_id
        entries = [journal.recorded(item_identity(f'{{"p": {p}}}', 0)) for p in range(50)]
        assert all(e is not None and e.state == "done" for e in entries)
    finally:
        journal.close()


def test_a_cleanly_closed_journal_is_one_file(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = Journal(path)
    journal.start(EMPTY, 0, "{}", "k0")
    journal.finish(EMPTY, "done", refund_id="rr_0", amount="1.00")
    run_id = journal.run_id
    journal.close()
    assert not Path(f"{path}-wal").exists()
    moved = tmp_path / "elsewhere"
    shutil.move(path, moved)
    again = Journal(moved)
    try:
        assert again.run_id == run_id
        entry = again.recorded(EMPTY)
        assert entry is not None
        assert entry.refund_id == "rr_0"
    finally:
        again.close()


def test_a_refused_batch_id_leaves_the_journal_usable(tmp_path: Path) -> None:
    path = tmp_path / "j"
    Journal(path, batch_id="cancel-7").close()
    with pytest.raises(JournalError, match="belongs to batch"):
        Journal(path, batch_id="cancel-8")
    Journal(path, batch_id="cancel-7").close()


@pytest.mark.parametrize("alias", ["symlink", "rename", "dot"])
def test_one_journal_through_two_names_is_held_once(tmp_path: Path, alias: str) -> None:
    """Regression: the lock was on NAME.lock, so a second name was a second lock."""
    path = tmp_path / "cancel.journal"
    holder = Journal(path)
    try:
        if alias == "symlink":
            other = tmp_path / "alias.journal"
            other.symlink_to(path)
        elif alias == "rename":
            other = tmp_path / "renamed.journal"
            path.rename(other)
        else:
            other = tmp_path / "." / "sub" / ".." / "cancel.journal"
            (tmp_path / "sub").mkdir()
        with pytest.raises(JournalError, match="in use by another run"):
            Journal(other)
    finally:
        holder.close()
    if alias != "rename":  # (SQLite refuses writes to a file renamed under it: stays unclean)
        Journal(other).close()  # released: usable again


def test_a_journal_with_a_second_hard_link_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cancel.journal"
    Journal(path).close()
    os.link(path, tmp_path / "alias.journal")
    for name in (path, tmp_path / "alias.journal"):
        with pytest.raises(JournalError, match="2 hard links"):
            Journal(name)


ITEMS = [RefundItem(f"pur_{i}", amount="0.50") for i in range(60)]


@functools.cache
def finished_journal() -> bytes:
    """The bytes of a journal whose run refunded every item (closed cleanly)."""
    path = Path(tempfile.mkdtemp()) / "j"
    fake = FakePreo(auto_purchases=True)
    with fake.client() as client:
        summary = client.purchases.refund_many(
            ITEMS, reason="compensation", concurrency=4, journal=path
        ).run()
    assert summary.succeeded == len(ITEMS)
    return path.read_bytes()


def damage(data: bytes, draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return data[: draw(st.integers(1, len(data) - 1))]  # 0 bytes is a new journal
    damaged = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data) - 1))
        damaged[position] ^= draw(st.sampled_from([0xFF, 0x01, 0x80, 0x20]) | st.integers(1, 255))
    return bytes(damaged)


@st.composite
def damaged_journals(draw: st.DrawFn) -> bytes:
    return damage(finished_journal(), draw)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=damaged_journals())
def test_a_damaged_journal_is_resumed_exactly_or_refused(tmp_path: Path, data: bytes) -> None:
    """Regression: 20 of 40 damaged journals raised a raw sqlite3 OperationalError."""
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    path = work / "j"
    path.write_bytes(data)
    fake = FakePreo(auto_purchases=True)
    with fake.client() as client:

        def resume() -> str:
            try:
                summary = client.purchases.refund_many(
                    ITEMS, reason="compensation", concurrency=4, journal=path
                ).run()
            except JournalError as exc:
                return str(exc)
            assert summary.skipped == len(ITEMS), summary
            return "resumed"

        assert "\n" not in watchdog(resume)  # a refusal is one line for the command line
    assert fake.requests == []  # never a request sent from a damaged journal


def test_every_sqlite_error_is_a_journal_error(tmp_path: Path) -> None:
    """A failure while fetching (not only executing) is a JournalError."""
    journal = Journal(tmp_path / "j")
    try:
        journal.start(EMPTY, 0, "{}", "k")
        journal._db.execute("UPDATE items SET request = CAST(x'ff' AS TEXT)")
        with pytest.raises(JournalError, match="decode"):
            journal.recorded(EMPTY)
        journal._db.execute("UPDATE items SET request = '{}', state = 'weird'")
        with pytest.raises(JournalError, match="damaged"):
            journal.recorded(EMPTY)
    finally:
        journal.close()


@pytest.mark.parametrize("fresh", [True, False])
def test_a_reader_holding_the_journal_a_moment_does_not_make_it_damaged(
    tmp_path: Path, fresh: bool
) -> None:
    """A reader (`preo journal show`, a monitor polling it) held a shared lock while a run
    opened the journal: the run refused it as "damaged ... (database is locked)". It waits."""
    path = tmp_path / "j.db"
    if fresh:
        sqlite3.connect(path).close()  # created, empty: the run will set it up
    else:
        Journal(path).close()
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA journal_mode=DELETE")  # as a copy or an old tool may leave it
    reader = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM sqlite_master").fetchone()  # holds a shared lock
    release = threading.Timer(0.3, lambda: (reader.execute("COMMIT"), reader.close()))
    release.start()
    try:
        journal = Journal(path)
        journal.close()
    finally:
        release.join(10)
