"""The one standing table of a bulk item: its standing and the answer it gets -> what follows. Pure.

An item's *standing* is what is known about its own key: ``new`` (no key committed), ``committed``
(its key is in the journal, nothing sent yet), ``may_have_landed`` (a request with its key may have
made a refund: in this run or an earlier one), ``done`` (a 2xx for its key, or covered by its
transaction's refund) and ``nothing`` (every request with its key was refused: surely no refund).

The rule the table holds: **once an item's key may have landed, only a 2xx for that key resolves
it.** Any other answer to a resend (``429`` after retries, ``400``, ``404``, ``409``, ``422``, any
5xx, a connection failure, a stop) reports it outcome-unknown with its key, never a class that
means "no refund", and no other row of its transaction group may take over. (A carrier
refused for good hands over; its reported outcome is held by its group until the group resolves:
covered by a takeover's refund, see ``_bulk_groups``.)
"""

from __future__ import annotations

import enum
from typing import Final, NamedTuple

__all__ = [
    "TABLE",
    "Answer",
    "Reported",
    "Standing",
    "Verdict",
    "answer_for_status",
    "commit",
    "verdict",
]


class Standing(enum.Enum):
    """What is known about an item's own key."""

    NEW = "new"
    COMMITTED = "committed"
    MAY_HAVE_LANDED = "may_have_landed"
    DONE = "done"
    NOTHING = "nothing"


class Answer(enum.Enum):
    """The class of what an item's request got (after the client's own retries)."""

    OK = "2xx"
    RATE_LIMITED = "429"
    BAD_REQUEST = "400"
    AUTH = "401/403"
    NOT_FOUND = "404"
    IN_FLIGHT = "409"
    KEY_REUSED = "422"
    OTHER_4XX = "other 4xx"
    SERVER_ERROR = "5xx"
    NOT_SENT = "not sent"  # a connection that never carried the request
    LOST = "lost"  # the answer is unknown: timeout or reset after sending, unreadable 2xx, a bug
    INVALID = "invalid"  # refused by the client's own checks, before any I/O
    STOPPED = "stopped"  # the run stopped before an answer came


class Reported(enum.Enum):
    """What the run reports for the item."""

    REFUNDED = "refunded"  # a 2xx: the refund exists (ok)
    NO_REFUND = "no refund"  # surely nothing was made: safe to fix and send again
    UNKNOWN = "outcome unknown"  # a refund may exist: resume with the same journal, never resend
    IN_FLIGHT = "in flight"  # the run stopped: no outcome handed out, a resume finishes it


class Verdict(NamedTuple):
    """The table's cell: the new standing, the reported outcome, may another row take over."""

    standing: Standing
    reported: Reported
    takeover: bool


_REFUSALS: Final = frozenset(
    {
        Answer.RATE_LIMITED,
        Answer.BAD_REQUEST,
        Answer.AUTH,
        Answer.NOT_FOUND,
        Answer.OTHER_4XX,
        Answer.SERVER_ERROR,
        Answer.NOT_SENT,
        Answer.INVALID,
    }
)
# Not a refusal: a 409 says a request with this key is in flight and a 422 that this key was
# used with another body (a request with the key exists: it may have landed, whatever the item's
# standing), and a lost answer may hide a refund.


def _cell(standing: Standing, answer: Answer) -> Verdict:
    if standing is Standing.DONE:  # never sent again: nothing can change it
        return Verdict(Standing.DONE, Reported.REFUNDED, False)
    if answer is Answer.OK:
        return Verdict(Standing.DONE, Reported.REFUNDED, False)
    if answer is Answer.STOPPED:
        if standing is Standing.NEW:
            return Verdict(Standing.NEW, Reported.IN_FLIGHT, True)
        if standing is Standing.NOTHING:
            return Verdict(Standing.NOTHING, Reported.IN_FLIGHT, True)
        # a committed key may have been sent by an attempt before the stop
        return Verdict(Standing.MAY_HAVE_LANDED, Reported.IN_FLIGHT, False)
    if standing is Standing.MAY_HAVE_LANDED or answer not in _REFUSALS:
        return Verdict(Standing.MAY_HAVE_LANDED, Reported.UNKNOWN, False)
    return Verdict(Standing.NOTHING, Reported.NO_REFUND, True)


TABLE: Final[dict[tuple[Standing, Answer], Verdict]] = {
    (standing, answer): _cell(standing, answer) for standing in Standing for answer in Answer
}


def verdict(standing: Standing, answer: Answer) -> Verdict:
    """The table's cell for ``standing`` and ``answer``."""
    return TABLE[standing, answer]


def commit(standing: Standing) -> Standing:
    """The standing once the item's key is committed to be sent (a journal row before a send)."""
    return Standing.MAY_HAVE_LANDED if standing is Standing.MAY_HAVE_LANDED else Standing.COMMITTED


def answer_for_status(status: int | None) -> Answer:
    """The answer class of an error ``status`` the client reported as surely not applied
    (None: no HTTP answer, the request never left)."""
    if status is None:
        return Answer.NOT_SENT
    classes = {
        400: Answer.BAD_REQUEST,
        401: Answer.AUTH,
        403: Answer.AUTH,
        404: Answer.NOT_FOUND,
        409: Answer.IN_FLIGHT,
        422: Answer.KEY_REUSED,
        429: Answer.RATE_LIMITED,
    }
    if status in classes:
        return classes[status]
    return Answer.SERVER_ERROR if status >= 500 else Answer.OTHER_4XX
