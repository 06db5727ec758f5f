"""Bulk outcomes and the summary: what became of each item, counted once, exactly."""

from __future__ import annotations

import collections
import threading
from decimal import Decimal
from typing import TYPE_CHECKING

import attrs

from ._amounts import exact_add
from ._bulk_items import RefundItem
from ._exceptions import PreoError
from ._models import Refund

if TYPE_CHECKING:
    from ._journal import JournalEntry

__all__ = ["BulkSummary", "RefundOutcome"]


@attrs.frozen
class RefundOutcome:
    """What became of one item: the refund or the error, attempts made, the key sent.

    - ``item``: the :class:`RefundItem` (for an input row that could not be read, one whose
      ``purchase_id`` says where the row was or what it held).
    - ``refund``: the :class:`~preo_client.Refund` the server answered with (for a covered
      item, its transaction's refund); None when the item failed or was skipped.
    - ``error``: the :class:`~preo_client.PreoError` the item failed with, else None.
    - ``attempts``: requests sent for this item (0 when nothing was sent).
    - ``idempotency_key``: the key sent for it (for a skipped item, the one the journal
      recorded; for a covered item, its transaction's); None when nothing was keyed.
    - ``skipped``: a previous run (per the journal) already did it; nothing was sent.
    - ``position``: the item's 0-based index in the input.
    - ``replayed``: the answer is a replay: the server said so (``Idempotent-Replayed``), or
      it is a refund another item of this run already got (counted once in the summary).
    - ``covered_by``: the position of the item whose transaction refund covers this one
      (nothing sent for it); None otherwise.
    - ``note``: a hint explaining a failure or a surprise, or None.
    - ``earlier``: for a skipped item, what the journal recorded of it (its refund id,
      amount and request id), else None.
    - ``amount_differs``: the server refunded another amount than the custom amount asked
      (the refund exists: see ``note``; counted in ``BulkSummary.amount_differs``).
    - ``ok``: nothing more to do for the item (refunded, skipped or covered).
    """

    item: RefundItem
    refund: Refund | None
    error: PreoError | None
    attempts: int
    idempotency_key: str | None
    skipped: bool = False
    position: int = -1
    replayed: bool = False
    covered_by: int | None = None
    note: str | None = None
    amount_differs: bool = False
    earlier: JournalEntry | None = attrs.field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True when the item needs nothing more: refunded, skipped (done by a previous run)
        or covered by its transaction's refund."""
        return self.error is None and (
            self.refund is not None or self.skipped or self.covered_by is not None
        )


@attrs.define
class BulkSummary:
    """A bulk run so far (live while it runs; final once it ends), counting each outcome
    handed out once:

    - ``succeeded``: items answered with a refund this run had not counted yet.
    - ``replayed``: items answered with a replay (``Idempotent-Replayed``, or a refund another
      item of this run already got).
    - ``covered``: items covered by their transaction's refund (nothing sent for them).
    - ``skipped``: items a previous run already did (per the journal).
    - ``failed``: failed items by error class name (a ``collections.Counter``).
    - ``failed_items``: the failed :class:`RefundOutcome` objects, in the order handed out.
    - ``total_amount``: the exact total (``Decimal``, never rounded) of the distinct refunds
      answered in this run, each counted once by refund id.
    - ``amount_differs``: refunds whose amount differs from the custom amount asked.
    - ``stopped``: why the run stopped early (``"cancelled"``, the consumer stopped reading,
      or the error that stopped it); None when it ran to the end.
    - ``unfinished``: items read from the input but not handed out when the run stopped.
    - ``unread``: rows of an in-memory input never read when the run stopped (None when the
      input's length is unknown; the command line sets it from the file).
    - ``missing``: purchase ids of items the journal holds as possibly refunded that this run's
      input no longer has (a lazy input can only be checked at its end): resume with the
      earlier input to settle them; nothing new was sent for them.
    - ``journal_refunds`` / ``journal_total``: with a journal, the distinct refunds it holds as
      made (this run and earlier ones) and their exact total; None without one.
    - ``total`` / ``failures``: all items counted / the failed ones.

    Memory: one refund id per distinct refund answered (about 100 bytes each).
    """

    succeeded: int = 0
    replayed: int = 0
    covered: int = 0
    skipped: int = 0
    failed: collections.Counter[str] = attrs.field(factory=collections.Counter)
    failed_items: list[RefundOutcome] = attrs.field(factory=list)
    total_amount: Decimal = Decimal(0)
    amount_differs: int = 0
    stopped: str | None = None
    unfinished: int = 0
    unread: int | None = None
    missing: list[str] = attrs.field(factory=list)
    journal_refunds: int | None = None
    journal_total: Decimal | None = None
    _refund_ids: set[str] = attrs.field(factory=set, repr=False, eq=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, repr=False, eq=False)

    @property
    def total(self) -> int:
        """Every item counted so far: succeeded, replayed, covered, skipped and failed."""
        return self.succeeded + self.replayed + self.covered + self.skipped + self.failures

    @property
    def failures(self) -> int:
        """The failed items (the sum of ``failed``)."""
        return sum(self.failed.values())

    def claim(self, refund: Refund) -> bool:
        """Count ``refund`` once by its id; False if this run already counted it (a replay)."""
        with self._lock:
            if refund.id in self._refund_ids:
                return False
            self._refund_ids.add(refund.id)
            self.total_amount = exact_add(self.total_amount, refund.amount)
            return True

    def add(self, outcome: RefundOutcome) -> None:
        """Count ``outcome`` under exactly one heading (the run calls it; thread-safe)."""
        with self._lock:
            if outcome.skipped:
                self.skipped += 1
            elif outcome.covered_by is not None:
                self.covered += 1
            elif outcome.error is not None:
                self.failed[type(outcome.error).__name__] += 1
                self.failed_items.append(outcome)
            elif outcome.replayed:
                self.replayed += 1
            else:
                self.succeeded += 1
            if outcome.amount_differs:
                self.amount_differs += 1
