"""The core both bulk drivers share: item checks, identities, keys, journal, standings, counting."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs

from ._bulk_groups import Group, Groups
from ._bulk_items import (
    TRANSACTION_HINT,
    InvalidItem,
    ItemFailedError,
    Ordinals,
    RefundItem,
    bulk_idempotency_key,
    canonical_request,
    group_of_request,
    transaction_request,
)
from ._bulk_standing import Answer, Reported, Standing, Verdict, answer_for_status, commit, verdict
from ._bulk_summary import BulkSummary, RefundOutcome
from ._call import AttemptRecord, CallState
from ._exceptions import (
    APIConnectionError,
    APIError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    PermissionDeniedError,
    PreoError,
    RateLimitError,
    RefundOutcomeUnknownError,
    RefundValidationError,
    mark_outcome_unknown,
    shown,
    truncate,
)
from ._journal import Journal, JournalEntry, JournalError, item_identity
from ._models import Refund
from ._pacing import AdaptivePacer
from ._retry import RETRY_AFTER_CAP, SharedPause

if TYPE_CHECKING:
    from ._call import Call
    from ._client import AsyncPreoClient, PreoClient

__all__ = [
    "BULK_MAX_RETRIES",
    "Core",
    "Job",
    "RunPause",
    "Step",
    "Transactions",
    "check_transaction",
    "classify",
    "standing_of",
]

log = logging.getLogger("preo_client")

# Attempts a bulk item may make when the server refuses (429/503) or the request is not sent:
# a long run-wide pause must not turn every item into a failure.
BULK_MAX_RETRIES: Final = 8
_HALTED: Final = 3600.0


def classify(refund: Refund | None, error: BaseException | None) -> Answer:
    """The answer class of what a sent item got: the refund, or the error the client raised
    (an outcome-unknown error, or anything that is not ours, is a lost answer)."""
    if refund is not None:
        return Answer.OK
    if (
        error is None
        or isinstance(error, RefundOutcomeUnknownError | ItemFailedError)
        or not isinstance(error, PreoError)
    ):
        return Answer.LOST
    if isinstance(error, APIStatusError):
        return answer_for_status(error.status_code)
    if isinstance(error, APIConnectionError):
        return Answer.NOT_SENT  # not an outcome-unknown twin: the request never left
    if isinstance(error, APIError):
        return Answer.LOST  # an unreadable answer
    return Answer.INVALID  # refused by our own checks before any I/O


@attrs.define
class Job:
    """An item ready to send: checked, keyed, its request built; ``standing`` is its key's."""

    item: RefundItem
    call: Call
    position: int
    canonical: str
    identity: str
    standing: Standing
    group: Group | None = None
    claim: bool = False  # journal it as its group's carrier before sending
    verdict: Verdict | None = None  # the standing table's verdict on its answer

    @property
    def key(self) -> str:
        return self.call.idempotency_key


Step = RefundOutcome | Job  # what the core hands a driver: an outcome to yield, a job to send


def _refused_names() -> frozenset[str]:
    """Class names of errors after which no refund exists (what a journal's ``failed`` row
    records): every PreoError but the outcome-unknown ones and ItemFailedError."""
    names: set[str] = set()
    pending: list[type[BaseException]] = [PreoError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls is not PreoError and not issubclass(
            cls, RefundOutcomeUnknownError | ItemFailedError
        ):
            names.add(cls.__name__)
    return frozenset(names)


_REFUSED: list[frozenset[str]] = []


def standing_of(entry: JournalEntry | None) -> Standing:
    """The standing an earlier run left an item in: ``done`` (done or covered), ``nothing``
    (refused: surely nothing made), ``may_have_landed`` (started, an unknown outcome, or a
    state this version does not know) or ``new`` (nothing recorded: nothing was sent)."""
    if entry is None:
        return Standing.NEW
    if entry.state in ("done", "covered"):
        return Standing.DONE
    if not _REFUSED:
        _REFUSED.append(_refused_names())
    if entry.state == "failed" and entry.error in _REFUSED[0]:
        return Standing.NOTHING
    return Standing.MAY_HAVE_LANDED


def _safe_repr(value: object) -> str:
    try:
        return truncate(repr(value), 200)
    except Exception:
        return f"<{type(value).__name__}>"


def _differences(recorded: str, now: str) -> str:
    before, after = json.loads(recorded), json.loads(now)
    fields = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return ", ".join(f"{k} was {before.get(k)!r}, now {after.get(k)!r}" for k in fields)


class RunPause(SharedPause):
    """The run-wide pause; a wait longer than the single-call cap is logged at WARNING. A
    stopped run halts it: a worker's next attempt then waits (and a stopping wait raises)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._halted = False

    def extend(self, seconds: float) -> None:
        with self._lock:
            before = self.remaining()
            super().extend(seconds)
        if seconds > RETRY_AFTER_CAP and seconds > before + 1:
            log.warning(
                "server asked to wait %.0fs: pausing the whole bulk run",
                seconds,
                extra={"preo.pause_s": round(seconds, 3)},
            )

    def halt(self) -> None:
        """The run stopped: no worker may start another attempt."""
        self._halted = True

    def remaining(self) -> float:
        return _HALTED if self._halted else super().remaining()


def check_arguments(max_pause: object, journal: object, batch_id: object) -> None:
    """Refuse arguments of the wrong type or value before anything is opened or sent."""
    if batch_id is not None and (not isinstance(batch_id, str) or not batch_id):
        raise RefundValidationError("batch_id", "must be a non-empty string")
    if (
        isinstance(max_pause, bool)
        or not isinstance(max_pause, int | float)
        or not (0 <= max_pause <= sys.float_info.max or max_pause == math.inf)  # no NaN; a float
        or max_pause < 0
    ):
        raise RefundValidationError(
            "max_pause", f"must be a number of seconds >= 0 (inf: no limit), got {shown(max_pause)}"
        )
    if journal is not None and not isinstance(journal, str | os.PathLike):
        raise RefundValidationError(
            "journal", f"must be a path (str or os.PathLike) or None, not {type(journal).__name__}"
        )


class Core:
    """What the sync and async drivers share: item checks, keys, journal, groups, summary.

    Group bookkeeping (``begin``, ``settle``, ``stranded``) runs in the driver only; workers
    call ``start`` and ``record`` (journal writes, thread-safe)."""

    def __init__(
        self,
        client: PreoClient | AsyncPreoClient,
        *,
        reason: str | None,
        scope: str | None,
        journal: str | Path | None,
        batch_id: str | None,
        max_pause: float,
        max_rate: float | None = None,
        pacing: str = "adaptive",
    ) -> None:
        check_arguments(max_pause, journal, batch_id)
        self.pacer = AdaptivePacer(max_rate=max_rate, pacing=pacing)  # type: ignore[arg-type]
        self.client = client
        self.reason = reason
        self.scope = scope
        self.max_pause = float(max_pause)
        self.journal = Journal(journal, batch_id=batch_id) if journal is not None else None
        self.resuming = self.journal is not None and not self.journal.is_empty()
        self.run_id = self.journal.run_id if self.journal else (batch_id or str(uuid.uuid4()))
        self.summary = BulkSummary()
        self.pause = RunPause()
        self.max_retries = max(int(getattr(client, "max_retries", 2)), BULK_MAX_RETRIES)
        self.groups = Groups(self.journal, self.resuming, standing_of)
        self.ordinals = Ordinals()
        self.reproducible = journal is not None or batch_id is not None
        self.transactions: Transactions = {}  # transaction -> first row, request
        if self.resuming and self.journal is not None:
            self._seed_transactions(self.journal)
        self.prechecked = False
        self.matched: set[str] = set()  # identities this input has had (a lazy resume only)

    def _seed_transactions(self, journal: Journal) -> None:
        """What earlier runs asked each transaction for (rows that may have made, or made,
        its refund): a row of this run asking it another request is refused, read first or
        not."""
        for entry in journal.entries():
            if standing_of(entry) in (Standing.MAY_HAVE_LANDED, Standing.DONE):
                with contextlib.suppress(RefundValidationError):  # an older run's conflict
                    where = f"an earlier run's item {entry.position + 1}"
                    check_transaction(self.transactions, entry.request, where)

    def state(self) -> CallState:
        return CallState(
            pause=self.pause,
            pacer=self.pacer,
            retry_after_cap=self.max_pause,
            max_retries=self.max_retries,
        )

    def item(self, raw: object) -> RefundItem:
        if isinstance(raw, str):
            return RefundItem(raw, reason=self.reason, scope=self.scope)
        if isinstance(raw, InvalidItem):
            raise RefundValidationError("item", f"{raw.where}: {raw.problem}")
        if isinstance(raw, RefundItem):
            if raw.reason is None or (raw.scope is None and self.scope is not None):
                return attrs.evolve(
                    raw, reason=raw.reason or self.reason, scope=raw.scope or self.scope
                )
            return raw
        raise RefundValidationError(
            "items", f"each item must be a purchase id or a RefundItem, not {type(raw).__name__}"
        )

    def journal_path(self) -> Path | None:
        return self.journal.path if self.journal is not None else None

    def _canonical(self, raw: object) -> str | None:
        try:
            return canonical_request(self.item(raw))
        except Exception:  # an invalid item is never sent
            return None

    def precheck(self, items: Sequence[object]) -> None:
        """Check a whole in-memory input before anything is sent: rows of one transaction
        asking it for different transaction-scope requests (:class:`RefundValidationError`
        naming both), and (resuming) every journal item that may have made a refund (or did)
        but that this input changed or lacks (:class:`JournalError`)."""
        transactions: Transactions = {}
        for position, raw in enumerate(items):
            canonical = self._canonical(raw)
            if canonical is not None:  # an invalid row is reported as its own failure
                check_transaction(transactions, canonical, f"input item {position + 1}")
        if self.resuming and self.journal is not None:
            identities: set[str] = set()
            ordinals = Ordinals()
            for raw in items:
                canonical = self._canonical(raw)
                if canonical is not None:
                    identities.add(item_identity(canonical, ordinals.next(canonical)))
            self._refuse_missing(items, identities)
        self.prechecked = True

    def _purchase_of(self, raw: object) -> str | None:
        try:
            return self.item(raw).purchase_id
        except Exception:
            return None

    def _refuse_missing(self, items: Sequence[object], identities: set[str]) -> None:
        """Refuse an input lacking a journal item that may have made a refund, or changing
        one that may have (or did): naming the changed row when one is for its purchase."""
        journal = self.journal
        assert journal is not None  # nosec B101  # checked by the caller
        missing: dict[str, JournalEntry] = {}
        for entry in journal.entries():
            if entry.identity not in identities and standing_of(entry) in (
                Standing.MAY_HAVE_LANDED,
                Standing.DONE,
            ):
                purchase_id = str(json.loads(entry.request).get("purchase_id"))
                missing.setdefault(purchase_id, entry)
        if not missing:
            return
        ordinals = Ordinals()
        for position, raw in enumerate(items):  # a row for one of them that is not in it
            row_purchase = self._purchase_of(raw)
            if row_purchase is None or row_purchase not in missing:
                continue
            canonical = self._canonical(raw)
            if canonical is not None:
                identity = item_identity(canonical, ordinals.next(canonical))
                if journal.recorded(identity) is not None:
                    continue
            raise self._changed_error(missing[row_purchase], position, items)
        for entry in missing.values():
            if standing_of(entry) is Standing.MAY_HAVE_LANDED:
                raise self._changed_error(entry, None, items)

    def _changed_error(
        self, entry: JournalEntry, position: int | None, items: Sequence[object]
    ) -> JournalError:
        recorded = json.loads(entry.request)
        how = "may have been refunded" if entry.state != "done" else "was refunded"
        tail = (
            "; resume with the input of that run, or start a new journal (a new key would "
            "refund it again)"
        )
        if position is None:
            return JournalError(
                f"journal {self.journal_path()} holds an item for purchase "
                f"{recorded['purchase_id']!r} (input item {entry.position + 1} of that run) "
                f"that {how} and is missing from this input{tail}",
                position=None,
            )
        raw = items[position]
        canonical = self._canonical(raw)
        if canonical is None:
            problem = "invalid"
            try:
                canonical_request(self.item(raw))
            except Exception as exc:
                problem = str(exc)
            return JournalError(
                f"input item {position + 1} differs from journal {self.journal_path()}: it is "
                f"now invalid ({problem}), and its earlier request {how}{tail}",
                position=position,
            )
        return JournalError(
            f"input item {position + 1} differs from journal {self.journal_path()}: "
            f"{_differences(entry.request, canonical)}{tail}",
            position=position,
        )

    def _check_lazy(self, canonical: str, identity: str, position: int) -> None:
        """A lazy input on resume: a new row for a purchase whose journal item may have made
        a refund (or did) with another request is refused (a systemic stop)."""
        purchase_id = json.loads(canonical)["purchase_id"]
        for entry in self.journal.for_purchase(purchase_id) if self.journal else ():
            if (
                entry.identity in self.matched
                or entry.identity == identity
                or entry.request == canonical  # an identical row (another ordinal): no change
            ):
                continue
            if standing_of(entry) in (Standing.MAY_HAVE_LANDED, Standing.DONE):
                raise JournalError(
                    f"input item {position + 1} differs from journal {self.journal_path()}: "
                    f"{_differences(entry.request, canonical)}; resume with the input of "
                    "that run, or start a new journal (a new key would refund it again)",
                    position=position,
                )

    def missing(self) -> list[str]:
        """At the end of a lazy resumed input: purchase ids of journal items that may have
        made a refund and that the input did not have (reported in the summary)."""
        if not self.resuming or self.journal is None or self.prechecked:
            return []
        return [
            str(json.loads(entry.request)["purchase_id"])
            for entry in self.journal.entries()
            if entry.identity not in self.matched and standing_of(entry) is Standing.MAY_HAVE_LANDED
        ]

    def begin(self, raw: object, position: int) -> list[Step]:
        """Check an item and key it: outcomes to hand out now and jobs to send (none when
        the item waits for its transaction's refund). Raises :class:`JournalError`
        (systemic) when a lazy input changed an item the journal holds."""
        try:
            item = self.item(raw)
        except Exception as exc:
            error = exc if isinstance(exc, PreoError) else ItemFailedError(exc)
            where = raw.where if isinstance(raw, InvalidItem) else _safe_repr(raw)
            return [RefundOutcome(RefundItem(where), None, error, 0, None, False, position)]
        try:
            canonical = canonical_request(item)
        except PreoError as exc:
            return [RefundOutcome(item, None, exc, 0, None, False, position)]
        except Exception as exc:
            return [RefundOutcome(item, None, ItemFailedError(exc), 0, None, False, position)]
        # keys anyone can reproduce (a journal, a batch id, a reference) count identical
        # requests; a fresh random run id makes every other key unique already: its position
        # does, remembering nothing
        counted = self.reproducible or bool(item.reference)
        ordinal = self.ordinals.next(canonical) if counted else position
        identity = item_identity(canonical, ordinal)
        if self.journal is not None:  # audit trail: this run's input (see Journal.note_input)
            self.journal.note_input(position, identity, item.purchase_id)
        entry = self.journal.recorded(identity) if self.resuming and self.journal else None
        if self.resuming and not self.prechecked:
            if entry is None:
                self._check_lazy(canonical, identity, position)
            self.matched.add(identity)  # this input's item: recorded now or from before
        standing = standing_of(entry)
        if standing not in (Standing.MAY_HAVE_LANDED, Standing.DONE):  # else: it stands
            try:
                check_transaction(self.transactions, canonical, f"input item {position + 1}")
            except PreoError as exc:
                return [RefundOutcome(item, None, exc, 0, None, False, position)]
        name = group_of_request(canonical)
        group = self.groups.get(name) if name is not None else None
        if entry is not None and standing is Standing.DONE:
            skipped = RefundOutcome(
                item, None, None, 0, entry.idempotency_key, True, position, earlier=entry
            )
            if group is None:
                return [skipped]
            return [skipped, *self.groups.done_earlier(group, identity, position, entry)]
        key = (
            entry.idempotency_key
            if entry is not None  # resend what may have been sent, with the key it was sent with
            else self._new_key(ordinal, canonical, item, identity)
        )
        try:
            call = self.client._prepare(
                item.purchase_id,
                reason=item.reason or "",
                scope=item.scope,
                amount=item.amount,
                comment=item.comment,
                pickup_point_id=item.pickup_point_id,
                idempotency_key=key,
                timeout=self.client.timeout,
            )
        except Exception as exc:
            error = exc if isinstance(exc, PreoError) else ItemFailedError(exc)
            found = verdict(standing, classify(None, error))
            return [self._failed(item, position, key, 0, error, found, None)]
        job = Job(item, call, position, canonical, identity, standing, group)
        if group is None:
            return [job]
        return self.groups.begin(group, job, entry)

    def _new_key(self, ordinal: int, canonical: str, item: RefundItem, identity: str) -> str:
        """The derived key of an item the journal does not hold; on a resume, never a key the
        journal recorded for another item (an earlier version derived the key of a row with a
        ``transaction_id`` without it: its twin without one would derive the same key). Such
        a key is for the same purchase: only its entries are looked at."""
        key = bulk_idempotency_key(self.run_id, ordinal, canonical, item.reference)
        if not self.resuming or self.journal is None:
            return key
        taken = {
            entry.idempotency_key
            for entry in self.journal.for_purchase(item.purchase_id)
            if entry.identity != identity
        }
        again = 0
        while key in taken:
            again += 1
            salted = f"{canonical}\0again {again}"
            key = bulk_idempotency_key(self.run_id, ordinal, salted, item.reference)
        return key

    def start(self, job: Job) -> None:
        """Commit the item's key (and, for a new carrier, its group's) to the journal: after
        this it may be sent."""
        if self.journal is not None:
            if job.claim and job.group is not None:
                self.journal.claim(job.group.name, job.identity, job.key)
            self.journal.start(
                job.identity, job.position, job.canonical, job.key, job.item.purchase_id
            )
        job.standing = commit(job.standing)

    def attempt_journal(self, job: Job) -> Callable[[AttemptRecord], None] | None:
        """What the retry loop calls after each attempt of ``job`` (``CallState.on_attempt``):
        the journal's audit trail of that attempt; None without a journal."""
        if self.journal is None:
            return None
        return functools.partial(self.journal.record_attempt, job.key)

    def record(
        self,
        job: Job,
        attempts: int,
        *,
        refund: Refund | None = None,
        error: BaseException | None = None,
    ) -> RefundOutcome:
        """The standing table's verdict on a sent item's answer, journaled (a worker calls it)."""
        found = job.verdict = verdict(job.standing, classify(refund, error))
        key = job.key
        if refund is not None:
            asked = job.call.plan.amount
            differs = asked is not None and refund.amount != asked
            note = (
                f"the server refunded {refund.amount}, not the {asked} asked" if differs else None
            )
            outcome = RefundOutcome(
                job.item, refund, None, attempts, key, False, job.position, note=note,
                amount_differs=differs,
            )  # fmt: skip
            if self.journal is not None:
                self.journal.finish(
                    job.identity,
                    "done",
                    refund_id=refund.id,
                    amount=str(refund.amount),
                    request_id=refund.request_id,
                )
            return outcome
        failure = (
            error
            if isinstance(error, PreoError)
            else ItemFailedError(error if error is not None else RuntimeError("no refund"))
        )
        note = None
        if (
            found.reported is Reported.NO_REFUND
            and isinstance(failure, BadRequestError)
            and job.call.plan.scope.startswith("transaction_")
            and job.item.transaction_id is None
        ):
            note = TRANSACTION_HINT
        outcome = self._failed(job.item, job.position, key, attempts, failure, found, note)
        if self.journal is not None:
            assert outcome.error is not None  # nosec B101  # a failed outcome
            self.journal.finish(job.identity, "failed", error=type(outcome.error).__name__)
        return outcome

    def _failed(
        self,
        item: RefundItem,
        position: int,
        key: str | None,
        attempts: int,
        error: PreoError,
        found: Verdict,
        note: str | None,
    ) -> RefundOutcome:
        """A failed outcome reported as the table says: an outcome-unknown class whenever a
        refund may exist, never one that means "no refund"."""
        if found.reported is Reported.UNKNOWN and not isinstance(
            error, RefundOutcomeUnknownError | ItemFailedError
        ):
            if isinstance(error, APIError):
                error = mark_outcome_unknown(error)
                if note is None:
                    note = (
                        "this item's key may already have made its refund (an earlier "
                        "attempt's answer was lost): only a 2xx for that key settles it; "
                        "resume with the same journal, never with a new key"
                    )
            else:
                error = ItemFailedError(error)
        return RefundOutcome(item, None, error, attempts, key, False, position, note=note)

    def settle(self, job: Job, outcome: RefundOutcome) -> list[Step]:
        """A sent item's outcome and what it releases in its transaction group."""
        takeover = job.verdict.takeover if job.verdict is not None else False
        return self.groups.settle(job, outcome, takeover, defer=self.systemic(outcome) is None)

    def stranded(self) -> list[RefundOutcome]:
        """At the end of the input: refused carriers nobody covered, and rows still waiting
        for a carrier that never came."""
        return self.groups.stranded()

    def count(self, outcome: RefundOutcome) -> RefundOutcome:
        """Count an outcome as it is handed out (so the summary is exactly what was yielded):
        a refund this run already counted, or one the server says it replayed, is marked
        replayed; each distinct refund id adds its amount once."""
        refund = outcome.refund
        if refund is not None and outcome.covered_by is None:
            fresh = self.summary.claim(refund)
            if not fresh or refund.replayed:
                outcome = attrs.evolve(outcome, replayed=True)
        self.summary.add(outcome)
        return outcome

    def systemic(self, outcome: RefundOutcome) -> PreoError | None:
        """The error that must stop the whole run, if this outcome carries one."""
        error = outcome.error
        if isinstance(error, AuthenticationError | PermissionDeniedError):
            return error
        wait_for = getattr(error, "retry_after", None)
        if (
            isinstance(error, RateLimitError | InternalServerError)
            and wait_for is not None
            and wait_for > self.max_pause
        ):
            return error
        return None

    def finish(self, *, whole: bool) -> None:
        """The summary's journal totals and (``whole``: the input was read to its end) the
        journal items it lacked, at the end of a run."""
        if self.journal is None:
            return
        try:
            if whole:
                self.summary.missing = self.missing()
                self.journal.input_read()  # audit trail: this run's input is the whole input
            self.summary.journal_refunds, self.summary.journal_total = self.journal.refunded()
        except JournalError:
            pass  # the run is stopping on a journal problem already reported

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()


Transactions = dict[str, tuple[str, tuple[str, str, str | None]]]
"""Each transaction's first row (``"input item 3"``, ``"line 4"``) and request (reason, scope,
amount)."""


def check_transaction(transactions: Transactions, canonical: str, where: str) -> None:
    """Refuse a row (``where``: "input item 3", "line 4") asking its transaction for another
    transaction-scope request (reason, scope or amount) than an earlier row did: one request
    refunds the whole transaction, two would refund it twice (``transactions``: each
    transaction's first row and request, updated)."""
    wanted = transaction_request(canonical)
    if wanted is None:
        return
    transaction, reason, scope, amount = wanted
    first_where, first = transactions.setdefault(transaction, (where, (reason, scope, amount)))
    if first == (reason, scope, amount):
        return
    if first[:2] == (reason, scope):
        raise RefundValidationError(
            "amount",
            f"transaction {transaction!r} is asked for {amount or 'its full amount'} by "
            f"{where} but for {first[2] or 'its full amount'} by {first_where}: one "
            "transaction-scope refund covers the whole transaction; give its rows one amount",
        )
    field = "reason" if first[0] != reason else "scope"

    def text(request: tuple[str, str, str | None]) -> str:
        return f"{request[1]} {request[2] or 'full amount'} for {request[0]}"

    raise RefundValidationError(
        field,
        f"transaction {transaction!r} is asked for {text((reason, scope, amount))} by {where} but "
        f"for {text(first)} by {first_where}: one transaction-scope refund covers the whole "
        "transaction, two would refund it twice; give its rows one request",
    )
