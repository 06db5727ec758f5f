"""Bulk refunds: bounded concurrency, a pause shared by all workers, a journal to resume from."""

from __future__ import annotations

import asyncio
import collections
import inspect
import json
import threading
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO, cast

import attrs
import httpx

from ._call import CallState
from ._exceptions import PreoError, RefundValidationError
from ._idempotency import idempotency_key_for
from ._models import Refund
from ._retry import SharedPause

if TYPE_CHECKING:
    from ._call import Call as _Call
    from ._client import AsyncPreoClient, PreoClient

__all__ = [
    "AsyncBulkRun",
    "BulkRun",
    "BulkSummary",
    "InvalidItem",
    "Journal",
    "RefundItem",
    "RefundOutcome",
]

_DONE: Final = object()
SHARD_SIZE: Final = 8


@attrs.frozen
class RefundItem:
    """One refund of a bulk run. ``reason``/``scope`` fall back to the run's common ones;
    ``reference`` (a business id) makes the idempotency key deterministic."""

    purchase_id: str
    reason: str | None = None
    scope: str | None = None
    amount: Decimal | int | str | None = None
    comment: str | None = None
    pickup_point_id: str | None = None
    reference: str | None = None

    @property
    def journal_id(self) -> str:
        """Identity of the item in a journal: purchase id plus reference."""
        return f"{self.purchase_id}\x00{self.reference or ''}"


@attrs.frozen
class InvalidItem:
    """An input row that could not become a :class:`RefundItem` (reported, never sent)."""

    where: str
    problem: str


@attrs.frozen
class RefundOutcome:
    """What became of one item: the refund or the error, attempts made, the key sent.

    ``skipped`` is true for an item a previous run (per the journal) already refunded.
    """

    item: RefundItem
    refund: Refund | None
    error: PreoError | None
    attempts: int
    idempotency_key: str | None
    skipped: bool = False

    @property
    def ok(self) -> bool:
        return self.refund is not None or self.skipped


@attrs.define
class BulkSummary:
    """Counts of a bulk run so far: succeeded, skipped, failures by error class, money."""

    succeeded: int = 0
    skipped: int = 0
    failed: collections.Counter[str] = attrs.field(factory=collections.Counter)
    total_amount: Decimal = Decimal(0)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, repr=False, eq=False)

    @property
    def total(self) -> int:
        return self.succeeded + self.skipped + sum(self.failed.values())

    @property
    def failures(self) -> int:
        return sum(self.failed.values())

    def add(self, outcome: RefundOutcome) -> None:
        with self._lock:
            if outcome.skipped:
                self.skipped += 1
            elif outcome.refund is not None:
                self.succeeded += 1
                self.total_amount += outcome.refund.amount
            else:
                self.failed[type(outcome.error).__name__] += 1


@attrs.frozen
class _Record:
    idempotency_key: str
    done: bool


class Journal:
    """An append-only JSON-lines file: each item's key is written and flushed *before* its
    request, its outcome after. Reopening it tells which items are done (skip them) and which
    were in flight or failed (resend them with their recorded key)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._records: dict[str, _Record] = {}
        if self.path.exists():
            self._load()
        self._file: TextIO = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def _load(self) -> None:
        with self.path.open(encoding="utf-8") as lines:
            for line in lines:
                try:
                    entry = json.loads(line)
                except ValueError:  # a line cut short by a kill: its request was never sent
                    continue
                item_id = f"{entry['purchase_id']}\x00{entry.get('reference') or ''}"
                done = entry["event"] == "done"
                previous = self._records.get(item_id)
                if previous is None or not previous.done:
                    self._records[item_id] = _Record(entry["idempotency_key"], done)

    def recorded(self, item: RefundItem) -> _Record | None:
        """What an earlier run journaled for ``item``, if anything."""
        return self._records.get(item.journal_id)

    def write(self, event: str, item: RefundItem, key: str, **fields: Any) -> None:
        entry = {
            "event": event,
            "purchase_id": item.purchase_id,
            "reference": item.reference,
            "idempotency_key": key,
            **fields,
        }
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()  # in the OS before the request goes out: survives kill -9

    def close(self) -> None:
        self._file.close()


ItemInput = RefundItem | InvalidItem | str
OnResult = Callable[[RefundOutcome], Awaitable[None] | None]


class _Core:
    """What the sync and async drivers share: item checks, keys, journal, summary."""

    def __init__(
        self,
        client: PreoClient | AsyncPreoClient,
        *,
        reason: str | None,
        scope: str | None,
        journal: str | Path | None,
    ) -> None:
        self.client = client
        self.reason = reason
        self.scope = scope
        self.journal = Journal(journal) if journal is not None else None
        self.summary = BulkSummary()
        self.pause = SharedPause()

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

    def begin(self, raw: object) -> RefundOutcome | tuple[RefundItem, _Call]:
        """Check an item and journal its key; an outcome already means: do not send."""
        try:
            item = self.item(raw)
        except RefundValidationError as exc:
            bad = RefundItem(raw.where if isinstance(raw, InvalidItem) else repr(raw))
            return self.end(bad, None, 0, error=exc)
        record = self.journal.recorded(item) if self.journal is not None else None
        if record is not None and record.done:
            outcome = RefundOutcome(item, None, None, 0, record.idempotency_key, skipped=True)
            self.summary.add(outcome)
            return outcome
        if record is not None:
            key: str | None = record.idempotency_key  # resend what may have landed, same key
        elif item.reference:
            key = idempotency_key_for(item.purchase_id, item.reference)
        else:
            key = None
        try:
            if item.reason is None:
                raise RefundValidationError("reason", "is required (per item or for the run)")
            call = self.client._prepare(
                item.purchase_id,
                reason=item.reason,
                scope=item.scope,
                amount=item.amount,
                comment=item.comment,
                pickup_point_id=item.pickup_point_id,
                idempotency_key=key,
                timeout=self.client.timeout,
            )
        except RefundValidationError as exc:
            return self.end(item, None, 0, error=exc)
        if self.journal is not None:
            self.journal.write("start", item, call.idempotency_key)
        return item, call

    def end(
        self,
        item: RefundItem,
        call: _Call | None,
        attempts: int,
        *,
        refund: Refund | None = None,
        error: PreoError | None = None,
    ) -> RefundOutcome:
        key = call.idempotency_key if call is not None else None
        outcome = RefundOutcome(item, refund, error, attempts, key)
        if self.journal is not None and key is not None:
            if refund is not None:
                self.journal.write(
                    "done", item, key, refund_id=refund.id, amount=str(refund.amount)
                )
            else:
                self.journal.write("failed", item, key, error=type(error).__name__)
        self.summary.add(outcome)
        return outcome

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()


class _Run:
    """What both drivers hold: the checked concurrency, the shared core, the live summary."""

    def __init__(
        self,
        client: PreoClient | AsyncPreoClient,
        *,
        reason: str | None,
        scope: str | None,
        concurrency: int,
        journal: str | Path | None,
    ) -> None:
        if concurrency < 1:
            raise RefundValidationError("concurrency", f"must be at least 1, got {concurrency}")
        self._concurrency = concurrency
        self._core = _Core(client, reason=reason, scope=scope, journal=journal)
        self.summary = self._core.summary

    def _state(self) -> CallState:
        return CallState(pause=self._core.pause)


class AsyncBulkRun(_Run):
    """An async iterator of :class:`RefundOutcome`, in completion order; ``summary`` is live.

    Items are read lazily and at most ``concurrency`` requests are in flight, so memory stays
    flat however many items there are. ``await run.run()`` consumes it and returns the summary.
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
    ) -> None:
        super().__init__(client, reason=reason, scope=scope, concurrency=concurrency,
                         journal=journal)  # fmt: skip
        self._client = client
        self._items = items
        self._on_result = on_result

    async def _process(self, raw: object, sender: AsyncPreoClient) -> RefundOutcome:
        core = self._core
        begun = core.begin(raw)
        if isinstance(begun, RefundOutcome):
            return begun
        item, call = begun
        state = self._state()
        try:
            refund = await sender._send(call, state)
        except PreoError as exc:
            return core.end(item, call, state.attempts, error=exc)
        return core.end(item, call, state.attempts, refund=refund)

    async def _outcomes(self) -> AsyncIterator[RefundOutcome]:
        inbox: asyncio.Queue[object] = asyncio.Queue(maxsize=self._concurrency)
        outbox: asyncio.Queue[object] = asyncio.Queue(maxsize=self._concurrency)
        feed_error: list[BaseException] = []

        async def feed() -> None:
            try:
                if isinstance(self._items, AsyncIterable):
                    async for raw in self._items:
                        await inbox.put(raw)
                else:
                    for raw in self._items:
                        await inbox.put(raw)
            except Exception as exc:  # the caller's iterator failed: stop, then re-raise
                feed_error.append(exc)
            finally:
                for _ in range(self._concurrency):
                    await inbox.put(_DONE)

        async def work(sender: AsyncPreoClient) -> None:
            while (raw := await inbox.get()) is not _DONE:
                await outbox.put(await self._process(raw, sender))
            await outbox.put(_DONE)

        senders, shards = self._senders()
        tasks = [asyncio.ensure_future(feed())]
        tasks += [
            asyncio.ensure_future(work(senders[i % len(senders)])) for i in range(self._concurrency)
        ]
        running = self._concurrency
        try:
            while running:
                outcome = await outbox.get()
                if outcome is _DONE:
                    running -= 1
                    continue
                outcome = cast(RefundOutcome, outcome)
                if self._on_result is not None:
                    result = self._on_result(outcome)
                    if inspect.isawaitable(result):
                        await result
                yield outcome
            if feed_error:
                raise feed_error[0]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for shard in shards:
                await shard.aclose()
            self._core.close()

    def _senders(self) -> tuple[list[AsyncPreoClient], list[httpx.AsyncClient]]:
        """Clients the workers send through. httpcore's async pool slows down sharply above
        ~16 concurrent requests (httpcore issues #822, #1035), so a wide run on an HTTP client
        this SDK created is spread over small pools of ``SHARD_SIZE`` connections each. An
        injected HTTP client (a custom transport, proxy or the aiohttp transport) is used as
        it is."""
        client = self._client
        if not client._owns_http or self._concurrency <= SHARD_SIZE * 2:
            return [client], []
        count = -(-self._concurrency // SHARD_SIZE)
        limits = httpx.Limits(max_connections=SHARD_SIZE, max_keepalive_connections=SHARD_SIZE)
        shards = [
            httpx.AsyncClient(timeout=client.timeout, limits=limits, follow_redirects=False)
            for _ in range(count)
        ]
        return [client.with_options(http_client=shard) for shard in shards], shards

    def __aiter__(self) -> AsyncIterator[RefundOutcome]:
        return self._outcomes()

    async def run(self) -> BulkSummary:
        """Consume every outcome (``on_result`` still sees each) and return the summary."""
        async for _ in self:
            pass
        return self.summary


class BulkRun(_Run):
    """The sync twin of :class:`AsyncBulkRun`: an iterator of outcomes, threads underneath."""

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
    ) -> None:
        super().__init__(client, reason=reason, scope=scope, concurrency=concurrency,
                         journal=journal)  # fmt: skip
        self._client = client
        self._items = items
        self._on_result = on_result

    def _process(self, raw: object) -> RefundOutcome:
        core = self._core
        begun = core.begin(raw)
        if isinstance(begun, RefundOutcome):
            return begun
        item, call = begun
        state = self._state()
        try:
            refund = self._client._send(call, state)
        except PreoError as exc:
            return core.end(item, call, state.attempts, error=exc)
        return core.end(item, call, state.attempts, refund=refund)

    def __iter__(self) -> Iterator[RefundOutcome]:
        source = iter(self._items)
        pending: set[Future[RefundOutcome]] = set()
        pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="preo-refund")
        try:
            for raw in source:
                pending.add(pool.submit(self._process, raw))
                if len(pending) >= self._concurrency:
                    yield from self._drain(pending)
            while pending:
                yield from self._drain(pending)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self._core.close()

    def _drain(self, pending: set[Future[RefundOutcome]]) -> Iterator[RefundOutcome]:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            pending.discard(future)
            outcome = future.result()
            if self._on_result is not None:
                self._on_result(outcome)
            yield outcome

    def run(self) -> BulkSummary:
        """Consume every outcome (``on_result`` still sees each) and return the summary."""
        for _ in self:
            pass
        return self.summary
