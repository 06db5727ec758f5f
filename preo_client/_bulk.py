"""Bulk refunds: a bounded task group, a run-wide pause, a journal, keys that survive restarts."""

from __future__ import annotations

import asyncio
import collections
import copy
import functools
import hashlib
import inspect
import json
import logging
import queue
import threading
import uuid
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from concurrent.futures import Future, ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import httpx

from ._call import AttemptRecord, CallState
from ._exceptions import (
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    PermissionDeniedError,
    PreoError,
    RateLimitError,
    RefundOutcomeUnknownError,
    RefundValidationError,
    truncate,
)
from ._journal import Journal, JournalEntry, JournalError
from ._models import Refund
from ._observe import bulk_trace
from ._pacing import AdaptivePacer
from ._policy import check_comment, check_pickup_point_id, check_purchase_id, plan_refund
from ._retry import DEFAULT_MAX_PAUSE, RETRY_AFTER_CAP, SharedPause

if TYPE_CHECKING:
    from ._call import Call
    from ._client import AsyncPreoClient, PreoClient

__all__ = [
    "DEFAULT_MAX_PAUSE",
    "AsyncBulkRun",
    "BulkRun",
    "BulkSummary",
    "CoveringRefundUnknownError",
    "InvalidItem",
    "ItemFailedError",
    "JournalError",
    "RefundItem",
    "RefundOutcome",
    "bulk_idempotency_key",
    "canonical_request",
]

log = logging.getLogger("preo_client")

SHARD_SIZE: Final = 8
# Attempts a bulk item may make when the server refuses (429/503) or the request is not sent:
# a long run-wide pause must not turn every item into a failure.
BULK_MAX_RETRIES: Final = 8
_KEY_NAMESPACE: Final = uuid.UUID("0d7c5b8e-1f5a-4c43-9a0e-7b2f8c1e5a11")
_TEXT_FIELDS: Final = ("comment", "pickup_point_id", "reference", "transaction_id")
TRANSACTION_HINT: Final = (
    "this purchase's transaction may already have been refunded by another row of this run "
    "(transaction scopes refund every purchase of the transaction); give each row its "
    "transaction_id so one request is sent per transaction and the others are reported as covered"
)


@attrs.frozen
class RefundItem:
    """One refund of a bulk run (frozen). Every field but ``purchase_id`` is optional:

    - ``purchase_id``: the purchase to refund.
    - ``reason`` / ``scope``: as for ``client.purchases.refund``; None falls back to the
      run's common ``reason`` / ``scope`` (a scope left out is derived from the reason).
    - ``amount``: for the custom scopes only: a ``Decimal``, ``int`` or decimal ``str``
      (exact; at most two decimal places).
    - ``comment``: free text sent with the refund; ``pickup_point_id``: the pickup point
      where the refund is processed.
    - ``reference``: a business id (e.g. an order line) that makes the idempotency key
      reproducible from the item alone: the same reference and request send the same key in
      any run, at any position.
    - ``transaction_id``: the purchase's transaction. With a transaction scope, one request
      is sent per transaction and the run's other items of it are reported as covered
      (``RefundOutcome.covered_by``).
    """

    purchase_id: str
    reason: str | None = None
    scope: str | None = None
    amount: Decimal | int | str | None = None
    comment: str | None = None
    pickup_point_id: str | None = None
    reference: str | None = None
    transaction_id: str | None = None


@attrs.frozen
class InvalidItem:
    """An input row that could not become a :class:`RefundItem` (reported, never sent)."""

    where: str
    problem: str


class ItemFailedError(PreoError):
    """An unexpected error while handling one item (``.original``); the run goes on."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(f"{type(original).__name__}: {truncate(str(original), 300)}")
        self.original = original


class CoveringRefundUnknownError(RefundOutcomeUnknownError):
    """The refund of this item's transaction (sent for another item) has an unknown outcome:
    this purchase may be refunded by it. Nothing was sent for this item; a resume resends that
    refund with its key."""

    def __init__(self, leader: int) -> None:
        super().__init__(
            f"the refund of this purchase's transaction (sent for item {leader + 1}) has an "
            "unknown outcome; nothing was sent for this item: resume with the same journal"
        )
        self.leader = leader


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
    - ``replayed``: the server answered with a refund another item of this run already got
      (counted once in the summary).
    - ``covered_by``: the position of the item whose transaction refund covers this one
      (nothing sent for it); None otherwise.
    - ``note``: a hint explaining a failure, or None.
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
    - ``replayed``: items answered with a refund another item of this run already got.
    - ``covered``: items covered by their transaction's refund (nothing sent for them).
    - ``skipped``: items a previous run already did (per the journal).
    - ``failed``: failed items by error class name (a ``collections.Counter``).
    - ``failed_items``: the failed :class:`RefundOutcome` objects, in the order handed out.
    - ``total_amount``: the exact total (``Decimal``) of the distinct refunds counted.
    - ``stopped``: why the run stopped early (``"cancelled"``, the consumer stopped reading,
      or the error that stopped it); None when it ran to the end.
    - ``unfinished``: items read from the input but not handed out when the run stopped.
    - ``total`` / ``failures``: all items counted / the failed ones.
    """

    succeeded: int = 0
    replayed: int = 0
    covered: int = 0
    skipped: int = 0
    failed: collections.Counter[str] = attrs.field(factory=collections.Counter)
    failed_items: list[RefundOutcome] = attrs.field(factory=list)
    total_amount: Decimal = Decimal(0)
    stopped: str | None = None
    unfinished: int = 0
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

    def claim(self, refund: Refund, *, may_repeat: bool = True) -> bool:
        """Count ``refund`` once; False if this run already counted it (a replay).

        Only a refund whose idempotency key another item of the run may send again (an item
        with a ``reference``: its key comes from its request and reference alone) is
        remembered; every other key is unique to its position in the run, so its refund cannot
        come back, and remembering it would only grow memory with the run.
        """
        with self._lock:
            if refund.id in self._refund_ids:
                return False
            if may_repeat:
                self._refund_ids.add(refund.id)
            self.total_amount += refund.amount
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


def canonical_request(item: RefundItem) -> str:
    """The item's identity as exact text: the request it sends (scope derived, amount to the
    cent), its reference and, when set, its ``transaction_id`` (which decides what its
    transaction-scope request covers, so a resume may not change it). Raises
    :class:`RefundValidationError` for an invalid item."""
    check_purchase_id(item.purchase_id)
    check_comment(item.comment)
    check_pickup_point_id(item.pickup_point_id)
    for name in _TEXT_FIELDS:
        if not isinstance(getattr(item, name), str | None):
            raise RefundValidationError(name, "must be a string")
    if item.reason is None:
        raise RefundValidationError("reason", "is required (per item or for the run)")
    plan = plan_refund(item.reason, item.scope, item.amount)
    amount = None if plan.amount is None else f"{plan.amount.quantize(Decimal('0.01')):f}"
    request = {
        "purchase_id": item.purchase_id,
        "reason": str(plan.reason),
        "scope": str(plan.scope),
        "amount": amount,
        "comment": item.comment,
        "pickup_point_id": item.pickup_point_id,
        "reference": item.reference,
    }
    if item.transaction_id is not None:  # absent when unset: identities without one unchanged
        request["transaction_id"] = item.transaction_id
    return json.dumps(request, sort_keys=True, separators=(",", ":"))  # ASCII: \ud83d escaped


def _sent_part(canonical: str) -> str:
    """The part of a canonical identity that is sent (``transaction_id`` never is)."""
    if '"transaction_id":' not in canonical:
        return canonical
    request = json.loads(canonical)
    request.pop("transaction_id", None)
    return json.dumps(request, sort_keys=True, separators=(",", ":"))


def bulk_idempotency_key(run_id: str, position: int, canonical: str, reference: str | None) -> str:
    """The key of a bulk item: from its ``reference`` and request alone when it has one (any
    run, any position sends the same key), else from the run id, its position and request.
    The request is what is sent: a ``transaction_id`` in ``canonical`` does not change it."""
    sent = _sent_part(canonical)
    name = f"ref\0{sent}" if reference else f"run\0{run_id}\0{position}\0{sent}"
    return f"preo-{uuid.uuid5(_KEY_NAMESPACE, name)}"


def _group_name(item: RefundItem, canonical: str) -> str | None:
    """The transaction group of a transaction-scope item with a ``transaction_id``: its
    transaction and request but the purchase (one request refunds them all), as a digest."""
    if item.transaction_id is None or '"scope":"transaction_' not in canonical:
        return None
    request = json.loads(canonical)
    del request["purchase_id"]
    text = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _may_have_landed(error: BaseException) -> bool:
    """Whether a failed item's request may have made its refund (else: surely nothing)."""
    return isinstance(error, RefundOutcomeUnknownError | ItemFailedError) or not isinstance(
        error, PreoError
    )


@functools.cache
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


def _standing(entry: JournalEntry | None) -> str | None:
    """What an earlier run left for a row: ``done``, ``covered``, ``sent`` (its own request
    may have made a refund: in flight or unknown) or ``refused`` (it surely made nothing);
    None: nothing was recorded (nothing was sent)."""
    if entry is None:
        return None
    if entry.state in ("done", "covered"):
        return entry.state
    if entry.state == "failed" and entry.error in _refused_names():
        return "refused"
    return "sent"  # started, an unknown outcome, or a state this version does not know


def _safe_repr(value: object) -> str:
    try:
        return truncate(repr(value), 200)
    except Exception:
        return f"<{type(value).__name__}>"


def _differences(recorded: str, now: str) -> str:
    before, after = json.loads(recorded), json.loads(now)
    fields = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return ", ".join(f"{k} was {before.get(k)!r}, now {after.get(k)!r}" for k in fields)


class _RunPause(SharedPause):
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


_HALTED: Final = 3600.0


@attrs.define
class _Job:
    """An item ready to send: checked, keyed, its request built."""

    item: RefundItem
    call: Call
    position: int
    canonical: str
    group: _Group | None = None
    claim: bool = False  # journal it as its group's carrier before sending


@attrs.define
class _Group:
    """The items of one transaction that one transaction-scope refund covers.

    ``carrier`` is the row whose request (and key) carries the group's refund: sent, to be
    sent, or (on a resume) recorded by the journal and to be resent when its row is read.
    ``state``: ``open`` (no refund and no carrier: the next row takes over), ``pending`` (the
    carrier's answer is awaited; other rows wait in ``waiting``), ``ok`` (the refund exists) or
    ``unknown`` (the carrier's outcome is unknown: nothing more may be sent for the group).
    """

    name: str
    carrier: int | None = None
    key: str | None = None
    state: str = "open"
    outcome: RefundOutcome | None = None
    refund_id: str | None = None
    waiting: collections.deque[_Job] = attrs.field(factory=collections.deque)


Step = RefundOutcome | _Job  # what the core hands a driver: an outcome to yield, a job to send


class _Core:
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
        self.pacer = AdaptivePacer(max_rate=max_rate, pacing=pacing)  # type: ignore[arg-type]
        if batch_id is not None and (not isinstance(batch_id, str) or not batch_id):
            raise RefundValidationError("batch_id", "must be a non-empty string")
        if not max_pause >= 0:
            raise RefundValidationError("max_pause", f"must be >= 0 seconds, got {max_pause}")
        self.client = client
        self.reason = reason
        self.scope = scope
        self.max_pause = float(max_pause)
        self.journal = Journal(journal, batch_id=batch_id) if journal is not None else None
        self.resuming = self.journal is not None and not self.journal.is_empty()
        self.run_id = self.journal.run_id if self.journal else (batch_id or str(uuid.uuid4()))
        self.summary = BulkSummary()
        self.pause = _RunPause()
        self.max_retries = max(int(getattr(client, "max_retries", 2)), BULK_MAX_RETRIES)
        self.groups: dict[str, _Group] = {}

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

    def check_journal(self, position: int, canonical: str) -> JournalEntry | None:
        """What the journal recorded at ``position``; refuses an input item that differs."""
        entry = self.journal.recorded(position) if self.resuming and self.journal else None
        if entry is not None and entry.request != canonical:
            raise JournalError(
                f"input item {position + 1} differs from journal {self.journal_path()}: "
                f"{_differences(entry.request, canonical)}; resume with the input of that run, "
                "or start a new journal",
                position=position,
            )
        return entry

    def journal_path(self) -> Path | None:
        return self.journal.path if self.journal is not None else None

    def precheck(self, items: Sequence[object]) -> None:
        """Compare a whole in-memory input with the journal before anything is sent."""
        if not self.resuming:
            return
        for position, raw in enumerate(items):
            try:
                canonical = canonical_request(self.item(raw))
            except Exception:  # noqa: S112  # nosec B112  # an invalid item is never sent
                continue
            self.check_journal(position, canonical)

    def begin(self, raw: object, position: int) -> list[Step]:
        """Check an item and key it: outcomes to hand out now and jobs to send (none when
        the item waits for its transaction's refund). Raises :class:`JournalError`
        (systemic) when the input differs from the journal."""
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
        entry = self.check_journal(position, canonical)
        standing = _standing(entry)
        name = _group_name(item, canonical)
        group = self._group(name) if name is not None else None
        if entry is not None and standing in ("done", "covered"):
            skipped = RefundOutcome(item, None, None, 0, entry.idempotency_key, True, position)
            if group is not None and standing == "done" and group.state != "ok":
                # this row's own request made the group's refund
                group.carrier, group.key = position, entry.idempotency_key
                group.refund_id = entry.refund_id
                return [skipped, *self._resolved(group, None)]
            return [skipped]
        key = (
            entry.idempotency_key
            if entry is not None  # resend what may have landed, with the key it was sent with
            else bulk_idempotency_key(self.run_id, position, canonical, item.reference)
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
        except PreoError as exc:
            return [RefundOutcome(item, None, exc, 0, key, False, position)]
        except Exception as exc:
            return [RefundOutcome(item, None, ItemFailedError(exc), 0, key, False, position)]
        job = _Job(item, call, position, canonical, group)
        if group is None:
            return [job]
        if standing == "sent":
            # its own request may have made a refund: it keeps its key and role (resent with
            # it), never covered by another row's later request
            if group.state == "open" or group.carrier == position:
                group.carrier, group.key, group.state = position, key, "pending"
            return [job]
        return self._join(group, job)

    def _group(self, name: str) -> _Group:
        """The group ``name``, as this run left it or (resuming) as the journal recorded it."""
        group = self.groups.get(name)
        if group is not None:
            return group
        group = self.groups[name] = _Group(name)
        recorded = self.journal.carrier(name) if self.resuming and self.journal else None
        if recorded is not None and self.journal is not None:
            group.carrier, group.key = recorded
            entry = self.journal.recorded(group.carrier)
            standing = _standing(entry)
            if standing == "done" and entry is not None:
                group.state, group.refund_id = "ok", entry.refund_id
            elif standing in ("sent", "covered"):
                group.state = "pending"  # resent when its row is read; others wait for it
            else:  # refused, or claimed but never sent: nothing exists, another may take over
                group.carrier = group.key = None
        return group

    def _join(self, group: _Group, job: _Job) -> list[Step]:
        """A row with nothing of its own sent joins its group: covered, told the refund is
        unknown, waiting for the carrier, or (no carrier) taking over as the carrier."""
        if group.state == "ok":
            return [self._covered(group, job)]
        if group.state == "unknown":
            return [self._uncertain(group, job)]
        if group.state == "pending":
            group.waiting.append(job)
            return []
        group.carrier, group.key, group.state = job.position, job.call.idempotency_key, "pending"
        job.claim = True
        return [job]

    def _covered(self, group: _Group, job: _Job) -> RefundOutcome:
        leader = group.outcome
        refund = leader.refund if leader is not None else None
        outcome = RefundOutcome(
            job.item, refund, None, 0, group.key, False, job.position, covered_by=group.carrier
        )
        if self.journal is not None:
            refund_id = refund.id if refund is not None else group.refund_id
            self.journal.cover(job.position, job.canonical, group.key or "", refund_id)
        return outcome

    def _uncertain(self, group: _Group, job: _Job) -> RefundOutcome:
        # the transaction may be refunded: a second request could refund it twice
        error = CoveringRefundUnknownError(group.carrier if group.carrier is not None else -1)
        return RefundOutcome(job.item, None, error, 0, None, False, job.position)

    def _resolved(self, group: _Group, outcome: RefundOutcome | None) -> list[Step]:
        group.state, group.outcome = "ok", outcome
        waiting, group.waiting = group.waiting, collections.deque()
        return [self._covered(group, job) for job in waiting]

    def start(self, job: _Job) -> None:
        """Commit the item's key (and, for a new carrier, its group's) to the journal: after
        this it may be sent."""
        if self.journal is not None:
            if job.claim and job.group is not None:
                self.journal.claim(job.group.name, job.position, job.call.idempotency_key)
            self.journal.start(job.position, job.canonical, job.call.idempotency_key)

    def attempt_journal(self, job: _Job) -> Callable[[AttemptRecord], None] | None:
        """What the retry loop calls after each attempt of ``job`` (``CallState.on_attempt``):
        the journal's audit trail of that attempt; None without a journal."""
        if self.journal is None:
            return None
        return functools.partial(self.journal.record_attempt, job.call.idempotency_key)

    def record(
        self,
        job: _Job,
        attempts: int,
        *,
        refund: Refund | None = None,
        error: BaseException | None = None,
    ) -> RefundOutcome:
        """Record a sent item's refund or error in the journal (a worker calls it)."""
        key = job.call.idempotency_key
        if refund is not None:
            outcome = RefundOutcome(job.item, refund, None, attempts, key, False, job.position)
            if self.journal is not None:
                self.journal.finish(
                    job.position, "done", refund_id=refund.id, amount=str(refund.amount)
                )
            return outcome
        failure = (
            error
            if isinstance(error, PreoError)
            else ItemFailedError(error if error is not None else RuntimeError("no refund"))
        )
        note = None
        if isinstance(failure, BadRequestError) and job.call.plan.scope.startswith("transaction_"):
            note = TRANSACTION_HINT if job.item.transaction_id is None else None
        outcome = RefundOutcome(
            job.item, None, failure, attempts, key, False, job.position, note=note
        )
        if self.journal is not None:
            self.journal.finish(job.position, "failed", error=type(failure).__name__)
        return outcome

    def settle(self, job: _Job, outcome: RefundOutcome) -> list[Step]:
        """A sent item's outcome and what it releases: its group's waiting rows covered (or
        told the refund is unknown), or, when the carrier surely made nothing, the next
        waiting row as the group's new carrier (journaled before it is sent)."""
        group = job.group
        if group is None:
            return [outcome]
        if group.carrier != job.position:  # an earlier run's extra sender, resent with its key
            if outcome.refund is not None and group.state != "ok":
                group.carrier, group.key = job.position, job.call.idempotency_key
                return [outcome, *self._resolved(group, outcome)]
            return [outcome]
        if outcome.refund is not None:
            return [outcome, *self._resolved(group, outcome)]
        if outcome.error is not None and _may_have_landed(outcome.error):
            group.state, group.outcome = "unknown", outcome
            waiting, group.waiting = group.waiting, collections.deque()
            return [outcome, *(self._uncertain(group, waiting_job) for waiting_job in waiting)]
        group.state, group.carrier, group.key = "open", None, None  # nothing made: take over
        if not group.waiting:
            return [outcome]
        return [outcome, *self._join(group, group.waiting.popleft())]

    def stranded(self) -> list[RefundOutcome]:
        """At the end of the input: rows still waiting for a carrier that never came (an
        earlier run's row, not in this input): their transaction's refund is unknown."""
        outcomes: list[RefundOutcome] = []
        for group in self.groups.values():
            while group.waiting:
                outcomes.append(self._uncertain(group, group.waiting.popleft()))
        return outcomes

    def count(self, outcome: RefundOutcome) -> RefundOutcome:
        """Count an outcome as it is handed out (so the summary is exactly what was yielded);
        a refund this run already counted is marked replayed."""
        fresh = outcome.refund is not None and outcome.covered_by is None
        may_repeat = outcome.item.reference is not None
        if (
            fresh
            and outcome.refund is not None
            and not self.summary.claim(outcome.refund, may_repeat=may_repeat)
        ):
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

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()


ItemInput = RefundItem | InvalidItem | str
OnResult = Callable[[RefundOutcome], Awaitable[None] | None]
Read = tuple[str, object]  # ("item", raw) / ("end", None) / ("error", exception)


def _stop_reason(exc: BaseException) -> str:
    if isinstance(exc, GeneratorExit):
        return "the consumer stopped reading outcomes"
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        return "cancelled"
    return f"{type(exc).__name__}: {truncate(str(exc), 300)}"


def _read_one(iterator: Iterator[object]) -> Read:
    try:
        return ("item", next(iterator))
    except StopIteration:
        return ("end", None)
    except Exception as exc:  # the input failed: the run finishes what is in flight, raises it
        return ("error", exc)


class _ThreadReader:
    """Reads a sync iterator in a daemon thread, one item per ``request``, so that a ``next()``
    that blocks (a slow producer, standard input) never blocks the run: outcomes and stops are
    handled meanwhile. A ``next()`` cannot be interrupted: a stopped run leaves it to return
    in the background (its item is then dropped, unread by the run)."""

    def __init__(self, items: Iterable[object]) -> None:
        self._items = items
        self._requests: queue.SimpleQueue[Callable[[Read], object] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def request(self, deliver: Callable[[Read], object]) -> None:
        """Read the next item; ``deliver`` gets it (called in the reader thread)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._read, name="preo-items", daemon=True)
            self._thread.start()
        self._requests.put(deliver)

    def close(self) -> None:
        if self._thread is not None:
            self._requests.put(None)

    def _read(self) -> None:
        try:
            iterator = iter(self._items)
        except Exception as exc:
            failed: Read | None = ("error", exc)
        else:
            failed = None
        while (deliver := self._requests.get()) is not None:
            read = failed or _read_one(iterator)
            try:
                deliver(read)
            except Exception:  # the run is gone (its loop closed): stop reading
                return
            if read[0] != "item":
                return


def _inline(items: object) -> bool:
    """An in-memory sequence is read in place (its ``next()`` never blocks)."""
    return isinstance(items, Sequence) and not isinstance(items, str)


class _Run:
    """What both drivers hold: the checked concurrency, the shared core, the live summary."""

    def __init__(
        self,
        client: PreoClient | AsyncPreoClient,
        items: object,
        *,
        reason: str | None,
        scope: str | None,
        concurrency: int,
        journal: str | Path | None,
        batch_id: str | None,
        max_pause: float,
        max_rate: float | None = None,
        pacing: str = "adaptive",
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise RefundValidationError("concurrency", f"must be at least 1, got {concurrency}")
        self._concurrency = concurrency
        self._core = _Core(
            client, reason=reason, scope=scope, journal=journal, batch_id=batch_id,
            max_pause=max_pause, max_rate=max_rate, pacing=pacing,
        )  # fmt: skip
        self.summary: BulkSummary = self._core.summary
        self.pacer: AdaptivePacer = self._core.pacer
        self.run_id: str = self._core.run_id
        self._yielded = 0
        try:
            if _inline(items):
                self._core.precheck(items)  # type: ignore[arg-type]
        except BaseException:
            self._core.close()
            raise

    def close(self) -> None:
        """Release the journal of a run that will not be iterated (idempotent)."""
        self._core.close()


class AsyncBulkRun(_Run):
    """An async iterator of :class:`RefundOutcome`, in completion order; ``summary`` is live.

    A task group: at most ``concurrency`` items in flight; every task is awaited or cancelled
    on every exit path (end, error, ``break``, cancellation). One outcome per input item, or
    the run raises the systemic error that stopped it (``401``/``403``, a ``Retry-After`` above
    ``max_pause``, ``on_result`` raising, a journal problem, the input iterator failing).

    A slow input never holds back outcomes or a stop: an async iterable is awaited beside the
    requests; a sync iterator (not an in-memory sequence) is read in a daemon thread, one
    ``next()`` at a time. A blocking ``next()`` cannot be interrupted: a stopped run leaves it
    to return in the background and drops what it returns.

    Attributes: ``summary`` (the live :class:`BulkSummary`; ``run()`` returns it), ``run_id``
    (the batch id the idempotency keys derive from: the journal's, else ``batch_id``, else a
    fresh UUID; a run given it as ``batch_id`` sends the same keys for the same input) and
    ``pacer`` (the run's send-rate limiter: its current ``rate`` and ``throttled_share``).
    Made by ``client.purchases.refund_many(...)`` (see there for the arguments); ``close()``
    releases the journal of a run that will not be iterated.
    """

    def __init__(
        self,
        client: AsyncPreoClient,
        items: Iterable[ItemInput] | AsyncIterable[ItemInput],
        *,
        reason: str | None,
        scope: str | None,
        concurrency: int,
        journal: str | Path | None,
        on_result: OnResult | None,
        batch_id: str | None = None,
        max_pause: float = DEFAULT_MAX_PAUSE,
        max_rate: float | None = None,
        pacing: str = "adaptive",
    ) -> None:
        """Made by ``client.purchases.refund_many(...)`` (see there for the arguments). Raises
        :class:`~preo_client.RefundValidationError` for a bad ``concurrency``, ``batch_id`` or
        ``max_pause`` and :class:`JournalError` when an in-memory input differs from the
        journal, before anything is sent."""
        super().__init__(
            client, items, reason=reason, scope=scope, concurrency=concurrency, journal=journal,
            batch_id=batch_id, max_pause=max_pause, max_rate=max_rate,
            pacing=pacing,
        )  # fmt: skip
        self._client = client
        self._items = items
        self._on_result = on_result
        self._thread_reader: _ThreadReader | None = None

    async def _process(self, job: _Job, sender: AsyncPreoClient) -> RefundOutcome:
        core = self._core
        core.start(job)
        state = core.state()
        state.trace_parent = self._trace.parent
        state.on_attempt = core.attempt_journal(job)  # the audit trail of every attempt
        try:
            refund = await sender._send(job.call, state)
        except Exception as exc:
            return core.record(job, state.attempts, error=exc)
        return core.record(job, state.attempts, refund=refund)

    async def _emit(self, outcome: RefundOutcome) -> RefundOutcome:
        outcome = self._core.count(outcome)
        self._yielded += 1
        if self._on_result is not None:
            result = self._on_result(outcome)
            if inspect.isawaitable(result):
                await result
        return outcome

    def _reader(self) -> Callable[[], Awaitable[Read]] | Iterator[object]:
        """How the input is read: in place (an in-memory sequence), or an awaitable per item
        that never blocks the event loop (an async iterable; a sync one in a thread)."""
        items = self._items
        if isinstance(items, AsyncIterable):
            source = items.__aiter__()

            async def next_async() -> Read:
                try:
                    return ("item", await source.__anext__())
                except StopAsyncIteration:
                    return ("end", None)
                except Exception as exc:
                    return ("error", exc)

            return next_async
        if _inline(items):
            return iter(items)
        reader = self._thread_reader = _ThreadReader(items)
        loop = asyncio.get_running_loop()

        async def next_threaded() -> Read:
            future: asyncio.Future[Read] = loop.create_future()

            def hand(read: Read) -> None:
                if not future.done():
                    future.set_result(read)

            reader.request(lambda read: loop.call_soon_threadsafe(hand, read))
            return await future

        return next_threaded

    async def _outcomes(self) -> AsyncIterator[RefundOutcome]:
        core = self._core
        self._trace = bulk_trace(self.run_id, self._concurrency)
        senders, shards = self._senders()
        self._thread_reader = None
        read = self._reader()
        tasks: dict[asyncio.Task[RefundOutcome], _Job] = {}
        reading: asyncio.Task[Read] | None = None
        position = 0
        exhausted = False
        source_error: Exception | None = None

        def schedule(job: _Job) -> None:
            sender = senders[job.position % len(senders)]
            tasks[asyncio.ensure_future(self._process(job, sender))] = job

        try:
            while True:
                # read while there is room: in place, or in the background so that outcomes
                # and a stop are handled while a slow source makes the run wait
                while not exhausted and reading is None and len(tasks) < self._concurrency:
                    if callable(read):
                        reading = asyncio.ensure_future(read())
                        break
                    got = _read_one(read)
                    if got[0] != "item":
                        exhausted = True
                        source_error = got[1] if got[0] == "error" else None  # type: ignore[assignment]
                        break
                    steps = core.begin(got[1], position)
                    position += 1
                    for step in steps:
                        if isinstance(step, _Job):
                            schedule(step)
                        else:
                            yield await self._emit(step)
                if not tasks and reading is None:
                    if source_error is not None:
                        raise source_error
                    for outcome in core.stranded():
                        yield await self._emit(outcome)
                    break
                waiting: set[asyncio.Task[Any]] = set(tasks)
                if reading is not None:
                    waiting.add(reading)
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                steps = []
                stop: BaseException | None = None
                for task in done:  # finished items first: a stop is acted on at once
                    if task is reading:
                        continue
                    job = tasks.pop(task)
                    try:
                        outcome = task.result()
                    except Exception as exc:  # a journal failure: systemic
                        stop = stop or exc
                        continue
                    settled = core.settle(job, outcome)
                    stop = stop or core.systemic(outcome)
                    steps.extend(settled)
                if reading is not None and reading in done:
                    kind, raw = reading.result()
                    reading = None
                    if kind == "item":
                        steps.extend(core.begin(raw, position))
                        position += 1
                    else:
                        exhausted = True
                        source_error = raw if kind == "error" else None  # type: ignore[assignment]
                if stop is not None:  # nothing more is sent: cancel before handing out
                    for task in tasks:
                        task.cancel()
                for step in steps:
                    if isinstance(step, _Job):
                        if stop is None:
                            schedule(step)
                    else:
                        yield await self._emit(step)
                if stop is not None:
                    raise stop
        except BaseException as exc:
            self.summary.stopped = _stop_reason(exc)
            raise
        finally:
            self.summary.unfinished = position - self._yielded
            for task in tasks:
                task.cancel()
            if reading is not None:
                reading.cancel()
            if tasks:
                await asyncio.wait(tasks)
            if reading is not None:  # an async source that ignores cancellation is left behind
                await asyncio.wait({reading}, timeout=1.0)
            if self._thread_reader is not None:
                self._thread_reader.close()
            for shard in shards:
                await shard.aclose()
            core.close()
            self._trace.end(self.summary)

    def _senders(self) -> tuple[list[AsyncPreoClient], list[httpx.AsyncClient]]:
        """Clients the workers send through. httpcore's async pool slows down sharply above
        ~16 concurrent requests (httpcore issues #822, #1035), so a wide run on an HTTP client
        this SDK created is spread over small pools of ``SHARD_SIZE`` connections each. An
        injected HTTP client (a custom transport, proxy or the aiohttp transport) is used as
        it is."""
        client = self._client
        http = client._http
        plain = (  # what the SDK itself creates: httpx's own network transport, nothing mounted
            type(getattr(http, "_transport", None)) is httpx.AsyncHTTPTransport
            and not getattr(http, "_mounts", None)
        )
        if not (client._owns_http and plain) or self._concurrency <= SHARD_SIZE * 2:
            return [client], []
        count = -(-self._concurrency // SHARD_SIZE)
        limits = httpx.Limits(max_connections=SHARD_SIZE, max_keepalive_connections=SHARD_SIZE)
        shards = [
            httpx.AsyncClient(timeout=client.timeout, limits=limits, follow_redirects=False)
            for _ in range(count)
        ]
        senders = []
        for shard in shards:
            sender = client.with_options(http_client=shard)
            sender._sleep = client._sleep
            senders.append(sender)
        return senders, shards

    def __aiter__(self) -> AsyncIterator[RefundOutcome]:
        """The outcomes in completion order: one per input item, or the systemic error that
        stopped the run."""
        return self._outcomes()

    async def run(self) -> BulkSummary:
        """Consume every outcome (``on_result`` still sees each) and return the summary."""
        async for _ in self:
            pass
        return self.summary


class _Stopped(Exception):
    """Raised in a worker thread's wait when the run stops."""


class BulkRun(_Run):
    """The sync twin of :class:`AsyncBulkRun`: an iterator of outcomes, threads underneath.

    On a stop, waits in workers are interrupted and no worker starts another attempt; requests
    already on the wire finish (within the client's timeout) and stay journaled as in flight.
    An input that is not an in-memory sequence is read in a daemon thread (see
    :class:`AsyncBulkRun`), so outcomes and a stop are handled while it is slow.

    Attributes: ``summary`` (the live :class:`BulkSummary`; ``run()`` returns it), ``run_id``
    (the batch id the idempotency keys derive from: the journal's, else ``batch_id``, else a
    fresh UUID; a run given it as ``batch_id`` sends the same keys for the same input) and
    ``pacer`` (the run's send-rate limiter: its current ``rate`` and ``throttled_share``).
    Made by ``client.purchases.refund_many(...)`` (see there for the arguments); ``close()``
    releases the journal of a run that will not be iterated.
    """

    def __init__(
        self,
        client: PreoClient,
        items: Iterable[ItemInput],
        *,
        reason: str | None,
        scope: str | None,
        concurrency: int,
        journal: str | Path | None,
        on_result: Callable[[RefundOutcome], None] | None,
        batch_id: str | None = None,
        max_pause: float = DEFAULT_MAX_PAUSE,
        max_rate: float | None = None,
        pacing: str = "adaptive",
    ) -> None:
        """Made by ``client.purchases.refund_many(...)`` (see there for the arguments). Raises
        :class:`~preo_client.RefundValidationError` for a bad ``concurrency``, ``batch_id`` or
        ``max_pause`` and :class:`JournalError` when an in-memory input differs from the
        journal, before anything is sent."""
        super().__init__(
            client, items, reason=reason, scope=scope, concurrency=concurrency, journal=journal,
            batch_id=batch_id, max_pause=max_pause, max_rate=max_rate,
            pacing=pacing,
        )  # fmt: skip
        self._client = client
        self._items = items
        self._on_result = on_result

    def _sender(self, stop: threading.Event) -> PreoClient:
        """The client with a wait that a stopping run interrupts (shares its HTTP client)."""
        sender = copy.copy(self._client)
        virtual: Callable[[float], None] | None = getattr(self._client, "_sleep", None)

        def sleep(seconds: float) -> None:
            if virtual is not None:
                virtual(seconds)
            elif stop.wait(seconds):
                raise _Stopped
            if stop.is_set():
                raise _Stopped

        sender._sleep = sleep
        return sender

    def _process(
        self, job: _Job, sender: PreoClient, stop: threading.Event
    ) -> RefundOutcome | None:
        core = self._core
        if stop.is_set():
            return None
        core.start(job)
        state = core.state()
        state.trace_parent = self._trace.parent
        state.on_attempt = core.attempt_journal(job)  # the audit trail of every attempt
        try:
            refund = sender._send(job.call, state)
        except _Stopped:
            return None  # journaled as started: a resumed run resends it with its key
        except Exception as exc:
            return core.record(job, state.attempts, error=exc)
        return core.record(job, state.attempts, refund=refund)

    def __iter__(self) -> Iterator[RefundOutcome]:
        """The outcomes in completion order: one per input item, or the systemic error that
        stopped the run."""
        core = self._core
        self._trace = bulk_trace(self.run_id, self._concurrency)
        stop = threading.Event()
        sender = self._sender(stop)
        events: queue.SimpleQueue[Future[RefundOutcome | None] | Read] = queue.SimpleQueue()
        pending: dict[Future[RefundOutcome | None], _Job] = {}
        pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="preo-refund")
        reader = None if _inline(self._items) else _ThreadReader(self._items)
        position = 0
        reading = exhausted = False
        source_error: Exception | None = None

        def schedule(job: _Job) -> None:
            future = pool.submit(self._process, job, sender, stop)
            pending[future] = job
            future.add_done_callback(events.put)

        try:
            source = iter(self._items) if reader is None else None
            while True:
                # read while there is room: in place, or in the reader thread so that
                # outcomes and a stop are handled while a slow source makes the run wait
                while not exhausted and not reading and len(pending) < self._concurrency:
                    if reader is not None:
                        reader.request(events.put)
                        reading = True
                        break
                    got = _read_one(source)  # type: ignore[arg-type]
                    if got[0] != "item":
                        exhausted = True
                        source_error = got[1] if got[0] == "error" else None  # type: ignore[assignment]
                        break
                    steps = core.begin(got[1], position)
                    position += 1
                    for step in steps:
                        if isinstance(step, _Job):
                            schedule(step)
                        else:
                            yield self._emit(step)
                if not pending and not reading:
                    if source_error is not None:
                        raise source_error
                    for outcome in core.stranded():
                        yield self._emit(outcome)
                    break
                event = events.get()
                steps = []
                failure: BaseException | None = None
                if isinstance(event, tuple):
                    reading = False
                    kind, raw = event
                    if kind == "item":
                        steps = core.begin(raw, position)
                        position += 1
                    else:
                        exhausted = True
                        source_error = raw if kind == "error" else None  # type: ignore[assignment]
                else:
                    job = pending.pop(event)
                    try:
                        result = event.result()
                    except Exception as exc:  # a journal failure: systemic
                        failure = exc
                    else:
                        if result is not None:
                            steps = core.settle(job, result)
                            failure = core.systemic(result)
                if failure is not None:  # nothing more is sent: stop before handing out
                    stop.set()
                    core.pause.halt()
                for step in steps:
                    if isinstance(step, _Job):
                        if failure is None:
                            schedule(step)
                    else:
                        yield self._emit(step)
                if failure is not None:
                    raise failure
        except BaseException as exc:
            self.summary.stopped = _stop_reason(exc)
            raise
        finally:
            stop.set()
            core.pause.halt()
            self.summary.unfinished = position - self._yielded
            if reader is not None:
                reader.close()
            pool.shutdown(wait=True, cancel_futures=True)
            core.close()
            self._trace.end(self.summary)

    def _emit(self, outcome: RefundOutcome) -> RefundOutcome:
        outcome = self._core.count(outcome)
        self._yielded += 1
        if self._on_result is not None:
            self._on_result(outcome)
        return outcome

    def run(self) -> BulkSummary:
        """Consume every outcome (``on_result`` still sees each) and return the summary."""
        for _ in self:
            pass
        return self.summary
