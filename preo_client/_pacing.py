"""Send pacing for bulk runs: a thread-safe token bucket whose rate follows CUBIC on throttles.

Pure logic: no I/O, no asyncio, no httpx; time comes from an injectable ``clock``. Modelled on
botocore's adaptive retry mode (``retries/adaptive.py``, ``throttling.py``, ``bucket.py``): the
bucket is not enforced until the first throttled answer (``429``/``503``); from then on its fill
rate is cut on a throttle and probes back up along a CUBIC curve, within ``max_rate`` and a
floor, and at most twice the rate the run actually gets accepted (workers that cannot use a
higher rate do not inflate it). Differences from botocore, for runs whose every ``429`` pauses
all workers (so each one costs a whole ``Retry-After``):

- One cut per throttle *event*: answers to slots booked before a cut (the "grace") do not cut
  again. Their accepted share times the rate they were booked at is what the server takes when
  saturated; when that is lower than the peak, the peak is lowered to it.
- The peak a cut starts from is the accepted rate measured since the last pause (when measured
  over at least ``_MIN_EPOCH``), and such a well-measured cut is gentler (``_BETA_NEAR``).
- Slow start, like TCP: until the first throttle, at most a window of slots is in flight; it
  starts at ``_INITIAL_WINDOW`` and grows by one per accepted answer (it doubles per answered
  window), so a wide run's first wave does not meet the server's limit all at once. With
  round trips shorter than ``_SS_PERIOD`` only the window's share of the period is in flight,
  so the send rate doubles per period, not per round trip: when the server's burst runs out,
  what is in flight in the round trip before the first ``429`` comes back (and is refused
  too) is the rate's excess over the limit times a short round trip, not a whole window.
- A cut leaves the server's bucket empty: the first slot after it waits one interval at the
  new rate (else it is refused too, and cuts again).

Every slot :meth:`AdaptivePacer.reserve` hands out is a :class:`Slot`, settled exactly once
(answered, throttled, or never answered: a connect error, a stop, a cancellation, any
exception): use it as a context manager, which settles it as unanswered unless it was settled
inside; a second settlement raises :class:`SlotSettledTwice`.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable
from typing import Literal

from ._exceptions import RefundValidationError, shown

__all__ = ["MIN_RATE", "PACINGS", "AdaptivePacer", "Slot", "SlotSettledTwice"]

PACINGS: tuple[str, ...] = ("adaptive", "fixed")
MIN_RATE = 0.5  # req/s: the adaptive rate never goes below this (or max_rate, if lower)
_BETA = 0.7  # multiplicative decrease after a grace estimate (and the floor of a long epoch's)
_SCALE = 0.1  # CUBIC scale constant (botocore: 0.4; lower probes above the last peak more gently)
_BETA_FIRST = 0.6  # the decrease at the first throttle, from what slow start got accepted
_BETA_SHORT = 0.8  # the decrease on a throttle soon after a cut (the rate was just above it)
_BETA_NEAR = 0.9  # the decrease when the accepted rate was measured over a long epoch
_MIN_GRACE_ANSWERS = 8  # fewer answers after a cut say too little about the server's rate
_MIN_ELAPSED = 0.01  # seconds: the shortest time an accepted count is spread over
_MIN_EPOCH = 1.0  # seconds: an epoch shorter than this measures the server's burst, not its rate
_INITIAL_WINDOW = 4  # slow start: slots in flight before the first answer
_SS_PERIOD = 0.1  # seconds: slow start's send rate doubles at most once per this
_FIRST_RECOVERY = 2.0  # seconds: at most this after the first cut, the rate is back at its peak
_MIN_POLL = 0.001  # seconds: the shortest wait of a slot queued behind the window
_MAX_POLL = 0.1  # seconds: the longest (then it asks again)
_PATIENCE = 1.0  # seconds (or 4 round trips, if longer): then a queued slot goes anyway


def _positive(name: str, value: object, allowed: str) -> float:
    """``value`` as a finite float > 0, or a RefundValidationError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RefundValidationError(name, f"must be {allowed}, got {shown(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int past a float's range
        number = math.inf
    if not math.isfinite(number) or number <= 0:
        raise RefundValidationError(name, f"must be {allowed}, got {shown(value)}")
    return number


_QUEUED, _GRANTED, _SETTLED = "queued", "granted", "settled"


class SlotSettledTwice(RuntimeError):
    """A pacer slot was settled again, or answered before it was ready: a bug in the loop
    that holds it (each slot is settled exactly once, after :meth:`Slot.until_ready` says 0)."""


class Slot:
    """One send slot handed out by :meth:`AdaptivePacer.reserve`.

    Wait the seconds :meth:`until_ready` returns and ask again until it returns 0, send, then
    settle the slot exactly once: :meth:`answered` (``throttled`` for a ``429``/``503``) or
    :meth:`unanswered` (nothing came back: not sent, a stop, a cancellation, any exception).
    As a context manager it is settled as unanswered on exit unless settled inside.
    """

    __slots__ = ("_due", "_gen", "_pacer", "_queued_at", "_rate", "_state", "_told")

    def __init__(self, pacer: AdaptivePacer) -> None:
        self._pacer = pacer
        self._state = _QUEUED
        self._gen = 0  # the pacer's cut count when the slot was booked
        self._due = 0.0  # when the slot may be used (its round trip starts)
        self._told = 0.0  # the time until_ready has told the holder to wait for
        self._rate: float | None = None  # the bucket's rate when it was booked
        self._queued_at: float | None = None  # when it first found the window full

    @property
    def settled(self) -> bool:
        """True once :meth:`answered` or :meth:`unanswered` was called."""
        return self._state == _SETTLED

    def until_ready(self) -> float:
        """Seconds to wait before asking again; 0 = send now."""
        return self._pacer._until_ready(self)

    def answered(self, *, throttled: bool) -> None:
        """Settle: the attempt was answered (``throttled`` for a ``429``/``503``)."""
        self._pacer._settle(self, answered=True, throttled=throttled)

    def unanswered(self) -> None:
        """Settle: no answer came back (not sent, stopped, cancelled, an exception)."""
        self._pacer._settle(self, answered=False, throttled=False)

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._state != _SETTLED:
            self.unanswered()

    def __repr__(self) -> str:
        return f"<Slot {self._state}>"


class AdaptivePacer:
    """A send-rate limiter shared by every worker of one bulk run (implements ``Pacer``).

    ``pacing="adaptive"`` (default): no limit until the first throttled answer, then a token
    bucket (``burst`` tokens, default 1) whose fill rate follows CUBIC, never above ``max_rate``
    and never below :data:`MIN_RATE`. ``pacing="fixed"``: a plain token bucket at ``max_rate``
    (no pacing at all when ``max_rate`` is None). :meth:`reserve` books a future slot, so
    concurrent callers get staggered waits. Adaptive without ``max_rate`` starts slowly: at
    most a window of slots in flight, doubling per answered window (or per 100 ms, if round
    trips are shorter), until the first throttle.
    """

    def __init__(
        self,
        *,
        max_rate: float | None = None,
        pacing: Literal["adaptive", "fixed"] = "adaptive",
        clock: Callable[[], float] = time.monotonic,
        burst: float = 1.0,
    ) -> None:
        self._max_rate = (
            None
            if max_rate is None
            else _positive(
                "max_rate", max_rate, "a finite number of requests per second > 0, or None"
            )
        )
        if not isinstance(pacing, str) or pacing not in PACINGS:
            raise RefundValidationError(
                "pacing", f"must be one of {', '.join(map(repr, PACINGS))}, got {pacing!r}"
            )
        checked_burst = _positive("burst", burst, "a finite number >= 1")
        if checked_burst < 1:
            raise RefundValidationError("burst", f"must be a finite number >= 1, got {burst!r}")
        self._adaptive = pacing == "adaptive"
        self._clock = clock
        self._burst = checked_burst
        # Never below MIN_RATE, unless max_rate itself is lower.
        self._floor = min(MIN_RATE, self._max_rate) if self._max_rate is not None else MIN_RATE
        self._lock = threading.Lock()
        # The bucket: ``_rate`` None = not enforced. ``_next`` is the earliest time of the next
        # slot booked without credit; ``_credit`` is the burst saved up while the bucket idled.
        # Unlimited until the first throttle, unless max_rate caps it from the first request.
        self._rate: float | None = self._max_rate
        self._next = -math.inf
        self._credit = 0.0
        # Stats.
        self._sent = 0
        self._answered = 0
        self._throttled = 0
        # Slots: ``_open`` granted and not settled; ``_gen`` counts cuts; ``_open_old`` is the
        # open slots granted before the last cut (the "grace": their answers do not cut again).
        self._open = 0
        self._slots: set[Slot] = set()
        self._gen = 0
        self._open_old = 0
        # Slow start (adaptive, no max_rate): the most slots in flight; None once it ended.
        self._window: float | None = (
            float(_INITIAL_WINDOW) if self._adaptive and self._max_rate is None else None
        )
        self._srtt: float | None = None  # smoothed round trip of answered slots
        self._first_grant: float | None = None
        # Controller state (adaptive only). An epoch runs from the first slot after a cut to
        # the next cut; the answers accepted in it measure what the server takes.
        self._w_max = 0.0
        self._k = 0.0
        self._scale = _SCALE
        self._cut_at = 0.0
        self._epoch_start: float | None = None
        self._epoch_ok = 0
        self._recent: collections.deque[float] = collections.deque()  # successes, last second
        # The answers to slots booked before the last cut, at the rate then in force: while the
        # server is saturated, (their accepted share) x (that rate) is the rate it takes.
        self._grace_rate: float | None = None
        self._grace_answers = 0
        self._grace_ok = 0

    # -- the Pacer protocol ---------------------------------------------------------------

    @property
    def paces_throttling(self) -> bool:
        """True in adaptive mode: a ``429`` cuts the shared rate (see ``Pacer``)."""
        return self._adaptive

    def reserve(self) -> Slot:
        """Take one send slot: wait what its :meth:`Slot.until_ready` says, then settle it."""
        slot = Slot(self)
        with self._lock:
            self._grant(slot, self._clock())
        return slot

    # -- stats ----------------------------------------------------------------------------

    @property
    def rate(self) -> float | None:
        """The current fill rate in requests per second; None while unlimited."""
        with self._lock:
            return self._rate

    @property
    def sent(self) -> int:
        """Slots handed out (attempts started)."""
        with self._lock:
            return self._sent

    @property
    def throttled(self) -> int:
        """Answers that were throttled (``429``/``503``)."""
        with self._lock:
            return self._throttled

    @property
    def throttled_share(self) -> float:
        """Throttled answers / answers (0.0 before any answer)."""
        with self._lock:
            return self._throttled / self._answered if self._answered else 0.0

    @property
    def in_flight(self) -> int:
        """Slots granted and not yet settled (0 once every worker is done: none leaked)."""
        with self._lock:
            return self._open

    @property
    def window(self) -> float | None:
        """The slow-start window (slots in flight); None once slow start has ended."""
        with self._lock:
            return self._window

    def __repr__(self) -> str:
        rate = "unlimited" if self._rate is None else f"{self._rate:.1f}/s"
        return f"<AdaptivePacer {rate} sent={self._sent} throttled={self._throttled}>"

    # -- internals (called with the lock held) -------------------------------------------

    def _grant(self, slot: Slot, now: float) -> bool:
        """Grant a queued slot unless the slow-start window is full; book its time."""
        if self._window is not None and self._open >= self._in_flight_cap(self._window):
            # Full: wait for an answer, but not forever (answers that never come back, e.g.
            # a holder that vanished, must not stall the run: slow start then ends).
            if slot._queued_at is None:
                slot._queued_at = now
            patience = max(_PATIENCE, 4 * (self._srtt or 0.0))
            if now - slot._queued_at < patience:
                return False
            self._window = None
        slot._state = _GRANTED
        slot._gen = self._gen
        self._open += 1
        self._slots.add(slot)
        self._sent += 1
        if self._first_grant is None:
            self._first_grant = now
        slot._told = now
        slot._due = now + self._book(now)
        slot._rate = self._rate
        return True

    def _in_flight_cap(self, window: float) -> float:
        """Slow start's cap on slots in flight: the window, or for round trips shorter than
        _SS_PERIOD its share of one (so the send rate grows x2 per period, not per trip)."""
        if self._srtt is None or self._srtt >= _SS_PERIOD:
            return window
        return window * self._srtt / _SS_PERIOD

    def _rebook(self, now: float) -> None:
        """After a cut: the slots booked but not yet due are booked again at the new rate.
        They are sent after the cut, so they count as such (their throttles cut again)."""
        waiting = sorted((s for s in self._slots if s._due > now), key=lambda s: s._due)
        # A cut says the server's bucket is empty: the next slot waits for a token (the
        # first slot waiting keeps its time if later; the others follow at the new rate).
        if self._rate is not None:
            self._next = max(now + 1 / self._rate, waiting[0]._due if waiting else self._next)
            self._credit = 0.0
        for slot in waiting:
            slot._due = now + self._book(now)
            slot._rate = self._rate
            slot._gen = self._gen
        self._open_old = self._open - len(waiting)

    def _book(self, now: float) -> float:
        """The seconds until the next slot of the bucket (0 while unlimited)."""
        if self._rate is None and self._epoch_start is None and self._window is None:
            self._epoch_start = now  # unlimited: the epoch runs from the first slot
        # (In slow start it runs from the first answer: the first round trip, connections
        # being set up, says nothing about the server's rate.)
        rate = self._rate
        if rate is None:
            return 0.0
        if self._next <= now:  # idle since the last booked slot: save up burst credit
            self._credit = min(self._burst - 1, self._credit + (now - self._next) * rate)
            self._next = now + 1 / rate
            return 0.0
        if self._credit >= 1:
            self._credit -= 1
            return 0.0
        slot = self._next
        self._next = slot + 1 / rate
        return slot - now

    def _until_ready(self, slot: Slot) -> float:
        with self._lock:
            if slot._state == _SETTLED:
                raise SlotSettledTwice("this pacer slot was already settled")
            now = self._clock()
            if slot._state == _QUEUED and not self._grant(slot, now):
                return self._poll(now)
            # Each stretch of the wait is handed out once (a virtual sleep moves no clock).
            wait = max(slot._due - slot._told, 0.0)
            slot._told = max(slot._told, slot._due)
            return wait

    def _poll(self, now: float) -> float:
        """How long a slot queued behind the window waits before asking again."""
        # The window opens when the oldest slot in flight is answered, about a round trip
        # after it was sent; before the first answer, a guess that grows with the wait.
        start = self._first_grant if self._first_grant is not None else now
        if self._srtt is not None and self._slots:
            guess = min(s._due for s in self._slots) + self._srtt - now
        else:
            guess = (now - start) / 2
        return min(max(guess, _MIN_POLL), _MAX_POLL)

    def _settle(self, slot: Slot, *, answered: bool, throttled: bool) -> None:
        with self._lock:
            if slot._state == _SETTLED:
                raise SlotSettledTwice("this pacer slot was already settled")
            if answered and slot._state != _GRANTED:
                raise SlotSettledTwice("a pacer slot was answered before it was ready")
            granted = slot._state == _GRANTED
            slot._state = _SETTLED
            if not granted:  # given up while queued: it never counted
                return
            now = self._clock()
            self._open -= 1
            self._slots.discard(slot)
            old = slot._gen < self._gen  # granted before the last cut
            if old:
                self._open_old -= 1
            if answered:
                self._observe(slot, now, throttled=throttled, in_grace=old)
            if old and self._open_old == 0 and self._adaptive:
                self._after_grace(now)

    def _observe(self, slot: Slot, now: float, *, throttled: bool, in_grace: bool) -> None:
        """Record an answered attempt: ``throttled`` for a ``429``/``503``."""
        self._answered += 1
        self._throttled += throttled
        sample = max(now - slot._due, 0.0)
        self._srtt = sample if self._srtt is None else 0.875 * self._srtt + 0.125 * sample
        if not self._adaptive:
            return
        if in_grace and slot._gen == self._gen - 1 and slot._rate == self._grace_rate:
            # Only slots booked at the rate the last cut left behind say what the server
            # takes at that rate (older ones, e.g. slow start's overshoot, would drag it down).
            self._grace_answers += 1
            self._grace_ok += not throttled
        if throttled:
            if not in_grace:
                self._on_throttle(now)
            return
        if not in_grace:  # an answer to a slot booked since the last cut
            if self._window is not None:
                self._window += 1  # slow start: +1 per accepted answer, x2 per window
            self._recent.append(now)
            while self._recent and self._recent[0] < now - _MIN_EPOCH:
                self._recent.popleft()
            if self._epoch_start is None:  # the first success after a cut (and pause)
                self._epoch_start = now
            else:
                self._epoch_ok += 1
            if self._rate is not None:
                self._set_rate(self._probe(now))

    def _on_throttle(self, now: float) -> None:
        start = self._epoch_start if self._epoch_start is not None else now
        elapsed = now - start
        rate_before = self._rate
        if self._rate is None:  # first throttle: start below what the server took so far
            # (A rough peak either way: the server's burst inflates it, slow start's climb
            # deflates it. So the cut is deep, and the curve regains it within
            # _FIRST_RECOVERY instead of lingering below it.)
            self._w_max = max(self._epoch_ok, 1) / max(elapsed, _MIN_ELAPSED)
            beta = _BETA_FIRST
            self._next = now
            self._credit = 0.0
        elif elapsed >= _MIN_EPOCH:  # long enough for the accepted rate to mean something
            # What the server accepted over the last second (the epoch's average would
            # include the climb towards the limit, and settle below it).
            recent = sum(1 for t in self._recent if t >= now - _MIN_EPOCH) / _MIN_EPOCH
            self._w_max = max(min(self._rate, recent), self._rate * _BETA)
            beta = _BETA_NEAR
        else:  # soon after a cut: the rate it left was (a little) too high
            self._w_max = self._rate
            beta = _BETA_SHORT
        self._w_max = max(self._w_max, self._floor)
        self._scale = _SCALE
        self._k = (self._w_max * (1 - beta) / _SCALE) ** (1 / 3)
        if rate_before is None and self._k > _FIRST_RECOVERY:
            self._k = _FIRST_RECOVERY  # a steeper curve through the same two points
            self._scale = self._w_max * (1 - beta) / self._k**3
        self._set_rate(self._w_max * beta)
        self._cut_at = now
        self._window = None  # slow start ends at the first throttle
        self._gen += 1  # every slot in flight now was sent before this cut
        self._rebook(now)
        self._grace_rate = rate_before
        self._grace_answers = self._grace_ok = 0
        self._epoch_start = None
        self._epoch_ok = 0

    def _after_grace(self, now: float) -> None:
        if self._grace_rate is None or self._grace_answers < _MIN_GRACE_ANSWERS:
            return
        # (ok + 1) / (answers + 1): no accepted answer among a few says "less", not "zero".
        share = (self._grace_ok + 1) / (self._grace_answers + 1)
        estimate = max(self._grace_rate * share, self._floor)
        if estimate < self._w_max:
            self._w_max = estimate
            self._k = (estimate * (1 - _BETA) / _SCALE) ** (1 / 3)
            self._scale = _SCALE
            if self._rate is not None and estimate * _BETA < self._rate:
                self._set_rate(estimate * _BETA)
                # Slots booked since the cut, at the rate now left behind, may be throttled
                # too: expected, so they do not cut again (nor estimate: their rate is mixed).
                self._gen += 1
                self._rebook(now)
                self._grace_rate = None
                self._epoch_start = None
                self._epoch_ok = 0

    def _probe(self, now: float) -> float:
        """The rate ``now``, on the CUBIC curve through the last cut."""
        rate = self._scale * (now - self._cut_at - self._k) ** 3 + self._w_max
        if self._epoch_start is not None and now > self._epoch_start:
            # Like botocore: no more than twice what the run achieves (its workers may be the
            # bottleneck), so a long quiet spell does not build up a rate nobody tested.
            achieved = self._epoch_ok / (now - self._epoch_start)
            rate = min(rate, max(2 * achieved, self._w_max))
        return rate

    def _set_rate(self, rate: float) -> None:
        if self._max_rate is not None:
            rate = min(rate, self._max_rate)
        self._rate = max(rate, self._floor)
