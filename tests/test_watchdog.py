"""The one-timer watchdog bounding async attempts: driven by a fake loop and clock, over any
sequence of attempts starting, ending and time passing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preo_client import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AsyncPreoClient,
    Backoff,
    RefundOutcomeUnknownError,
)
from preo_client._watchdog import AGAIN, Watch, Watchdog


@dataclass
class FakeHandle:
    when: float
    callback: object
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeLoop:
    now: float = 0.0
    handles: list[FakeHandle] = field(default_factory=list)

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: object, /) -> FakeHandle:
        handle = FakeHandle(when, callback)
        self.handles.append(handle)
        return handle

    def live(self) -> list[FakeHandle]:
        return [h for h in self.handles if not h.cancelled]

    def advance(self, seconds: float) -> None:
        """Run every timer due by now + seconds, in time order (as asyncio does)."""
        end = self.now + seconds
        while True:
            due = [h for h in self.live() if h.when <= end]
            if not due:
                break
            handle = min(due, key=lambda h: h.when)
            self.now = max(self.now, handle.when)
            handle.cancelled = True  # ran: no longer pending
            handle.callback()  # type: ignore[operator]
        self.now = end


@dataclass
class FakeTask:
    cancels: int = 0

    def cancel(self) -> None:
        self.cancels += 1


EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("watch"), st.floats(0.01, 60)),
        st.tuples(st.just("done"), st.integers(0, 50)),
        st.tuples(st.just("advance"), st.floats(0, 30)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(events=EVENTS)
def test_every_attempt_past_its_deadline_is_cancelled_until_it_ends_and_no_other(
    events: list[tuple[str, float]],
) -> None:
    """An attempt is cancelled first when its deadline passes, then again every AGAIN seconds
    while it runs on (its transport may swallow a cancellation); never before its deadline,
    never after it ended; one timer per loop, always set while anything is watched."""
    loop = FakeLoop()
    dog = Watchdog(loop)
    running: list[tuple[Watch, FakeTask, float]] = []
    ended: list[tuple[Watch, FakeTask, int]] = []
    for kind, value in events:
        if kind == "watch":
            task = FakeTask()
            running.append((dog.watch(task, value), task, loop.now + value))
        elif kind == "done" and running:
            watch, task, _ = running.pop(int(value) % len(running))
            dog.done(watch)
            ended.append((watch, task, task.cancels))
        elif kind == "advance":
            loop.advance(value)
        # invariants after every step
        live = loop.live()
        assert len(live) <= 1, "one timer per loop at most"
        for watch, task, deadline in running:
            assert task.cancels == watch.cancels
            if loop.now < deadline:
                assert not watch.expired
                assert task.cancels == 0
            else:
                assert watch.expired
                # cancelled about once per AGAIN since the deadline, never more often
                assert 1 <= task.cancels <= 2 + (loop.now - deadline) / AGAIN
                assert watch.deadline > loop.now
        for _watch, task, cancels_at_end in ended:  # never cancelled after it ended
            assert task.cancels == cancels_at_end
        if running:
            assert live, "a watched attempt always has a timer coming"
            assert live[0].when <= min(w.deadline for w, _, _ in running)
        assert dog.watched == len(running)
    loop.advance(61)
    for watch, task, _ in running:
        assert watch.expired
        assert task.cancels >= 1
        dog.done(watch)
    assert dog.watched == 0
    loop.advance(1)
    assert not loop.live()


def test_attempts_of_one_duration_set_the_timer_once() -> None:
    """Deadlines of one duration come in order: the timer is not moved for each attempt."""
    loop = FakeLoop()
    dog = Watchdog(loop)
    for _ in range(1000):
        loop.now += 0.001
        dog.done(dog.watch(FakeTask(), 30.0))
    assert len(loop.handles) == 1


# -- with a real loop: an attempt that hangs ends at its deadline ------------------------------


def test_a_hanging_attempt_ends_as_a_timeout_and_others_go_on() -> None:
    gate = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/slow/refund"):
            await gate.wait()  # never set: hangs until cancelled
        return httpx.Response(
            201,
            json={"id": "rr_1", "amount": "10.00", "requested_by": {"id": "u"},
                  "pickup_point": {"id": "p"}, "edition_id": "e", "can_approve": "true",
                  "can_reject": "true", "created": "2026-07-04T18:22:11Z",
                  "modified": "2026-07-04T18:22:11Z"},
        )  # fmt: skip

    async def main() -> None:
        http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        client = AsyncPreoClient(api_key="sk_test_1", http_client=http, timeout=0.3)
        slow = asyncio.ensure_future(client.purchases.refund("slow", reason="sold_out"))
        fast = [client.purchases.refund(f"p{i}", reason="sold_out") for i in range(20)]
        refunds = await asyncio.wait_for(asyncio.gather(*fast), 10)
        assert [r.id for r in refunds] == ["rr_1"] * 20
        with pytest.raises(APITimeoutError) as caught:
            await asyncio.wait_for(slow, 10)
        assert isinstance(caught.value, RefundOutcomeUnknownError)
        assert client._binding.watchdog is not None
        assert client._binding.watchdog.watched == 0

    asyncio.run(main())


# -- what ends an attempt is read from the task, not only from the exception (review round 4) --

_OK_BODY = {
    "id": "rr_1", "amount": "10.00", "requested_by": {"id": "u"}, "pickup_point": {"id": "p"},
    "edition_id": "e", "can_approve": "true", "can_reject": "true",
    "created": "2026-07-04T18:22:11Z", "modified": "2026-07-04T18:22:11Z",
}  # fmt: skip


class _Hangs(httpx.AsyncBaseTransport):
    """Never answers; what it does when cancelled is ``mode``."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        try:
            await asyncio.sleep(30)
        except BaseException:
            if self.mode == "error":  # a wrapper that turns anything into its own error
                raise httpx.ReadError("send failed", request=request) from None
            if self.mode == "503":  # a circuit breaker failing open
                return httpx.Response(503, request=request)
            if self.mode == "answer":  # an answer although cancelled
                return httpx.Response(201, json=_OK_BODY, request=request)
            raise
        raise AssertionError("unreachable")


@pytest.mark.parametrize("mode", ["error", "503"])
def test_a_swallowed_deadline_cancel_still_ends_as_the_deadline(mode: str) -> None:
    """The expiry is not lost when the transport hides our CancelledError: the call ends as the
    deadline (outcome unknown, not retried), and the task keeps no cancellation request, so
    the caller's own asyncio.timeout still ends in TimeoutError."""
    transport = _Hangs(mode)

    async def main() -> str:
        client = AsyncPreoClient(
            api_key="sk_test_1", timeout=0.2,
            http_client=httpx.AsyncClient(transport=transport),
        )  # fmt: skip
        with pytest.raises(APITimeoutError) as caught:
            await client.purchases.refund("pur_1", reason="sold_out")
        assert isinstance(caught.value, RefundOutcomeUnknownError)
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0
        try:
            async with asyncio.timeout(0.2):
                await asyncio.sleep(5)
        except TimeoutError:
            return "timeout"
        return "no timeout"

    assert asyncio.run(asyncio.wait_for(main(), 20)) == "timeout"
    assert transport.sent == 1  # a refund that may exist is not sent again


def test_an_answer_that_swallowed_the_cancel_is_the_refund() -> None:
    async def main() -> None:
        client = AsyncPreoClient(
            api_key="sk_test_1", timeout=0.2,
            http_client=httpx.AsyncClient(transport=_Hangs("answer")),
        )  # fmt: skip
        refund = await client.purchases.refund("pur_1", reason="sold_out")
        assert refund.id == "rr_1"
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0

    asyncio.run(asyncio.wait_for(main(), 20))


def test_the_owners_cancel_wins_over_the_deadline() -> None:
    async def main() -> None:
        client = AsyncPreoClient(
            api_key="sk_test_1", timeout=0.2,
            http_client=httpx.AsyncClient(transport=_Hangs("error")),
        )  # fmt: skip
        call = asyncio.ensure_future(client.purchases.refund("pur_1", reason="sold_out"))
        await asyncio.sleep(0.29)  # just before the watchdog (0.2 s + grace) fires
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert call.cancelled()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_a_cancelled_error_nobody_asked_for_is_a_transport_failure() -> None:
    class StrayCancel(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            future = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(0.02, future.cancel)
            await future
            raise AssertionError("unreachable")

    async def main() -> None:
        client = AsyncPreoClient(
            api_key="sk_test_1", timeout=2,
            http_client=httpx.AsyncClient(transport=StrayCancel()),
        )  # fmt: skip
        with pytest.raises(APIConnectionError) as caught:
            await client.purchases.refund("pur_1", reason="sold_out")
        assert isinstance(caught.value, RefundOutcomeUnknownError)

    asyncio.run(asyncio.wait_for(main(), 20))


class _ConnectTimesOutAtTheTotal(httpx.AsyncBaseTransport):
    """A transport whose own connect (or pool) timeout equals the attempt's total."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.attempts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        await asyncio.sleep(self.seconds)
        raise httpx.ConnectTimeout("timed out connecting", request=request)


def test_a_connect_timeout_as_long_as_the_total_is_never_sent_and_retried() -> None:
    """The watchdog gives the transport's own timeout of the same length the first word: a
    connect timeout proves nothing was sent (retried; not outcome-unknown)."""
    transport = _ConnectTimesOutAtTheTotal(0.2)

    async def main() -> None:
        client = AsyncPreoClient(
            api_key="sk_test_1", timeout=0.2, backoff=Backoff(base=0, cap=0),
            http_client=httpx.AsyncClient(transport=transport),
        )  # fmt: skip
        with pytest.raises(APITimeoutError) as caught:
            await client.purchases.refund("pur_1", reason="sold_out")
        assert not isinstance(caught.value, RefundOutcomeUnknownError)

    asyncio.run(asyncio.wait_for(main(), 20))
    assert transport.attempts == 3  # max_retries=2: a refund never sent is retried


class _IgnoresOneCancel(httpx.AsyncBaseTransport):
    """Swallows the first cancellation and keeps waiting (review round 5, f4)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for _ in range(2):
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                continue
        raise AssertionError("cancelled twice, still running")


def test_a_transport_that_swallows_a_cancellation_is_cancelled_again() -> None:
    async def main() -> float:
        client = AsyncPreoClient(
            api_key="sk_test_1", timeout=0.3, max_retries=0,
            http_client=httpx.AsyncClient(transport=_IgnoresOneCancel()),
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(APIError) as caught:
            await client.purchases.refund("pur_1", reason="sold_out")
        assert isinstance(caught.value, RefundOutcomeUnknownError)
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0
        return loop.time() - started

    elapsed = asyncio.run(asyncio.wait_for(main(), 20))
    assert elapsed < 5  # not the transport's 30 s (the bound here is about 0.5 s)
