"""One refund call without I/O: the fixed request, the one failure classifier, the size cap.

A call is built once (:func:`build_call`: every argument checked, the body bytes and the
idempotency key fixed) and every attempt sends exactly that. What an attempt's failure means —
never sent, refused, *may exist*, or final — is decided here and nowhere else
(:func:`classify_status`, :func:`classify_exception`); the sync and async clients only run the
network loop and ask this module what happened.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import re
import sys
import zlib
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import quote

import httpx

from ._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APITimeoutError,
    RefundValidationError,
    make_status_error,
    mark_outcome_unknown,
)
from ._extras import merged_body
from ._idempotency import check_idempotency_key, new_idempotency_key
from ._models import answer_ids, parse_refund
from ._policy import (
    RefundPlan,
    check_comment,
    check_pickup_point_id,
    check_purchase_id,
    plan_refund,
)
from ._retry import Failure, parse_retry_after
from ._urls import request_url

if TYPE_CHECKING:
    from ._models import Refund
    from ._observe import CallWatch
    from ._retry import SharedPause

__all__ = [
    "ACCEPTED_ENCODINGS",
    "MAX_RESPONSE_BYTES",
    "AsyncSender",
    "AttemptFailed",
    "BodyReader",
    "Call",
    "CallState",
    "Failure",
    "Pacer",
    "PacerSlot",
    "Sender",
    "build_call",
    "classify_exception",
    "classify_status",
    "exception_text",
    "finish",
    "hook_changes",
    "hook_status_answer",
    "reserve",
    "settle",
    "transport_failure",
]

MAX_RESPONSE_BYTES: Final = 1024 * 1024
_JSON: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


KEY_CONFLICTS: Final = frozenset({409, 422})


def classify_status(status: int, *, key_supplied: bool = False) -> Failure:
    """The meaning of a non-2xx ``status``: the single rule for answers.

    ``429`` and ``503`` are refusals (nothing processed); other ``3xx``/``4xx`` are final
    answers (redirects are never followed); every ``5xx`` but ``503`` — and any status outside
    the standard classes — may come after the refund was made. ``409`` (the key is in flight)
    and ``422`` (the key was used with another body) say that *a request with this key* may
    have made a refund: when the caller supplied the key (a retry of an earlier call, a bulk
    run's derived key), that refund may exist, so they are final but outcome-unknown.
    """
    if status in (429, 503):
        return Failure.REFUSED
    if 300 <= status < 500:
        return Failure.UNKNOWN if key_supplied and status in KEY_CONFLICTS else Failure.FINAL
    return Failure.UNKNOWN


# Failures raised before a byte of the request left this process. UnsupportedProtocol is a bad
# URL scheme. Everything else raised while sending (timeouts while writing or reading, resets,
# protocol errors, a closed event loop, a transport's own bug) may come after the request went out.
_NOT_SENT: Final = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
    httpx.ProxyError,  # the proxy refused the tunnel: the request never went through it
)


def classify_exception(exc: BaseException) -> Failure:
    """The meaning of an exception raised while sending: the single rule for transport faults."""
    return Failure.NOT_SENT if isinstance(exc, _NOT_SENT) else Failure.UNKNOWN


class AttemptFailed(Exception):
    """One attempt failed: the public error (already marked when the refund may exist) and
    what the failure means for retrying."""

    def __init__(self, error: APIError, failure: Failure, retry_after: float | None = None):
        super().__init__(error.message)
        self.error = error
        self.failure = failure
        self.retry_after = retry_after


class PacerSlot(Protocol):
    """One send slot of a :class:`Pacer`, settled exactly once (see ``_pacing.Slot``)."""

    def until_ready(self) -> float:
        """Seconds to wait before asking again; 0 = send now."""
        ...

    def answered(self, *, throttled: bool) -> None:
        """Settle: the attempt was answered (``throttled`` for a ``429``/``503``)."""
        ...

    def unanswered(self) -> None:
        """Settle: no answer came back (not sent, stopped, cancelled, an exception)."""
        ...

    def __enter__(self) -> PacerSlot: ...

    def __exit__(self, *exc_info: object) -> None:
        """Settle as unanswered unless settled inside the block."""
        ...


class Pacer(Protocol):
    """A send-rate limiter shared by the workers of a bulk run (sans I/O, thread-safe).

    The retry loop takes a slot with :meth:`reserve` before every attempt, in a ``with``
    block: it sleeps until the slot is ready, sends, and settles the slot with the answer;
    whatever else ends the block (a connect error, a stop, a cancellation, any exception)
    settles it as unanswered. Every slot is settled exactly once.
    """

    def reserve(self) -> PacerSlot:
        """Take one send slot."""
        ...

    @property
    def paces_throttling(self) -> bool:
        """True when the pacer itself slows the run down on a ``429`` (adaptive pacing): then
        a short ``Retry-After`` holds back only the item that got it, not the whole run."""
        ...


class _NoSlot:
    """The slot of a call without a pacer: always ready, settling does nothing."""

    def until_ready(self) -> float:
        return 0.0

    def answered(self, *, throttled: bool) -> None:
        pass

    def unanswered(self) -> None:
        pass

    def __enter__(self) -> _NoSlot:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


_NO_SLOT: Final = _NoSlot()


def reserve(pacer: Pacer | None) -> PacerSlot:
    """A slot of ``pacer`` for the next attempt (an always-ready one without a pacer)."""
    return _NO_SLOT if pacer is None else pacer.reserve()


def settle(slot: PacerSlot, failed: AttemptFailed | None) -> None:
    """Settle ``slot`` with an attempt's result: a success (None), a refusal (throttled), any
    other answer, or no answer at all (not sent)."""
    if failed is None:
        slot.answered(throttled=False)
    elif failed.failure is Failure.NOT_SENT:
        slot.unanswered()
    else:
        slot.answered(throttled=failed.failure is Failure.REFUSED)


@dataclasses.dataclass(slots=True)
class CallState:
    """What a retry loop shares with its caller: attempts made, and run-wide settings.

    A bulk run passes ``pause`` (one ``Retry-After`` pauses every worker), ``pacer`` (a shared
    send rate), ``retry_after_cap`` (the longest server-asked wait that is honoured rather than
    raised; default the client's 60 s) and ``max_retries`` (default the call's).
    """

    attempts: int = 0
    pause: SharedPause | None = None
    pacer: Pacer | None = None
    retry_after_cap: float | None = None
    max_retries: int | None = None
    unknown_seen: bool = False  # an attempt failed in a way that may have created the refund
    watch: CallWatch | None = None  # logs/traces this call (see _observe.watch_call)
    trace_parent: Any = None  # an OpenTelemetry context to start the call's span in (bulk)
    on_attempt: Callable[[AttemptRecord], None] | None = None  # the audit trail (a journal)


@dataclasses.dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One answered (or failed) attempt, as an audit trail keeps it.

    ``sent_at`` / ``answered_at`` are UTC wall-clock times; ``outcome`` is ``"Refund"`` or the
    error class name; ``failure`` what the failure meant (``not_sent``, ``refused``, ``final``,
    ``unknown``; None for a refund); ``status_code`` / ``request_id`` those of the answer, if
    one came; ``refund`` the refund it returned.
    """

    attempt: int
    sent_at: datetime.datetime
    answered_at: datetime.datetime
    outcome: str
    failure: str | None
    status_code: int | None
    request_id: str | None
    refund: Refund | None = None


def attempt_started(state: CallState) -> datetime.datetime | None:
    """The attempt's start time when an audit trail listens (else None: nothing to pay)."""
    return None if state.on_attempt is None else datetime.datetime.now(datetime.timezone.utc)


def attempt_ended(
    state: CallState,
    sent_at: datetime.datetime | None,
    *,
    refund: Refund | None = None,
    failed: AttemptFailed | None = None,
) -> None:
    """Tell the audit trail (``state.on_attempt``) how attempt ``state.attempts`` ended."""
    if state.on_attempt is None or sent_at is None:
        return
    error = failed.error if failed is not None else None
    status = getattr(error, "status_code", None)
    request_id = refund.request_id if refund is not None else getattr(error, "request_id", None)
    state.on_attempt(
        AttemptRecord(
            attempt=state.attempts,
            sent_at=sent_at,
            answered_at=datetime.datetime.now(datetime.timezone.utc),
            outcome="Refund" if error is None else type(error).__name__,
            failure=None if failed is None else failed.failure.name.lower(),
            status_code=status if isinstance(status, int) else None,
            request_id=request_id if isinstance(request_id, str) else None,
            refund=refund,
        )
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """One refund call, fixed before the first attempt: every attempt sends exactly this.

    ``deadline`` is the wall-clock bound of one attempt in seconds (headers and body);
    ``max_retries`` the call's retry budget.
    """

    request: httpx.Request
    plan: RefundPlan
    idempotency_key: str
    deadline: float
    max_retries: int
    key_supplied: bool = False  # the key came from the caller: it may have been used before
    purchase_id: str = ""
    url: httpx.URL | None = None  # the URL built (an event hook may replace request.url)


@functools.cache
def _generated() -> Any:
    """The generated endpoint and models, imported on the first call, not at `import`
    time (they bring attrs and dateutil; a process that never refunds never pays for them)."""
    from ._generated.api.purchases import create_purchase_refund
    from ._generated.models.refund_reason import RefundReason
    from ._generated.models.refund_request_create import RefundRequestCreate
    from ._generated.models.refund_scope import RefundScope
    from ._generated.types import UNSET

    return SimpleNamespace(
        endpoint=create_purchase_refund,
        reasons={member.value: member for member in RefundReason},  # a lookup, not an enum call
        RefundRequestCreate=RefundRequestCreate,
        scopes={member.value: member for member in RefundScope},
        UNSET=UNSET,
        template=_Template.of(create_purchase_refund._get_kwargs),
    )


# A purchase id the generated endpoint puts in its URL as it is (``quote`` changes nothing).
_UNRESERVED: Final = re.compile(r"[A-Za-z0-9\-._~]+")
_MARK: Final = "preoTemplateMark0"  # unreserved: quoted as itself


@dataclasses.dataclass(frozen=True, slots=True)
class _Template:
    """What the generated ``_get_kwargs`` builds, read once from the function itself: its
    method, its URL around the quoted purchase id, and its headers around the idempotency key.

    :meth:`kwargs` gives what ``_get_kwargs`` gives, without formatting the URL and quoting a
    plain id again on every call (``tests/test_call_template.py`` checks they agree)."""

    method: str
    before: str
    after: str
    headers: tuple[tuple[str, str | None], ...]  # None: the idempotency key

    @classmethod
    def of(cls, get_kwargs: Callable[..., dict[str, Any]]) -> _Template | None:
        """The template of ``get_kwargs``, or None when its shape is not the expected one."""
        try:
            made = get_kwargs(_MARK, body=_NoBody(), idempotency_key=_MARK)
            before, after = made["url"].split(_MARK)
            headers = tuple(
                (name.lower(), None if value == _MARK else value)
                for name, value in made["headers"].items()
            )
            if set(made) != {"method", "url", "json", "headers"} or made["json"] is not _NO_JSON:
                return None
            if sum(value is None for _, value in headers) != 1 or _MARK in before + after:
                return None
            if not all(isinstance(value, str | None) for _, value in headers):
                return None
            template = cls(made["method"].upper(), before, after, headers)
            probe = "a/b ä%?#.~"  # the id must be quoted as one path segment, as here
            if get_kwargs(probe, body=_NoBody(), idempotency_key=_MARK)["url"] != template.url(
                probe
            ):
                return None
            return template
        except Exception:  # a generator change: every call asks _get_kwargs again
            return None

    def url(self, purchase_id: str) -> str:
        segment = purchase_id if _UNRESERVED.fullmatch(purchase_id) else quote(purchase_id, safe="")
        return self.before + segment + self.after


_NO_JSON: Final = object()


class _NoBody:
    """Stands for the body while the template is read (its ``to_dict`` is a marker)."""

    def to_dict(self) -> object:
        return _NO_JSON


def build_call(
    *,
    base_url: str,
    headers: Mapping[str, str],
    purchase_id: object,
    reason: object,
    scope: object,
    amount: object,
    comment: object,
    pickup_point_id: object,
    idempotency_key: object,
    timeout: httpx.Timeout,
    deadline: float,
    max_retries: int,
    extra_body: Mapping[str, object] | None = None,
    extra_query: Mapping[str, str] | None = None,
) -> Call:
    """Check every argument (no I/O) and build the one request every attempt sends.

    ``extra_body`` / ``extra_query`` (checked by ``_extras``) are added to the body and the
    URL. Raises :class:`RefundValidationError` naming the field; nothing else.
    """
    purchase_id = check_purchase_id(purchase_id)
    plan = plan_refund(reason, scope, amount)  # type: ignore[arg-type]
    comment = check_comment(comment)
    pickup_point_id = check_pickup_point_id(pickup_point_id)
    key = (
        new_idempotency_key() if idempotency_key is None else check_idempotency_key(idempotency_key)
    )
    gen = _generated()
    unset = gen.UNSET
    body = gen.RefundRequestCreate(
        reason=gen.reasons[plan.reason],
        scope=gen.scopes[plan.scope],
        amount=unset if plan.amount is None else float(plan.amount),
        comment=unset if comment is None else comment,
        pickup_point_id=unset if pickup_point_id is None else pickup_point_id,
    )
    template: _Template | None = gen.template
    request_headers = httpx.Headers(headers)  # a copy (of a list, for the client's Headers)
    if template is not None:
        method, url, fields = template.method, template.url(purchase_id), body.to_dict()
        for name, value in template.headers:
            request_headers[name] = key if value is None else value
    else:  # pragma: no cover - a generated endpoint of another shape
        kwargs = gen.endpoint._get_kwargs(purchase_id, body=body, idempotency_key=key)
        method, url, fields = kwargs["method"].upper(), kwargs["url"], kwargs["json"]
        for name, value in kwargs["headers"].items():
            request_headers[name.lower()] = value
    content = _JSON.encode(merged_body(fields, extra_body)).encode()  # checked text
    try:
        target = request_url(base_url, url)
    except httpx.InvalidURL as exc:  # e.g. longer than a URL may be
        raise RefundValidationError(
            "purchase_id", f"does not fit in a URL with base_url {base_url!r} ({exc})"
        ) from None
    if extra_query:  # what httpx.Request(params=...) does, with its own field named
        try:
            target = httpx.URL(target, params=extra_query)
        except httpx.InvalidURL as exc:  # e.g. a query longer than a URL may hold
            raise RefundValidationError("extra_query", f"does not fit in a URL ({exc})") from None
    request = httpx.Request(
        method,
        target,
        content=content,
        headers=request_headers,
        extensions={"timeout": timeout.as_dict()},
    )
    return Call(
        request=request,
        plan=plan,
        idempotency_key=key,
        deadline=deadline,
        max_retries=max_retries,
        key_supplied=idempotency_key is not None,
        purchase_id=purchase_id,
        url=request.url,
    )


def transport_failure(exc: BaseException, call: Call) -> AttemptFailed:
    """An exception raised while sending (before any status line) as our error.

    "Never sent" only for an error the transport raised for this very request (httpx marks
    those with it): the same error from an event hook of an injected client (one that posts
    the answer to an audit service, say) proves nothing about the refund.
    """
    failure = classify_exception(exc)
    if failure is Failure.NOT_SENT and getattr(exc, "_request", None) is not call.request:
        failure = Failure.UNKNOWN
    error: APIConnectionError
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        error = APITimeoutError(
            f"Request timed out ({type(exc).__name__})",
            request=call.request,
            idempotency_key=call.idempotency_key,
        )
    else:
        detail = exception_text(exc) or type(exc).__name__
        error = APIConnectionError(
            f"Connection error ({type(exc).__name__}: {detail})",
            request=call.request,
            idempotency_key=call.idempotency_key,
        )
    if failure is Failure.UNKNOWN:
        error = mark_outcome_unknown(error)
    return AttemptFailed(error, failure)


def hook_changes(call: Call, authorization: str) -> AttemptFailed | None:
    """When a request event hook of an injected client changed the refund's URL, its
    ``Authorization`` or its ``Idempotency-Key`` (the hook runs inside ``send``, after the
    request was built): the failure that ends the call. The request may have gone out as
    changed, so the outcome is unknown, the key is the one sent, and it is never retried."""
    request = call.request
    changed = []
    if call.url is not None and request.url is not call.url and request.url != call.url:
        changed.append("its URL")
    if request.headers.get_list("authorization") != [authorization]:
        changed.append("its Authorization header")
    sent_keys = request.headers.get_list("idempotency-key")
    if sent_keys != [call.idempotency_key]:
        changed.append("its Idempotency-Key")
    if not changed:
        return None
    key = sent_keys[0] if len(sent_keys) == 1 else call.idempotency_key
    error = APIConnectionError(
        f"An event hook of the HTTP client changed the refund request ({', '.join(changed)}); "
        "it may have been sent as changed. Request hooks must leave a refund's URL, "
        "Authorization and Idempotency-Key as they are",
        request=request,
        idempotency_key=key,
    )
    return AttemptFailed(mark_outcome_unknown(error), Failure.FINAL)


def hook_status_answer(exc: BaseException, call: Call) -> httpx.Response | None:
    """The answer to ``call`` when a response hook of an injected client raised
    ``HTTPStatusError`` for it (``raise_for_status``): the status line is in, the status
    decides. None for any other exception, or a status error about another response."""
    if isinstance(exc, httpx.HTTPStatusError):
        response = exc.response
        if getattr(response, "_request", None) is call.request:
            return response
    return None


def deadline_failure(call: Call) -> AttemptFailed:
    """The attempt ran past its total time (sent: the refund may exist)."""
    error = APITimeoutError(
        f"Request timed out (no complete answer within {call.deadline:g} s)",
        request=call.request,
        idempotency_key=call.idempotency_key,
    )
    return AttemptFailed(mark_outcome_unknown(error), Failure.UNKNOWN)


def finish(
    response: httpx.Response,
    content: bytes,
    call: Call,
    *,
    body_problem: str | None = None,
) -> Refund:
    """Turn an answered attempt into a Refund, or raise :class:`AttemptFailed`.

    ``content`` is the body as read; ``body_problem`` says why it could not be read whole
    (too large, corrupt encoding, cut off): the status decides what the failure means.
    """
    status = response.status_code
    request_id, replayed = answer_ids(response.headers)
    if request_id is not None and (secret := _secret(call)) and secret in request_id:
        request_id = request_id.replace(secret, "***")  # a server that echoes the key as the id
    if 200 <= status < 300:
        if body_problem is not None:
            error: APIError = APIResponseValidationError(
                f"Unreadable refund response (status {status}, request id {request_id}): "
                f"{body_problem}",
                response=response,
                body="",
                request_id=request_id,
                idempotency_key=call.idempotency_key,
            )
            raise AttemptFailed(mark_outcome_unknown(error), Failure.UNKNOWN)
        try:
            return parse_refund(
                response,
                content,
                idempotency_key=call.idempotency_key,
                request_id=request_id,
                replayed=replayed,
            )
        except APIResponseValidationError as exc:
            raise AttemptFailed(mark_outcome_unknown(exc), Failure.UNKNOWN) from None
        except Exception as exc:  # a parser bug must still end as our error (I1)
            error = APIResponseValidationError(
                f"Unreadable refund response (status {status}, request id {request_id}): "
                f"{body_problem_of(exc)}",
                response=response,
                body=content.decode("utf-8", errors="replace"),
                request_id=request_id,
                idempotency_key=call.idempotency_key,
            )
            raise AttemptFailed(mark_outcome_unknown(error), Failure.UNKNOWN) from exc
    failure = classify_status(status, key_supplied=call.key_supplied)
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    error = make_status_error(
        response,
        content=content,
        request_id=request_id,
        idempotency_key=call.idempotency_key,
        retry_after=retry_after,
        note=f"body unreadable: {body_problem}" if body_problem else None,
        secret=_secret(call),
    )
    if failure is Failure.UNKNOWN:
        error = mark_outcome_unknown(error)
        if status in KEY_CONFLICTS:  # a final answer, not worth a retry of our own
            raise AttemptFailed(error, Failure.FINAL, retry_after)
    raise AttemptFailed(error, failure, retry_after)


def _secret(call: Call) -> str:
    """The API key this call sends (to scrub from anything a server echoes back)."""
    auth: str = call.request.headers.get("authorization", "")
    return auth[7:] if auth[:7].lower() == "bearer " else auth


def too_large_problem() -> str:
    return f"body larger than {MAX_RESPONSE_BYTES} bytes refused"


_MAX_LENGTH_DIGITS: Final = 18  # any longer number is far past the cap (and int() limits digits)


def content_length(value: str) -> int | None:
    """The size a ``Content-Length`` header value states, or None when it is malformed.

    ASCII digits only (``"²".isdigit()`` is true, ``int("²")`` raises), optional blanks around
    them, and a repeated header only with identical values (RFC 9110 8.6). A number too long
    to matter is read as larger than any body accepted, never handed to ``int()``.
    """
    values = {part.strip(" \t") for part in value.split(",")}
    if len(values) != 1:
        return None
    text = values.pop()
    if not text or not text.isascii() or not text.isdigit():
        return None
    return int(text) if len(text) <= _MAX_LENGTH_DIGITS else sys.maxsize


#: The ``Accept-Encoding`` every refund sends: what :class:`BodyReader` decodes, nothing more.
ACCEPTED_ENCODINGS: Final = "gzip, deflate"


class BodyReader:
    """Collects an answer's body from raw network chunks, decoded with a bounded decoder.

    Both the bytes on the wire and the decoded bytes are capped at
    :data:`MAX_RESPONSE_BYTES` (a 2 KB gzip bomb never inflates past the cap); one layer of
    ``gzip``/``deflate`` is decoded, anything else (stacked or unknown encodings) is refused.
    ``problem`` says why the body could not be read whole; the status still decides.
    """

    def __init__(self, response: httpx.Response) -> None:
        self.problem: str | None = None
        self._raw = 0
        self._chunks: list[bytes] = []
        self._size = 0
        self._decoder: Any = None
        length = response.headers.get("content-length")
        if length is not None:
            size = content_length(length)
            if size is None:
                self.problem = f"malformed Content-Length {length[:40]!r}"
            elif size > MAX_RESPONSE_BYTES:
                self.problem = too_large_problem()
        codings = [
            c.strip().lower()
            for c in response.headers.get_list("content-encoding", split_commas=True)
            if c.strip() and c.strip().lower() != "identity"
        ]
        if len(codings) > 1 or (codings and codings[0] not in ("gzip", "x-gzip", "deflate")):
            self.problem = f"unsupported Content-Encoding {', '.join(codings)[:80]!r}"
        elif codings:
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header

    @property
    def done(self) -> bool:
        return self.problem is not None

    def feed(self, raw: bytes) -> None:
        """Take one raw chunk; sets ``problem`` once the body can no longer be read."""
        if type(raw) is not bytes:
            if not isinstance(raw, bytes | bytearray | memoryview):  # a transport's bug
                self.problem = f"the transport gave a {type(raw).__name__} chunk, not bytes"
                return
            raw = bytes(raw)
        self._raw += len(raw)
        if self._raw > MAX_RESPONSE_BYTES:
            self.problem = too_large_problem()
            return
        if self._decoder is None:
            self._take(raw)
            return
        data = raw
        try:
            while data and not self.done:
                out = self._decoder.decompress(data, MAX_RESPONSE_BYTES - self._size + 1)
                self._take(out)
                data = self._decoder.unconsumed_tail
        except zlib.error as exc:
            self.problem = f"corrupt compressed body ({exc})"

    def _take(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_RESPONSE_BYTES:
            self.problem = too_large_problem()
        else:
            self._chunks.append(data)

    def fail(self, problem: str) -> None:
        self.problem = self.problem or problem

    def result(self) -> tuple[bytes, str | None]:
        """The decoded body and the problem, if any."""
        if self.problem is None and self._decoder is not None:
            try:
                self._take(self._decoder.flush())
            except zlib.error as exc:
                self.problem = f"corrupt compressed body ({exc})"
            if self.problem is None and not self._decoder.eof:
                self.problem = "compressed body cut short"
        return b"".join(self._chunks), self.problem


def already_read(response: httpx.Response) -> bytes | None:
    """The body when the transport handed it over already read (e.g. a mock), else None."""
    try:
        return response.content
    except httpx.ResponseNotRead:
        return None


def keep_body(response: httpx.Response, content: bytes, call: Call) -> None:
    """Store the decoded body on the response (``http_response.json()`` works), with the API
    key scrubbed out if the server echoed it."""
    secret = _secret(call).encode()
    if secret and secret in content:
        content = content.replace(secret, b"***")
    response._content = content


def body_problem_of(exc: BaseException) -> str:
    """A short description of why a body could not be read (never headers)."""
    return f"{type(exc).__name__}: {exception_text(exc) or 'no detail'}"


def exception_text(exc: BaseException, limit: int = 200) -> str:
    """``str(exc)`` of a foreign exception (a transport's, a library's), at most ``limit``
    characters, never raising: a ``__str__`` that fails gives the class name instead."""
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not replace the fault it describes
        return f"{type(exc).__name__} (its message could not be read)"
    return text[:limit]


class _Preparer(Protocol):
    def _prepare(
        self,
        purchase_id: str,
        *,
        reason: str,
        scope: str | None,
        amount: object,
        comment: str | None,
        pickup_point_id: str | None,
        idempotency_key: str | None,
        timeout: object,
    ) -> Call: ...


class Sender(_Preparer, Protocol):
    """What a bulk run needs of a sync client: build a call (no I/O), then send it."""

    def _send(self, call: Call, state: CallState | None = None) -> Refund: ...


class AsyncSender(_Preparer, Protocol):
    """The async twin of :class:`Sender`."""

    async def _send(self, call: Call, state: CallState | None = None) -> Refund: ...
