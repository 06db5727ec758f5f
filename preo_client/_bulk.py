"""Bulk refunds: the two drivers (a task group, threads) that run items through the shared core."""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import queue
import threading
import time
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Sequence,
)
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx

from ._bulk_core import BULK_MAX_RETRIES, Core, Job, Step
from ._bulk_items import (
    TRANSACTION_HINT,
    CoveringRefundUnknownError,
    InvalidItem,
    ItemFailedError,
    RefundItem,
    bulk_idempotency_key,
    canonical_request,
    group_of_request,
)
from ._bulk_summary import BulkSummary, RefundOutcome
from ._exceptions import RefundValidationError, truncate
from ._journal import JournalError
from ._observe import bulk_trace
from ._pacing import AdaptivePacer
from ._retry import DEFAULT_MAX_PAUSE

if TYPE_CHECKING:
    from ._client import AsyncPreoClient, PreoClient

__all__ = [
    "BULK_MAX_RETRIES",
    "DEFAULT_MAX_PAUSE",
    "TRANSACTION_HINT",
    "AsyncBulkRun",
    "BulkRun",
    "BulkSummary",
    "CoveringRefundUnknownError",
    "InvalidItem",
    "ItemFailedError",
    "JournalError",
    "RefundItem",
    "RefundOutcome",
    "Step",
    "bulk_idempotency_key",
    "canonical_request",
    "group_of_request",
]

log = logging.getLogger("preo_client")

SHARD_SIZE: Final = 8
_WAIT_SLICE: Final = 3600.0  # a sync wait is made of slices (threading's limit is ~292 years)


ItemInput = RefundItem | InvalidItem | str
OnResult = Callable[[RefundOutcome], Awaitable[None] | None]
Read = tuple[str, object]  # ("item", raw) / ("end", None) / ("error", exception)


def _stop_reason(exc: BaseException) -> str:
    if isinstance(exc, GeneratorExit):
        return "the consumer stopped reading outcomes"
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        return "cancelled"
    return f"{type(exc).__name__}: {truncate(str(exc), 300)}"


def _source_error(read: Read) -> BaseException | None:
    """The input's failure, if ``read`` is one; one that is not an ``Exception`` (``SystemExit``,
    ``KeyboardInterrupt`` from a reader) stops the run at once: raised here."""
    if read[0] != "error":
        return None
    error = read[1]
    if not isinstance(error, BaseException):  # pragma: no cover - _read_one hands exceptions
        return None
    if not isinstance(error, Exception):
        raise error
    return error


def _read_one(iterator: Iterator[object]) -> Read:
    try:
        return ("item", next(iterator))
    except StopIteration:
        return ("end", None)
    except BaseException as exc:
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
        except BaseException as exc:
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


def _check_inputs(items: object, on_result: object) -> None:
    """Refuse an input that is not iterable, or an ``on_result`` that cannot be called, before
    anything is opened or sent."""
    if isinstance(items, str | bytes) or not isinstance(items, Iterable | AsyncIterable):
        raise RefundValidationError(
            "items",
            "must be an iterable (or async iterable) of purchase ids or RefundItems, not "
            f"{type(items).__name__}",
        )
    if on_result is not None and not callable(on_result):
        raise RefundValidationError(
            "on_result", f"must be a callable or None, not {type(on_result).__name__}"
        )


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
        self._core = Core(
            client, reason=reason, scope=scope, journal=journal, batch_id=batch_id,
            max_pause=max_pause, max_rate=max_rate, pacing=pacing,
        )  # fmt: skip
        self.summary: BulkSummary = self._core.summary
        self.pacer: AdaptivePacer = self._core.pacer
        self.run_id: str = self._core.run_id
        self._yielded = 0
        self._source = items
        try:
            if _inline(items):
                self._core.precheck(items)  # type: ignore[arg-type]
        except BaseException:
            self._core.close()
            raise

    def _finish(self, read: int, whole: bool) -> None:
        """The summary's last counts when the run ends: ``read`` rows were read (``whole``:
        the input was read to its end)."""
        summary = self.summary
        summary.unfinished = read - self._yielded
        if _inline(self._source):
            summary.unread = len(self._source) - read  # type: ignore[arg-type]
        self._core.finish(whole=whole)

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
    Made by ``client.purchases.refund_many(...)`` (see there for the arguments); ``aclose()``
    ends it at once (``contextlib.aclosing(run)`` around a ``break``), ``close()`` releases
    the journal of a run that will not be iterated.
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
        :class:`~preo_client.RefundValidationError` for a bad ``items``, ``on_result``,
        ``concurrency``, ``batch_id``, ``journal``, ``max_rate``, ``pacing`` or
        ``max_pause`` and :class:`JournalError` when an in-memory input differs from the
        journal, before anything is sent."""
        _check_inputs(items, on_result)
        super().__init__(
            client, items, reason=reason, scope=scope, concurrency=concurrency, journal=journal,
            batch_id=batch_id, max_pause=max_pause, max_rate=max_rate,
            pacing=pacing,
        )  # fmt: skip
        self._client = client
        self._items = items
        self._on_result = on_result
        self._thread_reader: _ThreadReader | None = None
        self._iterator: weakref.ref[AsyncGenerator[RefundOutcome, None]] | None = None
        self._ended: asyncio.Event | None = None

    async def _process(self, job: Job, sender: AsyncPreoClient) -> RefundOutcome:
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
                except asyncio.CancelledError:
                    raise
                except BaseException as exc:
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

    async def _outcomes(self) -> AsyncGenerator[RefundOutcome, None]:
        ended = self._ended = asyncio.Event()  # set once everything below is ended
        core = self._core
        self._trace = bulk_trace(self.run_id, self._concurrency)
        senders, shards = self._senders()
        self._thread_reader = None
        read = self._reader()
        tasks: dict[asyncio.Task[RefundOutcome], Job] = {}
        reading: asyncio.Task[Read] | None = None
        position = 0
        exhausted = False
        source_error: BaseException | None = None

        def schedule(job: Job) -> None:
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
                        source_error = _source_error(got)
                        break
                    steps = core.begin(got[1], position)
                    position += 1
                    for step in steps:
                        if isinstance(step, Job):
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
                        source_error = _source_error((kind, raw))
                if stop is not None:  # nothing more is sent: cancel before handing out
                    for task in tasks:
                        task.cancel()
                for step in steps:
                    if isinstance(step, Job):
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
            try:
                self._finish(position, exhausted and source_error is None)
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
            finally:
                ended.set()  # aclose() waits for it (a run its GC finalizes)

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
        iterator = self._outcomes()
        # weakly: a plain `break` still ends the run when its iterator is dropped (a strong
        # reference would make a cycle through the generator's frame, kept until GC)
        self._iterator = weakref.ref(iterator)
        return iterator

    async def aclose(self) -> None:
        """End the run now (``contextlib.aclosing(run)`` around ``async for ... break``):
        every task is awaited or cancelled, the input's reader stopped and the journal
        released at once, not when the run is garbage-collected (idempotent)."""
        iterator = self._iterator() if self._iterator is not None else None
        self._iterator = None
        try:
            if iterator is not None:
                await iterator.aclose()
            elif self._ended is not None:  # dropped after a break: asyncio's hook closes it
                await self._ended.wait()
        finally:
            self._core.close()

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
    ends it at once (``contextlib.closing(run)`` around a ``break``) and releases the journal,
    iterated or not.
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
        :class:`~preo_client.RefundValidationError` for a bad ``items``, ``on_result``,
        ``concurrency``, ``batch_id``, ``journal``, ``max_rate``, ``pacing`` or
        ``max_pause`` and :class:`JournalError` when an in-memory input differs from the
        journal, before anything is sent."""
        _check_inputs(items, on_result)
        super().__init__(
            client, items, reason=reason, scope=scope, concurrency=concurrency, journal=journal,
            batch_id=batch_id, max_pause=max_pause, max_rate=max_rate,
            pacing=pacing,
        )  # fmt: skip
        self._client = client
        self._items = items
        self._on_result = on_result
        self._iterator: weakref.ref[Generator[RefundOutcome, None, None]] | None = None

    def _sender(self, stop: threading.Event) -> PreoClient:
        """The client with a wait that a stopping run interrupts (shares its HTTP client)."""
        sender = copy.copy(self._client)
        virtual: Callable[[float], None] | None = getattr(self._client, "_sleep", None)

        def sleep(seconds: float) -> None:
            if virtual is not None:
                virtual(seconds)
            else:  # in slices: any wait up to infinity, interrupted by a stop
                deadline = time.monotonic() + seconds
                while (left := deadline - time.monotonic()) > 0:
                    if stop.wait(min(left, _WAIT_SLICE)):
                        raise _Stopped
            if stop.is_set():
                raise _Stopped

        sender._sleep = sleep
        return sender

    def _process(self, job: Job, sender: PreoClient, stop: threading.Event) -> RefundOutcome | None:
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
        iterator = self._outcomes()
        self._iterator = weakref.ref(iterator)  # weakly: see AsyncBulkRun.__aiter__
        return iterator

    def close(self) -> None:
        """End the run now (``contextlib.closing(run)`` around ``for ... break``): waits in
        workers are interrupted, requests on the wire finish, the input's reader is stopped
        and the journal released at once, not when the run is garbage-collected (idempotent;
        also releases the journal of a run that was never iterated)."""
        iterator = self._iterator() if self._iterator is not None else None
        self._iterator = None
        try:
            if iterator is not None:
                iterator.close()
        finally:
            self._core.close()

    def _outcomes(self) -> Generator[RefundOutcome, None, None]:
        core = self._core
        self._trace = bulk_trace(self.run_id, self._concurrency)
        stop = threading.Event()
        sender = self._sender(stop)
        events: queue.SimpleQueue[Future[RefundOutcome | None] | Read] = queue.SimpleQueue()
        pending: dict[Future[RefundOutcome | None], Job] = {}
        pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="preo-refund")
        reader = None if _inline(self._items) else _ThreadReader(self._items)
        position = 0
        reading = exhausted = False
        source_error: BaseException | None = None

        def schedule(job: Job) -> None:
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
                        source_error = _source_error(got)
                        break
                    steps = core.begin(got[1], position)
                    position += 1
                    for step in steps:
                        if isinstance(step, Job):
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
                        source_error = _source_error((kind, raw))
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
                    if isinstance(step, Job):
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
            self._finish(position, exhausted and source_error is None)
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
