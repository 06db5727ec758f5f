"""Transaction groups of a bulk run: one carrier row's request per transaction, the rest covered.

A group is the rows of one ``transaction_id`` asking one transaction request (reason, scope,
amount), whatever their purchase, ``reference``, comment or pickup point: one transaction-scope
refund refunds them all. The *carrier* is the row whose own request (its text: comment, pickup
point; and its key) is sent for the group: the first row of the group read, or on a resume the
row the journal recorded as carrier. Who may take over when the carrier fails is decided by the
standing table (``_bulk_standing``): only a carrier that surely made nothing hands over. Its
outcome is held back until the group resolves: covered when a later carrier refunds the
transaction (its purchase included), told the refund is unknown when that carrier's outcome is
unknown, and reported as its own failure only when no row of the group refunded it (at the end
of the input).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from ._bulk_items import CoveringRefundUnknownError
from ._bulk_standing import Standing
from ._bulk_summary import RefundOutcome

if TYPE_CHECKING:
    from ._bulk_core import Job, Step
    from ._journal import Journal, JournalEntry

__all__ = ["Group", "Groups"]


@attrs.define
class Group:
    """The items of one transaction that one transaction-scope refund covers.

    ``carrier`` is the identity of the row whose request (and key) carries the group's refund:
    sent, to be sent, or (on a resume) recorded by the journal and to be resent when its row is
    read; ``carrier_position`` its position in this input (-1 until read). ``state``: ``open``
    (no refund and no carrier: the next row takes over), ``pending`` (the carrier's answer is
    awaited; other rows wait in ``waiting``), ``ok`` (the refund exists) or ``unknown`` (the
    carrier's outcome is unknown: nothing more may be sent for the group). ``deferred``: the
    refused carriers that handed over, with their own outcomes, held until the group resolves.
    """

    name: str
    carrier: str | None = None
    carrier_position: int = -1
    key: str | None = None
    state: str = "open"
    outcome: RefundOutcome | None = None
    refund_id: str | None = None
    waiting: collections.deque[Job] = attrs.field(factory=collections.deque)
    deferred: list[tuple[Job, RefundOutcome]] = attrs.field(factory=list)


class Groups:
    """Every transaction group of a run (driver thread only: no locking)."""

    def __init__(
        self,
        journal: Journal | None,
        resuming: bool,
        standing_of: Callable[[JournalEntry | None], Standing],
    ) -> None:
        self._journal = journal
        self._resuming = resuming
        self._standing_of = standing_of
        self._groups: dict[str, Group] = {}

    def get(self, name: str) -> Group:
        """The group ``name``, as this run left it or (resuming) as the journal recorded it."""
        group = self._groups.get(name)
        if group is not None:
            return group
        group = self._groups[name] = Group(name)
        journal = self._journal
        recorded = journal.carrier(name) if self._resuming and journal is not None else None
        if recorded is not None and journal is not None:
            group.carrier, group.key = recorded
            entry = journal.recorded(group.carrier)
            standing = self._standing_of(entry)
            if entry is not None:  # until its row is read: where an earlier run had it
                group.carrier_position = entry.position
            if entry is not None and entry.state == "done":
                group.state, group.refund_id = "ok", entry.refund_id
            elif standing is Standing.NEW or (standing is Standing.NOTHING):
                # claimed but never sent, or refused: nothing exists, another may take over
                group.carrier = group.key = None
                group.carrier_position = -1
            else:  # may have landed (or a carrier covered by an older layout): resent when read
                group.state = "pending"
        return group

    def begin(self, group: Group, job: Job, entry: JournalEntry | None) -> list[Step]:
        """A row of ``group`` read: sent (a carrier, or a row whose own key may have landed),
        waiting for the carrier, covered, or told the group's refund is unknown."""
        if job.standing is Standing.MAY_HAVE_LANDED:
            # its own request may have made a refund: it keeps its key and role (resent with
            # it), never covered by another row's later request
            if group.state == "open" or group.carrier == job.identity:
                group.carrier, group.key, group.state = job.identity, job.key, "pending"
                group.carrier_position = job.position
            return [job]
        if group.carrier == job.identity:
            group.carrier_position = job.position
            if group.state == "pending":  # recorded as carrier, claimed but not sent: send
                return [job]
        return self.join(group, job)

    def join(self, group: Group, job: Job) -> list[Step]:
        """A row with nothing of its own sent joins its group: covered, told the refund is
        unknown, waiting for the carrier, or (no carrier) taking over as the carrier."""
        if group.state == "ok":
            return [self.covered(group, job)]
        if group.state == "unknown":
            return [self.uncertain(group, job)]
        if group.state == "pending":
            group.waiting.append(job)
            return []
        group.carrier, group.key, group.state = job.identity, job.key, "pending"
        group.carrier_position = job.position
        job.claim = True
        return [job]

    def done_earlier(
        self, group: Group, identity: str, position: int, entry: JournalEntry
    ) -> list[Step]:
        """A row an earlier run finished: when its own request made the group's refund, the
        group is resolved by it."""
        if entry.state != "done" or group.state == "ok":
            return []
        group.carrier, group.key, group.carrier_position = identity, entry.idempotency_key, position
        group.refund_id = entry.refund_id
        return self.resolved(group, None)

    def covered(self, group: Group, job: Job, held: RefundOutcome | None = None) -> RefundOutcome:
        """``job``'s row covered by its group's refund (journaled). ``held``: the own outcome
        of a refused carrier that handed over (its attempts and key are kept: the journal
        keeps its key, a resume reports it)."""
        leader = group.outcome
        refund = leader.refund if leader is not None else None
        carrier = group.carrier_position if group.carrier_position >= 0 else None
        attempts, key = (held.attempts, held.idempotency_key) if held else (0, group.key)
        outcome = RefundOutcome(
            job.item, refund, None, attempts, key, False, job.position, covered_by=carrier
        )
        if outcome.covered_by is None:  # carried by a row of an earlier run's input
            outcome = attrs.evolve(outcome, covered_by=-1)
        if self._journal is not None:
            refund_id = refund.id if refund is not None else group.refund_id
            self._journal.cover(
                job.identity, job.position, job.canonical, group.key or "", refund_id
            )
        return outcome

    def uncertain(self, group: Group, job: Job, attempts: int = 0) -> RefundOutcome:
        """``job``'s row: its transaction may be refunded, a second request could refund it
        twice: nothing (more) is sent for it."""
        error = CoveringRefundUnknownError(group.carrier_position)
        return RefundOutcome(job.item, None, error, attempts, None, False, job.position)

    def resolved(self, group: Group, outcome: RefundOutcome | None) -> list[Step]:
        """The group's refund exists: every refused carrier and waiting row is covered."""
        group.state, group.outcome = "ok", outcome
        deferred, group.deferred = group.deferred, []
        waiting, group.waiting = group.waiting, collections.deque()
        return [
            *(self.covered(group, job, held) for job, held in deferred),
            *(self.covered(group, job) for job in waiting),
        ]

    def settle(
        self, job: Job, outcome: RefundOutcome, takeover: bool, defer: bool = True
    ) -> list[Step]:
        """A sent row's outcome and what it releases: its group's waiting rows covered (or told
        the refund is unknown), or, when the table allows a takeover (the carrier surely made
        nothing), the next waiting row as the group's new carrier (journaled before it is sent),
        this row's outcome held back until the group resolves (unless ``defer`` is false: the
        run stops on it)."""
        group = job.group
        if group is None:
            return [outcome]
        if group.carrier != job.identity:  # an earlier run's extra sender, resent with its key
            if outcome.refund is not None and group.state != "ok":
                group.carrier, group.key = job.identity, job.key
                group.carrier_position = job.position
                return [outcome, *self.resolved(group, outcome)]
            return [outcome]
        if outcome.refund is not None:
            return [outcome, *self.resolved(group, outcome)]
        if not takeover:
            group.state, group.outcome = "unknown", outcome
            deferred, group.deferred = group.deferred, []
            waiting, group.waiting = group.waiting, collections.deque()
            return [
                *(self.uncertain(group, held_job, held.attempts) for held_job, held in deferred),
                outcome,
                *(self.uncertain(group, waiting_job) for waiting_job in waiting),
            ]
        group.state, group.carrier, group.key = "open", None, None  # nothing made: take over
        group.carrier_position = -1
        if not defer:  # the run stops on it: nobody takes over, the group's rows stand as they are
            deferred, group.deferred = group.deferred, []
            return [*(held for _, held in deferred), outcome]
        # held back: a later carrier's refund would cover this row's purchase too
        group.deferred.append((job, outcome))
        if not group.waiting:
            return []
        return self.join(group, group.waiting.popleft())

    def stranded(self) -> list[RefundOutcome]:
        """At the end of the input: refused carriers no row of their group refunded (their own
        failure, as it was), and rows still waiting for a carrier that never came (an earlier
        run's row, not in this input): their transaction's refund is unknown."""
        outcomes: list[RefundOutcome] = []
        for group in self._groups.values():
            deferred, group.deferred = group.deferred, []
            outcomes.extend(held for _, held in deferred)
            while group.waiting:
                outcomes.append(self.uncertain(group, group.waiting.popleft()))
        return outcomes
