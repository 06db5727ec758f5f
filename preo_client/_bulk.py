"""Bulk refunds: a bounded task group, a run-wide pause, a journal, keys that survive restarts."""

from __future__ import annotations

import asyncio
import collections
import copy
import inspect
import json
import logging
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
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

import attrs
import httpx

from ._call import CallState
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
from ._pacing import AdaptivePacer
from ._policy import check_comment, check_pickup_point_id, check_purchase_id, plan_refund
from ._retry import RETRY_AFTER_CAP, SharedPause

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
DEFAULT_MAX_PAUSE: Final = 300.0
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

    def claim(self, refund: Refund) -> bool:
        """Count ``refund`` once; False if this run already counted it (a replay)."""
        with self._lock:
            if refund.id in self._refund_ids:
                return False
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
    cent) and its reference. Raises :class:`RefundValidationError` for an invalid item."""
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
    return json.dumps(request, sort_keys=True, separators=(",", ":"))  # ASCII: \ud83d escaped


def bulk_idempotency_key(run_id: str, position: int, canonical: str, reference: str | None) -> str:
    """The key of a bulk item: from its ``reference`` and request alone when it has one (any
    run, any position sends the same key), else from the run id, its position and request."""
    name = f"ref\0{canonical}" if reference else f"run\0{run_id}\0{position}\0{canonical}"
    return f"preo-{uuid.uuid5(_KEY_NAMESPACE, name)}"


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
    """The run-wide pause; a wait longer than the single-call cap is logged at WARNING."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def extend(self, seconds: float) -> None:
        with self._lock:
            before = self.remaining()
            super().extend(seconds)
        if seconds > RETRY_AFTER_CAP and seconds > before + 1:
            log.warning("server asked to wait %.0fs: pausing the whole bulk run", seconds)


class _Event(Protocol):
    def set(self) -> None: ...


@attrs.define
class _Group:
    """The items of one transaction that one transaction-scope refund covers."""

    leader: int
    done: _Event
    outcome: RefundOutcome | None = None


@attrs.define
class _Job:
    """An item ready to send: checked, keyed, its request built."""

    item: RefundItem
    call: Call
    position: int
    canonical: str
    group: _Group | None = None
    follower: bool = False


class _Core:
    """What the sync and async drivers share: item checks, keys, journal, groups, summary."""

    def __init__(
        self,
        client: PreoClient | AsyncPreoClient,
        *,
        reason: str | None,
        scope: str | None,
        journal: str | Path | None,
        batch_id: str | None,
        max_pause: float,
        new_event: Callable[[], _Event],
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
        self.run_id = self.journal.run_id if self.journal else (batch_id or str(uuid.uuid4()))
        self.summary = BulkSummary()
        self.pause = _RunPause()
        self.max_retries = max(int(getattr(client, "max_retries", 2)), BULK_MAX_RETRIES)
        self.groups: dict[str, _Group] = {}
        self._new_event = new_event

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
        entry = self.journal.recorded(position) if self.journal is not None else None
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
        if self.journal is None or self.journal.is_empty():
            return
        for position, raw in enumerate(items):
            try:
                canonical = canonical_request(self.item(raw))
            except Exception:  # noqa: S112  # nosec B112 - an invalid item is never sent
                continue
            self.check_journal(position, canonical)

    def begin(self, raw: object, position: int) -> RefundOutcome | _Job:
        """Check an item and key it; an outcome means: nothing to send. Raises
        :class:`JournalError` (systemic) when the input differs from the journal."""
        try:
            item = self.item(raw)
        except Exception as exc:
            error = exc if isinstance(exc, PreoError) else ItemFailedError(exc)
            where = raw.where if isinstance(raw, InvalidItem) else _safe_repr(raw)
            return RefundOutcome(RefundItem(where), None, error, 0, None, False, position)
        try:
            canonical = canonical_request(item)
        except PreoError as exc:
            return RefundOutcome(item, None, exc, 0, None, False, position)
        except Exception as exc:
            return RefundOutcome(item, None, ItemFailedError(exc), 0, None, False, position)
        entry = self.check_journal(position, canonical)
        if entry is not None and entry.state in ("done", "covered"):
            skipped = RefundOutcome(item, None, None, 0, entry.idempotency_key, True, position)
            self._group(item, canonical, position, resolved=skipped)
            return skipped
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
            return RefundOutcome(item, None, exc, 0, key, False, position)
        except Exception as exc:
            return RefundOutcome(item, None, ItemFailedError(exc), 0, key, False, position)
        job = _Job(item, call, position, canonical)
        job.group, job.follower = self._group(item, canonical, position)
        return job

    def _group(
        self,
        item: RefundItem,
        canonical: str,
        position: int,
        *,
        resolved: RefundOutcome | None = None,
    ) -> tuple[_Group | None, bool]:
        """Join or lead the transaction group of a transaction-scope item with a transaction id."""
        if item.transaction_id is None or '"scope":"transaction_' not in canonical:
            return None, False
        request = json.loads(canonical)
        del request["purchase_id"]
        key = f"{item.transaction_id}\0{json.dumps(request, sort_keys=True)}"
        group = self.groups.get(key)
        if group is not None:
            return group, True
        group = self.groups[key] = _Group(position, self._new_event(), resolved)
        if resolved is not None:
            group.done.set()
        return group, False

    def start(self, job: _Job) -> None:
        """Commit the item's key to the journal: after this it may be sent."""
        if self.journal is not None:
            self.journal.start(job.position, job.canonical, job.call.idempotency_key)

    def cover(self, job: _Job) -> RefundOutcome | None:
        """The outcome of a follower once its leader is done; None: send it itself (the
        leader's refund surely does not exist)."""
        leader = job.group.outcome if job.group is not None else None
        if leader is not None and isinstance(leader.error, RefundOutcomeUnknownError):
            # the transaction may be refunded: a second request could refund it twice
            error = CoveringRefundUnknownError(leader.position)
            return RefundOutcome(job.item, None, error, 0, None, False, job.position)
        if leader is None or not leader.ok:
            return None
        outcome = RefundOutcome(
            job.item, leader.refund, None, 0, leader.idempotency_key, False, job.position,
            covered_by=leader.position if leader.covered_by is None else leader.covered_by,
        )  # fmt: skip
        if self.journal is not None:
            self.journal.start(job.position, job.canonical, leader.idempotency_key or "")
            refund_id = leader.refund.id if leader.refund else None
            self.journal.finish(job.position, "covered", refund_id=refund_id)
        return outcome

    def end(
        self,
        job: _Job,
        attempts: int,
        *,
        refund: Refund | None = None,
        error: BaseException | None = None,
    ) -> RefundOutcome:
        """Record a sent item's refund or error (journal, group, summary)."""
        key = job.call.idempotency_key
        if refund is not None:
            outcome = RefundOutcome(job.item, refund, None, attempts, key, False, job.position)
            if self.journal is not None:
                self.journal.finish(
                    job.position, "done", refund_id=refund.id, amount=str(refund.amount)
                )
        else:
            failure = (
                error
                if isinstance(error, PreoError)
                else ItemFailedError(error if error is not None else RuntimeError("no refund"))
            )
            note = None
            if isinstance(failure, BadRequestError) and job.call.plan.scope.startswith(
                "transaction_"
            ):
                note = TRANSACTION_HINT if job.item.transaction_id is None else None
            outcome = RefundOutcome(
                job.item, None, failure, attempts, key, False, job.position, note=note
            )
            if self.journal is not None:
                self.journal.finish(job.position, "failed", error=type(failure).__name__)
        if job.group is not None and not job.follower:
            job.group.outcome = outcome
            job.group.done.set()
        return outcome

    def count(self, outcome: RefundOutcome) -> RefundOutcome:
        """Count an outcome as it is handed out (so the summary is exactly what was yielded);
        a refund this run already counted is marked replayed."""
        fresh = outcome.refund is not None and outcome.covered_by is None
        if fresh and outcome.refund is not None and not self.summary.claim(outcome.refund):
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


def _stop_reason(exc: BaseException) -> str:
    if isinstance(exc, GeneratorExit):
        return "the consumer stopped reading outcomes"
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        return "cancelled"
    return f"{type(exc).__name__}: {truncate(str(exc), 300)}"


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
        new_event: Callable[[], _Event],
        max_rate: float | None = None,
        pacing: str = "adaptive",
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise RefundValidationError("concurrency", f"must be at least 1, got {concurrency}")
        self._concurrency = concurrency
        self._core = _Core(
            client, reason=reason, scope=scope, journal=journal, batch_id=batch_id,
            max_pause=max_pause, new_event=new_event, max_rate=max_rate, pacing=pacing,
        )  # fmt: skip
        self.summary: BulkSummary = self._core.summary
        self.pacer: AdaptivePacer = self._core.pacer
        self.run_id: str = self._core.run_id
        self._yielded = 0
        try:
            if isinstance(items, Sequence) and not isinstance(items, str):
                self._core.precheck(items)
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
            batch_id=batch_id, max_pause=max_pause, new_event=asyncio.Event, max_rate=max_rate,
            pacing=pacing,
        )  # fmt: skip
        self._client = client
        self._items = items
        self._on_result = on_result

    async def _process(self, job: _Job, sender: AsyncPreoClient) -> RefundOutcome:
        core = self._core
        if job.follower and job.group is not None:
            await job.group.done.wait()  # type: ignore[attr-defined]
            covered = core.cover(job)
            if covered is not None:
                return covered
        core.start(job)
        state = core.state()
        try:
            refund = await sender._send(job.call, state)
        except Exception as exc:
            return core.end(job, state.attempts, error=exc)
        return core.end(job, state.attempts, refund=refund)

    async def _emit(self, outcome: RefundOutcome) -> RefundOutcome:
        outcome = self._core.count(outcome)
        self._yielded += 1
        if self._on_result is not None:
            result = self._on_result(outcome)
            if inspect.isawaitable(result):
                await result
        return outcome

    async def _outcomes(self) -> AsyncIterator[RefundOutcome]:
        core = self._core
        senders, shards = self._senders()
        items = self._items
        source_async = items.__aiter__() if isinstance(items, AsyncIterable) else None
        source_sync = iter(items) if source_async is None else None  # type: ignore[arg-type]
        tasks: set[asyncio.Task[RefundOutcome]] = set()
        position = 0
        exhausted = False
        source_error: Exception | None = None
        try:
            while True:
                while not exhausted and len(tasks) < self._concurrency:
                    try:
                        if source_async is not None:
                            raw: object = await source_async.__anext__()
                        else:
                            raw = next(source_sync)  # type: ignore[arg-type]
                    except (StopIteration, StopAsyncIteration):
                        exhausted = True
                        break
                    except Exception as exc:  # the input failed: finish what is in flight
                        exhausted, source_error = True, exc
                        break
                    begun = core.begin(raw, position)
                    position += 1
                    if isinstance(begun, RefundOutcome):
                        yield await self._emit(begun)
                        continue
                    sender = senders[position % len(senders)]
                    tasks.add(asyncio.ensure_future(self._process(begun, sender)))
                if not tasks:
                    if source_error is not None:
                        raise source_error
                    break
                done, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                stop: BaseException | None = None
                for task in done:
                    try:
                        outcome = task.result()
                    except Exception as exc:
                        stop = stop or exc
                        continue
                    outcome = await self._emit(outcome)
                    yield outcome
                    stop = stop or core.systemic(outcome)
                if stop is not None:
                    raise stop
        except BaseException as exc:
            self.summary.stopped = _stop_reason(exc)
            raise
        finally:
            self.summary.unfinished = position - self._yielded
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
            for shard in shards:
                await shard.aclose()
            core.close()

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

    On a stop, waits in workers are interrupted; requests already on the wire finish (within
    the client's timeout) and stay journaled as in flight.

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
            batch_id=batch_id, max_pause=max_pause, new_event=threading.Event, max_rate=max_rate,
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
        if job.follower and job.group is not None:
            done: threading.Event = job.group.done  # type: ignore[assignment]
            while not done.wait(0.05):
                if stop.is_set():
                    return None
            covered = core.cover(job)
            if covered is not None:
                return covered
        if stop.is_set():
            return None
        core.start(job)
        state = core.state()
        try:
            refund = sender._send(job.call, state)
        except _Stopped:
            return None  # journaled as started: a resumed run resends it with its key
        except Exception as exc:
            return core.end(job, state.attempts, error=exc)
        return core.end(job, state.attempts, refund=refund)

    def __iter__(self) -> Iterator[RefundOutcome]:
        """The outcomes in completion order: one per input item, or the systemic error that
        stopped the run."""
        core = self._core
        stop = threading.Event()
        sender = self._sender(stop)
        pending: set[Future[RefundOutcome | None]] = set()
        pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="preo-refund")
        position = 0
        source_error: Exception | None = None
        try:
            source = iter(self._items)
            exhausted = False
            while True:
                while not exhausted and len(pending) < self._concurrency:
                    try:
                        raw = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    except Exception as exc:  # the input failed: finish what is in flight
                        exhausted, source_error = True, exc
                        break
                    begun = core.begin(raw, position)
                    position += 1
                    if isinstance(begun, RefundOutcome):
                        yield self._emit(begun)
                        continue
                    pending.add(pool.submit(self._process, begun, sender, stop))
                if not pending:
                    if source_error is not None:
                        raise source_error
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                failure: BaseException | None = None
                for future in done:
                    try:
                        outcome = future.result()
                    except Exception as exc:
                        failure = failure or exc
                        continue
                    if outcome is None:
                        continue
                    outcome = self._emit(outcome)
                    yield outcome
                    failure = failure or core.systemic(outcome)
                if failure is not None:
                    raise failure
        except BaseException as exc:
            self.summary.stopped = _stop_reason(exc)
            raise
        finally:
            stop.set()
            self.summary.unfinished = position - self._yielded
            pool.shutdown(wait=True, cancel_futures=True)
            core.close()

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
