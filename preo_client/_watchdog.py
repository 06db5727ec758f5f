"""The async attempts' total-time bound: one timer per event loop, not one per attempt.

Every attempt of :class:`~preo_client.AsyncPreoClient` must end within its deadline, body
included, whatever the transport. A timer per attempt (``loop.call_later`` and its
``cancel``) costs more than the rest of the retry loop together. Here each attempt registers
its task and deadline (a set insert, and a delete when it ends) and one timer per event
loop, set for the earliest deadline it knows, cancels every task still registered past its
deadline when it fires (and again every 0.1 s until the attempt ends, for a transport that
swallows a cancellation), then sets itself for the next one. Attempts mostly share one
duration, so their deadlines come in order and the timer is moved only when a shorter one
arrives.

No asyncio import: the loop, its timer handles and the tasks are only called
(``time``/``call_at``, ``cancel``), so tests can drive it with a fake loop and clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final, Protocol

__all__ = ["Watch", "Watchdog"]


class _Handle(Protocol):
    def cancel(self) -> object: ...


class _Loop(Protocol):
    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], object], /) -> _Handle: ...


class _Task(Protocol):
    def cancel(self) -> object: ...


#: Seconds between cancellations of an expired attempt whose transport ignored the last one.
AGAIN: Final = 0.1


class Watch:
    """One attempt under watch: ``expired`` is set (and its task cancelled) once the deadline
    passes while it is still registered; ``cancels`` counts the cancellations made (again every
    :data:`AGAIN` seconds until the attempt ends: a transport may swallow one)."""

    __slots__ = ("cancels", "deadline", "expired", "task")

    def __init__(self, task: _Task, deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.expired = False
        self.cancels = 0


class Watchdog:
    """Cancels each watched task still running at its deadline (see the module docstring)."""

    __slots__ = ("_loop", "_timer", "_timer_at", "_watches")

    def __init__(self, loop: _Loop) -> None:
        self._loop = loop
        self._watches: set[Watch] = set()
        self._timer: _Handle | None = None
        self._timer_at = math.inf

    def watch(self, task: _Task, seconds: float) -> Watch:
        """Watch ``task`` for ``seconds`` from now; call :meth:`done` when its attempt ends."""
        watch = Watch(task, self._loop.time() + seconds)
        self._watches.add(watch)
        if watch.deadline < self._timer_at:
            self._set_timer(watch.deadline)
        return watch

    def done(self, watch: Watch) -> None:
        """The attempt ended (any way): its task is no longer cancelled for time (the caller
        takes back ``watch.cancels`` cancellations)."""
        self._watches.discard(watch)

    @property
    def watched(self) -> int:
        """Attempts registered and not yet done (expired ones included)."""
        return len(self._watches)

    def _set_timer(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = self._loop.time()
        expired = [w for w in self._watches if w.deadline <= now]
        for watch in expired:  # still watched: cancelled again if its transport ignores this
            watch.expired = True
            watch.cancels += 1
            watch.deadline = now + AGAIN
        for watch in expired:  # (cancelling cannot run code that registers: it only marks)
            watch.task.cancel()
        if self._watches:
            self._set_timer(min(w.deadline for w in self._watches))
