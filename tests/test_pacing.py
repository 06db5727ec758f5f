"""AdaptivePacer: bounds, schedule, reaction to throttles, thread safety, simulated bulk runs.

All time is simulated through the pacer's injected clock; nothing here sleeps or times itself.
A watchdog (a worker thread joined with a timeout) turns a hang into a failure.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import sys
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preo_client import RefundValidationError
from preo_client._call import Pacer
from preo_client._pacing import MIN_RATE, AdaptivePacer, Slot

WATCHDOG = 120.0  # seconds: generous; only a hang gets near it
EPS = 1e-9


def watchdog(fn: Callable[[], Any], seconds: float = WATCHDOG) -> Any:
    """Run ``fn`` in a thread; fail (instead of blocking CI) if it does not finish in time."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"watchdog: still running after {seconds} s (a hang?)")
    if errors:
        raise errors[0]
    return result[0]


def take(pacer: AdaptivePacer) -> tuple[Slot, float]:
    """Reserve a slot granted at once (no slow-start queue in the way) and its wait."""
    slot = pacer.reserve()
    wait = slot.until_ready()
    assert slot._state == "granted", "queued behind the slow-start window"
    return slot, wait


def once(pacer: AdaptivePacer, *, throttled: bool) -> float:
    """One attempt answered at once: reserve, wait, settle."""
    slot, wait = take(pacer)
    slot.answered(throttled=throttled)
    return wait


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- validation and the simple modes ---------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, 0.0, math.nan, math.inf, -math.inf, True, False, "10"])
def test_bad_max_rate_is_refused_naming_the_argument(bad: object) -> None:
    with pytest.raises(RefundValidationError) as info:
        AdaptivePacer(max_rate=bad)  # type: ignore[arg-type]
    assert info.value.field == "max_rate"
    assert "> 0" in str(info.value)
    assert "None" in str(info.value)


@pytest.mark.parametrize("bad", ["Adaptive", "cubic", "", None, 1])
def test_unknown_pacing_is_refused_naming_the_allowed_values(bad: object) -> None:
    with pytest.raises(RefundValidationError) as info:
        AdaptivePacer(pacing=bad)  # type: ignore[arg-type]
    assert info.value.field == "pacing"
    assert "'adaptive'" in str(info.value)
    assert "'fixed'" in str(info.value)


@pytest.mark.parametrize("bad", [0.5, 0, math.nan, True])
def test_bad_burst_is_refused(bad: object) -> None:
    with pytest.raises(RefundValidationError) as info:
        AdaptivePacer(burst=bad)  # type: ignore[arg-type]
    assert info.value.field == "burst"


def test_is_a_pacer() -> None:
    pacer: Pacer = AdaptivePacer()
    with pacer.reserve() as slot:
        assert slot.until_ready() == 0.0


def test_fixed_without_max_rate_never_paces() -> None:
    clock = Clock()
    pacer = AdaptivePacer(pacing="fixed", clock=clock)
    for _ in range(100):
        assert once(pacer, throttled=True) == 0.0
    assert pacer.rate is None
    assert pacer.throttled == 100


def test_fixed_staggers_concurrent_callers_and_ignores_throttles() -> None:
    clock = Clock()
    pacer = AdaptivePacer(max_rate=10, pacing="fixed", clock=clock)
    slots = [take(pacer) for _ in range(5)]
    assert [wait for _, wait in slots] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    slots[0][0].answered(throttled=True)
    assert pacer.rate == 10
    clock.now = 100.0  # idle: the bucket is full again (burst 1)
    assert take(pacer)[1] == 0.0
    assert take(pacer)[1] == pytest.approx(0.1)


def test_adaptive_is_unlimited_until_the_first_throttle() -> None:
    clock = Clock()
    pacer = AdaptivePacer(clock=clock)
    for _ in range(1000):
        slot, wait = take(pacer)
        assert wait == 0.0
        clock.now += 0.001
        slot.answered(throttled=False)
    assert pacer.rate is None
    once(pacer, throttled=True)
    assert pacer.rate is not None
    assert pacer.rate < 1000  # below what was being sent


def test_stats() -> None:
    clock = Clock()
    pacer = AdaptivePacer(clock=clock)
    assert (pacer.sent, pacer.throttled, pacer.throttled_share, pacer.rate) == (0, 0, 0.0, None)
    for throttled in (False, False, False, True):
        slot, _ = take(pacer)
        clock.now += 0.01
        slot.answered(throttled=throttled)
    assert (pacer.sent, pacer.throttled, pacer.throttled_share) == (4, 1, 0.25)
    assert "sent=4" in repr(pacer)


# -- invariants over random sequences --------------------------------------------------------


class Stop(Exception):
    """Stands for whatever ends a slot's block without an answer (a stop, a cancellation)."""


# Events of a run, as the retry loops produce them. ``which`` picks one of the live slots.
ANSWERS = ("ok", "throttled", "final", "unknown", "connect_error")
answer = st.tuples(st.just("answer"), st.tuples(st.integers(0, 1000), st.sampled_from(ANSWERS)))
events = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(0, 5, allow_nan=False)),
        st.tuples(st.just("reserve"), st.integers(1, 20)),
        st.tuples(st.just("ready"), st.integers(0, 1000)),
        answer,
        answer,
        answer,
        st.tuples(st.just("stop"), st.integers(0, 1000)),  # a stop / cancellation / exception
        st.tuples(st.just("again"), st.integers(0, 1000)),  # settle a settled slot again
    ),
    min_size=10,
    max_size=150,
)
max_rates = st.one_of(st.none(), st.floats(0.1, 500))


class Run:
    """A pure model of a run's slots: each is queued, ready (granted, waited) or settled."""

    def __init__(self, pacer: AdaptivePacer, clock: Clock, floor: float) -> None:
        self.pacer, self.clock, self.floor = pacer, clock, floor
        self.live: list[Slot] = []  # reserved, not settled
        self.ready: set[int] = set()  # ids of live slots whose until_ready said 0
        self.done: list[Slot] = []
        self.reserved = 0
        # (slot time, rate in force when it was last booked) of every slot sent while paced
        self.grants: list[tuple[float, float]] = []

    def pick(self, which: int) -> Slot | None:
        return self.live[which % len(self.live)] if self.live else None

    def reserve(self, count: int) -> None:
        for _ in range(count):
            slot = self.pacer.reserve()
            self.live.append(slot)
            self.reserved += 1

    def until_ready(self, slot: Slot) -> None:
        wait = slot.until_ready()
        assert 0 <= wait <= 3600
        self.clock.now += wait  # the holder sleeps it (the others are frozen meanwhile)
        if slot._state == "queued":
            assert 0 < wait <= 0.1  # it asks again soon: a queued slot never sleeps long
        elif wait == 0:
            self.ready.add(id(slot))

    def settle(self, slot: Slot, answer: str) -> None:
        """Settle like the retry loops: the slot's ``with`` block ends after the answer."""
        before, gen = self.pacer.rate, self.pacer._gen
        if slot._rate is not None:
            self.grants.append((slot._due, slot._rate))
        granted_now = slot._gen == gen and slot._state == "granted"
        with slot:
            if answer == "connect_error":
                slot.unanswered()
            else:
                slot.answered(throttled=answer == "throttled")
        self.finish(slot)
        after = self.pacer.rate
        if answer == "throttled":  # never raises the rate (None = unlimited)
            assert before is None or (after is not None and after <= before + EPS)
            if granted_now and self.pacer._adaptive:  # a new throttle event always lowers it
                assert after is not None
                assert before is None or after < before - EPS or after <= self.floor + EPS

    def stop(self, slot: Slot) -> None:
        with pytest.raises(Stop), slot:
            raise Stop
        self.finish(slot)

    def finish(self, slot: Slot) -> None:
        assert slot.settled
        self.live.remove(slot)
        self.ready.discard(id(slot))
        self.done.append(slot)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=events, max_rate=max_rates, pacing=st.sampled_from(["adaptive", "fixed"]),
       burst=st.sampled_from([1.0, 2.0, 3.5]),
       drain=st.lists(st.sampled_from(ANSWERS), min_size=1, max_size=8))  # fmt: skip
def test_every_slot_is_settled_once_and_throttles_lower_the_rate_within_bounds(
    events: list[tuple[str, Any]],
    max_rate: float | None,
    pacing: Any,
    burst: float,
    drain: list[str],
) -> None:
    """Over event sequences (reserve, answers of every class, connect errors, stops, settling
    twice, interleaved): every slot is settled exactly once (a second time raises, a block
    left any way settles it), in-flight slots are counted exactly, a throttle never raises the
    rate and a new throttle event lowers it, the rate stays within [floor, max_rate], the
    bucket's schedule holds, and no slot waits forever (watchdog)."""
    from preo_client._pacing import SlotSettledTwice

    clock = Clock()
    pacer = AdaptivePacer(max_rate=max_rate, pacing=pacing, clock=clock, burst=burst)
    floor = min(MIN_RATE, max_rate) if max_rate is not None else MIN_RATE
    run = Run(pacer, clock, floor)

    def check() -> None:
        rate = pacer.rate
        if rate is not None:
            assert floor - EPS <= rate
            assert max_rate is None or rate <= max_rate + EPS
        else:
            assert pacing == "adaptive" or max_rate is None
        assert pacer.in_flight == sum(s._state == "granted" for s in run.live)
        window = pacer.window
        assert window is None or pacer.in_flight <= window

    def play() -> None:
        for op, arg in events:
            if op == "advance":
                clock.now += arg
            elif op == "reserve":
                run.reserve(arg)
            elif op == "ready" and (slot := run.pick(arg)) is not None:
                run.until_ready(slot)
            elif op == "answer" and (slot := run.pick(arg[0])) is not None:
                if id(slot) not in run.ready:  # the loop waits first; only a ready slot is sent
                    run.until_ready(slot)
                if id(slot) in run.ready:
                    run.settle(slot, arg[1])
                elif slot._state == "granted":  # booked later: time passes, then it is sent
                    clock.now = max(clock.now, slot._due)
                    run.until_ready(slot)
                    if id(slot) in run.ready:
                        run.settle(slot, arg[1])
            elif op == "stop" and (slot := run.pick(arg)) is not None:
                run.stop(slot)
            elif op == "again" and run.done:
                slot = run.done[arg % len(run.done)]
                with pytest.raises(SlotSettledTwice):
                    slot.answered(throttled=True)
                with pytest.raises(SlotSettledTwice):
                    slot.until_ready()
            check()
        # Drain: every live slot is eventually ready (nothing waits forever) and settled.
        for step in range(10_000):
            if not run.live:
                break
            slot = run.live[step % len(run.live)]
            run.until_ready(slot)
            clock.now += 0.01
            if id(slot) in run.ready:
                run.settle(slot, drain[step % len(drain)])
            check()
        assert not run.live, "a slot stayed queued"
        assert pacer.in_flight == 0
        assert len(run.done) == run.reserved  # settled exactly once each
        assert len({id(s) for s in run.done}) == run.reserved

    watchdog(play, 60)

    # The schedule: in any window [a, b] of granted slots, at most rate x (b - a) + burst,
    # with the highest rate in force when those slots were booked.
    slots = sorted(run.grants)
    for i in range(len(slots)):
        top = 0.0
        for j in range(i, len(slots)):
            top = max(top, slots[j][1])
            count = j - i + 1
            width = slots[j][0] - slots[i][0]
            assert count <= top * width + burst + 1e-6, (i, j, slots[i : j + 1])


@settings(max_examples=100, deadline=None)
@given(max_rate=max_rates, throttles=st.integers(1, 5), gap=st.floats(0.001, 0.5))
def test_a_long_quiet_run_probes_the_rate_back_up(
    max_rate: float | None, throttles: int, gap: float
) -> None:
    clock = Clock()
    pacer = AdaptivePacer(max_rate=max_rate, clock=clock)
    for _ in range(50):  # some traffic, then throttles
        slot, _ = take(pacer)
        clock.now += gap
        slot.answered(throttled=False)
    for _ in range(throttles):
        once(pacer, throttled=True)
    low = pacer.rate
    assert low is not None
    for _ in range(5000):  # one worker that uses every slot it gets; nothing is throttled
        slot, wait = take(pacer)
        clock.now += wait + 0.001
        slot.answered(throttled=False)
        if clock.now > 600:
            break
    high = pacer.rate
    assert high is not None
    if max_rate is not None and low >= max_rate - EPS:
        assert high == pytest.approx(max_rate)
    else:
        assert high > low, (low, high)


def test_many_threads_get_distinct_slots() -> None:
    clock = Clock()
    pacer = AdaptivePacer(max_rate=50, pacing="fixed", clock=clock)
    waits: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = [take(pacer)[1] for _ in range(200)]
        with lock:
            waits.extend(mine)

    def run() -> None:
        threads = [threading.Thread(target=worker) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    watchdog(run)
    assert len(waits) == 16 * 200 == pacer.sent
    ordered = sorted(waits)
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    assert min(gaps) >= 1 / 50 - EPS  # every slot distinct, one interval apart
    assert ordered[-1] == pytest.approx((len(waits) - 1) / 50)


def test_many_threads_adaptive_smoke() -> None:
    clock = Clock()
    pacer = AdaptivePacer(clock=clock)
    once(pacer, throttled=True)  # enforce the bucket
    waits: list[float] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(300):
            slot, wait = take(pacer)
            slot.answered(throttled=(i + n) % 50 == 0)
            with lock:
                waits.append(wait)

    def run() -> None:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    watchdog(run)
    assert pacer.sent == 1 + 8 * 300
    assert len(set(waits)) == len(waits)  # a frozen clock: every booked slot is its own


# -- discrete-event simulations of a bulk run ------------------------------------------------

Process = Generator[float, None, None]


class Simulation:
    """A bulk run in simulated time: workers, a token-bucket server, a shared Retry-After pause.

    Each worker: wait out the pause, reserve a slot, wait for it, send; the answer comes
    ``latency`` later; a ``429`` (Retry-After ``retry_after``) pauses every worker (under
    adaptive pacing: only its own item) and the item is retried. Mirrors the client's retry
    loop (pause, then pacer, then attempt) and ``_pauses_the_run``.
    """

    def __init__(self, *, items: int, workers: int, latency: float,
                 limit: float | None = None, burst: float = 10.0,
                 retry_after: float = 1.0) -> None:  # fmt: skip
        self.now = 0.0
        self.items = items
        self.workers = workers
        self.latency = latency
        self.limit = limit
        self.burst = burst
        self.retry_after = retry_after
        self.tokens = burst
        self.refilled = 0.0
        self.paused_until = 0.0
        self.requests = 0
        self.throttled = 0
        self.done = 0

    def clock(self) -> float:
        return self.now

    def _accept(self) -> bool:
        if self.limit is None:
            return True
        self.tokens = min(self.burst, self.tokens + (self.now - self.refilled) * self.limit)
        self.refilled = self.now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def _worker(self, todo: Iterator[int], pacer: AdaptivePacer | None) -> Process:
        for _ in todo:
            while True:
                if self.paused_until > self.now:
                    yield self.paused_until - self.now
                slot = pacer.reserve() if pacer is not None else None
                while slot is not None and (wait := slot.until_ready()) > 0:
                    yield wait
                self.requests += 1
                accepted = self._accept()
                yield self.latency
                if slot is not None:
                    slot.answered(throttled=not accepted)
                if accepted:
                    self.done += 1
                    break
                self.throttled += 1
                if pacer is not None and pacer.paces_throttling:  # the client's _pauses_the_run
                    yield self.retry_after  # a short 429: only this item waits, the rate is cut
                else:
                    self.paused_until = max(self.paused_until, self.now + self.retry_after)

    def run(self, pacer: AdaptivePacer | None, max_steps: int = 2_000_000) -> Simulation:
        todo = iter(range(self.items))
        seq = itertools.count()
        heap = [(0.0, next(seq), self._worker(todo, pacer)) for _ in range(self.workers)]
        heapq.heapify(heap)
        for _ in range(max_steps):  # a livelock fails instead of spinning forever
            if not heap:
                break
            self.now, _, process = heapq.heappop(heap)
            try:
                delay = next(process)
            except StopIteration:
                continue
            heapq.heappush(heap, (self.now + delay, next(seq), process))
        else:
            pytest.fail(f"simulation did not finish in {max_steps} steps")
        assert self.done == self.items
        return self

    @property
    def rate(self) -> float:
        return self.done / self.now

    @property
    def throttled_share(self) -> float:
        return self.throttled / self.requests

    def __str__(self) -> str:
        return (f"{self.rate:.1f} req/s, {self.throttled}/{self.requests} requests throttled "
                f"({self.throttled_share:.1%}), {self.now:.1f} s")  # fmt: skip


def simulate(pacer: Callable[[Callable[[], float]], AdaptivePacer] | None, **kw: Any) -> Simulation:
    sim = Simulation(**kw)
    return watchdog(lambda: sim.run(pacer(sim.clock) if pacer else None))


RATE_LIMITED = {"items": 3000, "workers": 64, "latency": 0.02, "limit": 100.0, "burst": 10.0}


def test_simulated_rate_limited_run() -> None:
    """Limit 100 req/s (burst 10), 20 ms latency, 64 workers, 3,000 items.

    Issue 17's goal: >= 0.97 x limit and <= 1 % 429s. Slow start (4 in flight, the send rate
    doubling per 100 ms) replaced the first unpaced wave of 64 (54 429s): the pacer reaches
    0.99 x limit with 0.3 % 429s here (9: 3 in slow start, 1 just after its cut, 5 probes
    above the limit, one per 5-6 s), against 0.12 x limit and 84 % 429s with no pacer.
    """
    paced = simulate(lambda clock: AdaptivePacer(clock=clock), **RATE_LIMITED)
    unpaced = simulate(None, **RATE_LIMITED)
    report = f"adaptive: {paced}; no pacer: {unpaced}"
    assert paced.rate >= 0.97 * 100, report
    assert paced.throttled_share <= 0.01, report
    assert paced.rate >= 5 * unpaced.rate, report
    assert paced.throttled_share * 10 <= unpaced.throttled_share, report


def test_simulated_short_rate_limited_run() -> None:
    """The same server, 1,000 items: the first wave weighs three times as much. Issue 17's
    goal holds here too: 0.99 x limit with 0.5 % 429s (5: 3 in slow start, 1 just after its
    cut, 1 probe). Before, with the window doubling per 20 ms round trip, some 15 requests
    were in flight when the first 429 came back, and a cut from a burst-inflated rate took
    6 more to find the limit: 2.2 %."""
    kw = {**RATE_LIMITED, "items": 1000}
    paced = simulate(lambda clock: AdaptivePacer(clock=clock), **kw)
    unpaced = simulate(None, **kw)
    report = f"adaptive: {paced}; no pacer: {unpaced}"
    assert paced.rate >= 0.97 * 100, report
    assert paced.throttled_share <= 0.01, report
    assert paced.throttled_share * 10 <= unpaced.throttled_share, report


@settings(max_examples=30, deadline=None)
@given(limit=st.floats(50, 150), burst=st.sampled_from([5.0, 10.0, 20.0]),
       latency=st.sampled_from([0.01, 0.02, 0.03, 0.05]), workers=st.sampled_from([32, 64]),
       retry_after=st.sampled_from([1.0, 2.0]))  # fmt: skip
def test_simulated_runs_near_the_benchmark_stay_near_the_goal(
    limit: float, burst: float, latency: float, workers: int, retry_after: float
) -> None:
    """Around the benchmark's server (limits 50-150 req/s, bursts 5-20, 10-50 ms, 32 or 64
    workers): the first wave and the search for the limit cost a few dozen 429s at most, so
    a 3,000-item run stays within 1.2 % 429s and 0.85 x the limit (3,000 such servers: at
    most 0.96 % and at least 0.88 x; the goal of 1 % and 0.97 x is met at the benchmark's
    point, not everywhere: a bigger burst with longer round trips overshoots more in slow
    start, a small burst at a high limit is found late), and a 1,000-item run within 2.5 %
    (at most 2.2 %; before this change, 2.2 % was the median and 4.6 % the worst)."""
    kw = {"workers": workers, "latency": latency, "limit": limit, "burst": burst,
          "retry_after": retry_after}  # fmt: skip
    long_run = simulate(lambda clock: AdaptivePacer(clock=clock), items=3000, **kw)
    short_run = simulate(lambda clock: AdaptivePacer(clock=clock), items=1000, **kw)
    report = f"3,000 items: {long_run}; 1,000 items: {short_run}"
    assert long_run.throttled_share <= 0.012, report
    assert long_run.rate >= 0.85 * limit, report
    assert short_run.throttled_share <= 0.025, report
    assert short_run.rate >= 0.75 * limit, report


def test_simulated_long_rate_limited_run_converges() -> None:
    kw = {**RATE_LIMITED, "items": 20_000}
    paced = simulate(lambda clock: AdaptivePacer(clock=clock), **kw)
    assert paced.rate >= 0.92 * 100, str(paced)
    assert paced.throttled_share <= 0.02, str(paced)


def test_simulated_fixed_rate_below_the_limit_is_never_throttled() -> None:
    paced = simulate(lambda clock: AdaptivePacer(max_rate=95, pacing="fixed", clock=clock),
                     **RATE_LIMITED)  # fmt: skip
    assert paced.throttled == 0, str(paced)
    assert paced.rate >= 0.94 * 100, str(paced)


@pytest.mark.parametrize("pacing", ["adaptive", "fixed"])
def test_simulated_latency_bound_run_is_not_slowed(pacing: Any) -> None:
    """No limit, 200 ms latency, 64 workers: the bound is 64 / 0.2 = 320 req/s."""
    kw = {"items": 3000, "workers": 64, "latency": 0.2}
    paced = simulate(lambda clock: AdaptivePacer(pacing=pacing, clock=clock), **kw)
    unpaced = simulate(None, **kw)
    report = f"paced: {paced}; unpaced: {unpaced}"
    assert paced.rate >= 0.9 * 64 / 0.2, report
    if pacing == "fixed":  # no max_rate: no pacing at all
        assert paced.rate == pytest.approx(unpaced.rate)
    else:  # slow start from 4 to 64 in flight: it loses at most a few round trips
        assert paced.now <= unpaced.now + math.log2(64 / 4) * 0.2, report
    assert paced.throttled == 0


@settings(max_examples=20, deadline=None)
@given(latency=st.floats(0.002, 0.2), workers=st.sampled_from([4, 16, 64, 128]))
def test_simulated_unlimited_runs_lose_at_most_a_few_periods(latency: float, workers: int) -> None:
    """No limit: slow start (4 in flight, the send rate doubling per round trip or per
    100 ms, whichever is longer) costs a run about log2(workers / 4) of those, once, against
    no pacer (a grid of 240 such runs: at most one more; the latency-bound test above is the
    200 ms case)."""
    kw = {"items": 3000, "workers": workers, "latency": latency}
    paced = simulate(lambda clock: AdaptivePacer(clock=clock), **kw)
    unpaced = simulate(None, **kw)
    report = f"paced: {paced}; unpaced: {unpaced}"
    periods = math.log2(workers / 4) + 1
    assert paced.now <= unpaced.now + periods * max(latency, 0.1), report
    assert paced.throttled == 0


@settings(max_examples=15, deadline=None)
@given(limit=st.floats(5, 400), burst=st.sampled_from([1.0, 5.0, 20.0]),
       latency=st.sampled_from([0.01, 0.05, 0.2]), workers=st.sampled_from([4, 16, 64]),
       retry_after=st.sampled_from([0.5, 1.0, 2.0]))  # fmt: skip
def test_simulated_runs_never_do_worse_than_no_pacer(
    limit: float, burst: float, latency: float, workers: int, retry_after: float
) -> None:
    """Over random servers: the adaptive pacer never throttles more than no pacer, and is
    never much slower (a grid of 567 such servers: >= 0.83 x, 2-11 x faster on average; the
    slowest are small limits, 5-10 req/s, with 64 workers, where it throttles 20-30 x less)."""
    kw = {"items": 400, "workers": workers, "latency": latency, "limit": limit, "burst": burst,
          "retry_after": retry_after}  # fmt: skip
    paced = simulate(lambda clock: AdaptivePacer(clock=clock), **kw)
    unpaced = simulate(None, **kw)
    report = f"adaptive: {paced}; no pacer: {unpaced}"
    assert paced.throttled <= unpaced.throttled, report
    assert paced.rate >= 0.75 * unpaced.rate, report


# -- the benchmark's pure parts (benchmarks/pacing.py) ---------------------------------------


def test_benchmark_percentile_and_result() -> None:
    from benchmarks.pacing import Result, percentile

    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile(list(map(float, range(1, 101))), 99) == 99.0
    assert percentile([5.0], 99) == 5.0
    assert math.isnan(percentile([], 50))
    result = Result(items=300, elapsed=3.0, requests=400, throttled=100, item_times=(0.1,))
    assert (result.rate, result.throttled_share) == (100.0, 0.25)
    assert Result(0, 0.0, 0, 0, ()).throttled_share == 0.0


def test_benchmark_recorder_counts_429s_and_times_items() -> None:
    import httpx

    from benchmarks.pacing import Recorder

    clock = Clock()
    recorder = Recorder(clock=clock)

    def attempt(key: str, status: int) -> None:
        request = httpx.Request("POST", "http://x/v1", headers={"Idempotency-Key": key})
        recorder.on_request(request)
        clock.now += 0.5
        recorder.on_response(httpx.Response(status, request=request))

    attempt("a", 429)
    attempt("a", 201)  # the item took both attempts: 1.0 s
    attempt("b", 201)
    assert (recorder.requests, recorder.throttled) == (3, 1)
    assert sorted(recorder.item_times()) == [0.5, 1.0]


def test_benchmark_table_ratios_and_missing_client() -> None:
    from benchmarks.pacing import NAIVE, SCENARIOS, Result, render, rows_for

    limited, short, latency_bound = SCENARIOS
    assert (limited.count(3000), short.count(3000), short.count(300)) == (3000, 1000, 300)
    assert (limited.label(3000), short.label(3000), short.label(300)) == (
        "rate-limited",
        "rate-limited (1000)",
        "rate-limited",
    )
    assert short.server_flags() == limited.server_flags()
    assert limited.bound() == 100
    assert latency_bound.bound() == pytest.approx(64 / 0.2)
    assert limited.server_flags() == ["--latency", "0.02", "--rate-limit", "100", "--burst", "10"]
    assert latency_bound.server_flags() == ["--latency", "0.2"]
    rows = rows_for(limited, {
        NAIVE: Result(100, 2.0, 150, 50, (0.1, 0.2)),
        "paced": Result(100, 1.0, 101, 1, (0.1,)),
        "missing": None,
    })  # fmt: skip
    assert rows[0][2:] == ["50.0", "0.50", "33.3%", "0.100", "0.200", "1.00x"]
    assert rows[1][2:] == ["100.0", "1.00", "1.0%", "0.100", "0.100", "2.00x"]
    assert rows[2][2:] == ["n/a"] * 6
    text = render(100, rows)
    assert "100 refunds" in text
    assert "n/a" in text


def test_benchmark_parses_the_sandbox_address_and_the_count() -> None:
    from benchmarks.pacing import count_from, parse_address

    assert parse_address("serving on http://127.0.0.1:5678\n") == "http://127.0.0.1:5678"
    assert parse_address("Preo sandbox listening on http://127.0.0.1:1") is None
    assert count_from([], {}) == 3000
    assert count_from([], {"PREO_BENCH_PACING_COUNT": "50"}) == 50
    assert count_from(["7"], {"PREO_BENCH_PACING_COUNT": "50"}) == 7
    with pytest.raises(ValueError, match="> 0"):
        count_from(["0"], {})


def test_benchmark_fails_clearly_when_the_sandbox_cannot_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import benchmarks.pacing as bench

    monkeypatch.setattr(bench, "_serve_options", lambda: "--port --host")
    with pytest.raises(bench.SandboxUnavailable, match="--rate-limit"):
        bench.start_sandbox(bench.SCENARIOS[0])
    # A server that prints something else (or dies) is reported with what it printed.
    options = "--quiet --rate-limit --burst --latency"
    monkeypatch.setattr(bench, "_serve_options", lambda: options)
    monkeypatch.setattr(
        bench, "SERVE", [sys.executable, "-c", "print('hello'); import sys; sys.exit(3)"]
    )
    with pytest.raises(bench.SandboxUnavailable, match="'hello'"):
        watchdog(lambda: bench.start_sandbox(bench.SCENARIOS[1]), 60)


def test_benchmark_retry_after_parsing() -> None:
    from benchmarks.pacing import retry_after

    assert retry_after("2") == 2.0
    assert retry_after("0.5") == 0.5
    assert retry_after(None) == 1.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 1.0
    assert retry_after("-3") == 1.0
    assert retry_after("nan") == 1.0


def test_max_rate_caps_an_adaptive_run_from_the_first_request() -> None:
    now = [0.0]
    pacer = AdaptivePacer(max_rate=5, clock=lambda: now[0])
    waits = [take(pacer)[1] for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert pacer.rate == 5


def test_refund_many_paces_every_attempt_through_the_shared_pacer() -> None:
    """A run's pacer is wired into every attempt: with max_rate=5 and pacing="fixed", ten
    refunds are booked 0.2 s apart (the sandbox's virtual sleep records the waits), and pacing
    changes nothing else: one refund per item."""
    import asyncio

    from preo_client.testing import FakePreo

    fake = FakePreo.demo(auto_purchases=True)

    async def go() -> list[float]:
        async with fake.async_client() as client:
            summary = await client.purchases.refund_many(
                [f"pur_p{i}" for i in range(10)],
                reason="sold_out",
                concurrency=4,
                max_rate=5,
                pacing="fixed",
            ).run()
            assert summary.succeeded == 10
        return list(fake.slept)

    import time

    started = time.monotonic()
    waits = asyncio.run(asyncio.wait_for(go(), 30))
    took = time.monotonic() - started  # real time passes while the waits are only recorded
    assert len(waits) == 9  # the first request goes at once
    assert 1.8 - took - 0.01 <= max(waits) <= 1.8 + 0.01  # the tenth slot is booked 1.8 s out
    assert len(fake.refunds) == 10


@pytest.mark.parametrize(
    ("options", "field"), [({"max_rate": 0}, "max_rate"), ({"pacing": "x"}, "pacing")]
)
def test_refund_many_refuses_bad_pacing_before_any_request(
    options: dict[str, object], field: str
) -> None:
    from preo_client import RefundValidationError
    from preo_client.testing import FakePreo

    fake = FakePreo.demo(auto_purchases=True)
    with fake.client() as client, pytest.raises(RefundValidationError) as refused:
        client.purchases.refund_many(["pur_p1"], reason="sold_out", **options).run()  # type: ignore[arg-type]
    assert refused.value.field == field
    assert fake.requests == []


# -- every slot settled exactly once (issue 16 S7, reproduction 7) ---------------------------


def _stuck_in_grace(unsent: int) -> tuple[float | None, float | None]:
    """Reproduction 7, pure: ``unsent`` slots answered by a connect error, 20 answers, then
    the server throttles every request for 22 s."""
    clock = Clock()
    pacer = AdaptivePacer(clock=clock)
    for _ in range(unsent):
        with pacer.reserve() as slot:  # the loop's block: a connect error settles it unanswered
            assert slot.until_ready() == 0.0
            slot.unanswered()
    for _ in range(20):
        slot, _ = take(pacer)
        clock.now += 0.01
        slot.answered(throttled=False)
    slot, _ = take(pacer)
    clock.now += 0.01
    slot.answered(throttled=True)
    first = pacer.rate
    for _ in range(45):
        slot, wait = take(pacer)
        clock.now += wait + 0.5
        slot.answered(throttled=True)
    assert pacer.in_flight == 0
    return first, pacer.rate


@pytest.mark.parametrize("unsent", [0, 1, 50, 500])
def test_connect_errors_do_not_freeze_the_pacer_in_grace(unsent: int) -> None:
    """Before: after 50 connect errors, 45 more 429s left the rate at 66.7/s (0.5/s without
    them). Now every connect error settles its slot, and the throttles cut as without them."""
    first, last = _stuck_in_grace(unsent)
    assert (first, last) == _stuck_in_grace(0)
    assert last is not None
    assert last <= 1.0


class CountingSlot:
    """Wraps a pacer slot; counts how often the loop settles it."""

    def __init__(self, inner: Slot) -> None:
        self.inner = inner
        self.settlements: list[str] = []

    def until_ready(self) -> float:
        return self.inner.until_ready()

    def answered(self, *, throttled: bool) -> None:
        self.settlements.append("throttled" if throttled else "answered")
        self.inner.answered(throttled=throttled)

    def unanswered(self) -> None:
        self.settlements.append("unanswered")
        self.inner.unanswered()

    def __enter__(self) -> CountingSlot:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.inner.settled:
            self.unanswered()


class CountingPacer:
    """An AdaptivePacer whose slots are counted (the run's pacer, swapped in)."""

    def __init__(self, **options: Any) -> None:
        self.inner = AdaptivePacer(**options)
        self.slots: list[CountingSlot] = []
        self.lock = threading.Lock()

    @property
    def paces_throttling(self) -> bool:
        return self.inner.paces_throttling

    def reserve(self) -> CountingSlot:
        slot = CountingSlot(self.inner.reserve())
        with self.lock:
            self.slots.append(slot)
        return slot

    @property
    def rate(self) -> float | None:
        return self.inner.rate

    @property
    def throttled_share(self) -> float:
        return self.inner.throttled_share


SERVER = ("ok", "ok", "ok", "429", "429 0", "503 0", "500", "400", "connect", "read_timeout")


@pytest.mark.parametrize("kind", ["sync", "async"])
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=st.lists(st.sampled_from(SERVER), min_size=1, max_size=40),
       items=st.integers(1, 30), concurrency=st.integers(1, 8),
       stop_after=st.one_of(st.none(), st.integers(0, 10)))  # fmt: skip
def test_a_bulk_run_settles_every_slot_exactly_once(
    monkeypatch: pytest.MonkeyPatch, kind: str, script: list[str], items: int,
    concurrency: int, stop_after: int | None,
) -> None:  # fmt: skip
    """Over server behaviour (answers of every class, connect errors, read timeouts, 429 and
    503 with ``Retry-After: 0``), sync and async, with and without a stop in the middle of
    the run (``on_result`` raising): every slot the run reserved is settled exactly once and
    none is left in flight (a watchdog turns a hang into a failure)."""
    import asyncio
    import importlib

    import httpx

    from preo_client import AsyncPreoClient, Backoff, PreoClient
    from preo_client.testing import FakePreo

    pacers: list[CountingPacer] = []

    def make_pacer(**options: Any) -> CountingPacer:
        pacers.append(CountingPacer(**options))
        return pacers[-1]

    # The run's pacer is made where the bulk core lives (``_bulk``, or ``_bulk_core`` once
    # split): swap it wherever the name is imported.
    for name in ("preo_client._bulk", "preo_client._bulk_core"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "AdaptivePacer"):
            monkeypatch.setattr(module, "AdaptivePacer", make_pacer)
    fake = FakePreo(auto_purchases=True)
    lock = threading.Lock()
    steps = itertools.cycle(script)

    def answer(request: httpx.Request) -> httpx.Response:
        with lock:
            step = next(steps)
        if step == "connect":
            raise httpx.ConnectError("refused", request=request)
        if step == "read_timeout":
            raise httpx.ReadTimeout("slow", request=request)
        if step == "ok":
            return fake.handle(request)
        status, _, wait = step.partition(" ")
        headers = {"retry-after": wait} if wait else {}
        return httpx.Response(int(status), headers=headers, json={"detail": step})

    async def async_answer(request: httpx.Request) -> httpx.Response:
        return answer(request)

    class Stop(Exception):
        pass

    seen = [0]

    def on_result(_: object) -> None:
        seen[0] += 1
        if stop_after is not None and seen[0] > stop_after:
            raise Stop

    ids = [f"pur_{i}" for i in range(items)]
    options: dict[str, Any] = {"api_key": fake.api_key, "base_url": "https://sandbox.preo.test",
                               "backoff": Backoff(0.01, 0.05)}  # fmt: skip

    def run_sync() -> None:
        http = httpx.Client(transport=httpx.MockTransport(answer))
        with PreoClient(http_client=http, **options) as client:
            client._sleep = fake.virtual_sleep
            run = client.purchases.refund_many(
                ids, reason="sold_out", concurrency=concurrency, on_result=on_result
            )
            with contextlib.suppress(Stop):
                run.run()

    async def run_async() -> None:
        http = httpx.AsyncClient(transport=httpx.MockTransport(async_answer))
        async with AsyncPreoClient(http_client=http, **options) as client:
            client._sleep = fake.async_virtual_sleep
            run = client.purchases.refund_many(
                ids, reason="sold_out", concurrency=concurrency, on_result=on_result
            )
            with contextlib.suppress(Stop):
                await run.run()

    watchdog(run_sync if kind == "sync" else lambda: asyncio.run(run_async()), 60)
    (pacer,) = pacers
    for slot in pacer.slots:
        assert len(slot.settlements) == 1, slot.settlements
    assert pacer.inner.in_flight == 0


def test_a_slot_queued_behind_a_window_that_never_answers_goes_after_a_while() -> None:
    """Slow start waits for answers, not forever: if the slots in flight never come back
    (a holder that vanished), a queued slot goes after the patience and slow start ends."""
    clock = Clock()
    pacer = AdaptivePacer(clock=clock)
    held = [take(pacer)[0] for _ in range(4)]  # the initial window, never answered
    queued = pacer.reserve()
    waited = 0.0
    for _ in range(10_000):
        wait = queued.until_ready()
        if wait == 0:
            break
        assert wait <= 0.1
        waited += wait
        clock.now += wait
    assert queued._state == "granted"
    assert 1.0 <= waited < 1.2
    assert pacer.window is None
    for slot in [*held, queued]:
        slot.answered(throttled=False)
    assert pacer.in_flight == 0


def prepare(client: Any) -> Any:
    """The call a client's retry loop sends for ``pur_1``."""
    return client._prepare("pur_1", reason="sold_out", scope=None, amount=None, comment=None,
                           pickup_point_id=None, idempotency_key=None)  # fmt: skip


class Interrupt(Exception):
    """A stop arriving while a worker sleeps (the sync bulk driver's ``_Stopped``)."""


@pytest.mark.parametrize("where", ["wait", "send_exception", "send_base_exception"])
def test_the_sync_loop_settles_its_slot_whatever_ends_it(where: str) -> None:
    import httpx

    from preo_client._call import CallState
    from preo_client.testing import FakePreo

    fake = FakePreo(auto_purchases=True)
    pacer = AdaptivePacer(max_rate=1, pacing="fixed")
    held, _ = take(pacer)  # the next slot waits a second

    def sleep(seconds: float) -> None:
        raise Interrupt

    def answer(request: httpx.Request) -> httpx.Response:
        raise KeyboardInterrupt if where == "send_base_exception" else RuntimeError("bug")

    with fake.client() as client:
        if where == "wait":
            client._sleep = sleep
        else:
            held.answered(throttled=False)
            client._http._transport = httpx.MockTransport(answer)
        call = prepare(client)
        expected: type[BaseException] = {
            "wait": Interrupt, "send_exception": Exception,
            "send_base_exception": KeyboardInterrupt,
        }[where]  # fmt: skip
        with pytest.raises(expected):
            client._send(call, CallState(pacer=pacer, max_retries=0))
    if where == "wait":
        held.answered(throttled=False)
    assert pacer.in_flight == 0
    assert pacer.sent == 2


@pytest.mark.parametrize("where", ["wait", "send"])
def test_the_async_loop_settles_its_slot_when_cancelled(where: str) -> None:
    import asyncio

    import httpx

    from preo_client._call import CallState
    from preo_client.testing import FakePreo

    fake = FakePreo(auto_purchases=True)
    pacer = AdaptivePacer(max_rate=1, pacing="fixed")
    held, _ = take(pacer)
    if where == "send":
        held.answered(throttled=False)

    async def go() -> None:
        started = asyncio.Event()

        async def hang(request: httpx.Request) -> httpx.Response:
            started.set()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        async def sleep(seconds: float) -> None:
            started.set()
            await asyncio.Event().wait()

        http = httpx.AsyncClient(transport=httpx.MockTransport(hang))
        async with fake.async_client(http_client=http) as client:
            client._sleep = sleep
            call = prepare(client)
            task = asyncio.ensure_future(client._send(call, CallState(pacer=pacer)))
            await asyncio.wait_for(started.wait(), 10)
            assert pacer.in_flight == (2 if where == "wait" else 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    watchdog(lambda: asyncio.run(go()), 30)
    if where == "wait":
        held.answered(throttled=False)
    assert pacer.in_flight == 0
