"""The exception hierarchy, the one status table, and the outcome-unknown variants.

Our exception hierarchy::

    PreoError
    ├── RefundValidationError (also ValueError)  bad argument, raised before any I/O
    ├── ConfigurationError (also ValueError)     a client setting that cannot work
    ├── RefundOutcomeUnknownError                the refund may exist: .idempotency_key
    └── APIError
        ├── APIStatusError                       the server answered with an error status
        │   ├── BadRequestError                  400, .field_errors
        │   ├── AuthenticationError              401
        │   ├── PermissionDeniedError            403
        │   ├── NotFoundError                    404
        │   ├── ConflictError                    409
        │   ├── UnprocessableEntityError         422
        │   ├── RateLimitError                   429, .retry_after
        │   └── InternalServerError              >= 500, .retry_after
        ├── APIConnectionError                   no usable answer: connect, reset, protocol
        │   └── APITimeoutError
        └── APIResponseValidationError           a 2xx answer that is not a readable refund

Every ``APIError`` class has an outcome-unknown twin that is also a
:class:`RefundOutcomeUnknownError` (``InternalServerOutcomeUnknownError``,
``APITimeoutOutcomeUnknownError``, ...): a real, importable, picklable class, raised when the
refund may exist. ``except InternalServerError`` and ``except RefundOutcomeUnknownError`` both
catch it.

No message ever carries request headers or the API key: texts are built from the status, the
request id and the (truncated) body only; a pickled error carries its request and response with
the ``Authorization`` header removed. This module imports no HTTP library at run time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

if TYPE_CHECKING:
    import httpx

__all__ = [
    "OUTCOME_UNKNOWN_VARIANTS",
    "APIConnectionError",
    "APIConnectionOutcomeUnknownError",
    "APIError",
    "APIResponseValidationError",
    "APIResponseValidationOutcomeUnknownError",
    "APIStatusError",
    "APIStatusOutcomeUnknownError",
    "APITimeoutError",
    "APITimeoutOutcomeUnknownError",
    "AuthenticationError",
    "AuthenticationOutcomeUnknownError",
    "BadRequestError",
    "BadRequestOutcomeUnknownError",
    "ConfigurationError",
    "ConflictError",
    "ConflictOutcomeUnknownError",
    "InternalServerError",
    "InternalServerOutcomeUnknownError",
    "NotFoundError",
    "NotFoundOutcomeUnknownError",
    "PermissionDeniedError",
    "PermissionDeniedOutcomeUnknownError",
    "PreoError",
    "RateLimitError",
    "RateLimitOutcomeUnknownError",
    "RefundOutcomeUnknownError",
    "RefundValidationError",
    "UnprocessableEntityError",
    "UnprocessableEntityOutcomeUnknownError",
    "error_class_for_status",
    "make_status_error",
    "mark_outcome_unknown",
    "retry_hint",
]

BODY_TEXT_LIMIT: Final = 2048
_E = TypeVar("_E", bound="APIError")
_V = TypeVar("_V")


def truncate(text: str, limit: int = BODY_TEXT_LIMIT) -> str:
    """Cut ``text`` to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def _rebuild(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    """Unpickle an error without calling its keyword-only ``__init__``."""
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


_CREDENTIAL_HEADERS: Final = ("authorization", "proxy-authorization")


def _credentials(request: httpx.Request | None) -> tuple[str, ...]:
    """The secrets ``request`` carried: each credential header's value and its token (the API
    key after ``Bearer``), longest first, so a body or header that echoes one can be scrubbed."""
    if request is None:
        return ()
    found: set[str] = set()
    for name, value in request.headers.multi_items():
        if name.lower() in _CREDENTIAL_HEADERS:
            found.add(value.strip())
            found.add(value.partition(" ")[2].strip())
    found.discard("")
    return tuple(sorted(found, key=len, reverse=True))


def _forms(secrets: tuple[str, ...]) -> list[str]:
    """Each secret as sent and as a JSON string would carry it (escaped), longest first."""
    found = {
        f
        for s in secrets
        for f in (s, json.dumps(s)[1:-1], json.dumps(s, ensure_ascii=False)[1:-1])
    }
    return sorted(found, key=len, reverse=True)


def _scrub_bytes(content: bytes, secrets: tuple[str, ...]) -> bytes:
    """``content`` with each secret, raw or JSON-escaped, replaced by ``***``."""
    for form in _forms(secrets):
        encoded = form.encode("utf-8", errors="replace")
        if encoded in content:
            content = content.replace(encoded, b"***")
    return content


def _scrub_text(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with each secret, raw or JSON-escaped, replaced by ``***``."""
    for form in _forms(secrets):
        text = text.replace(form, "***")
    return text


def _redacted_request(request: httpx.Request) -> httpx.Request:
    import httpx  # only when pickling an error that carries a request

    secrets = _credentials(request)
    headers = [
        (_scrub_bytes(k, secrets), _scrub_bytes(v, secrets))
        for k, v in request.headers.raw  # bytes: a non-ASCII value must not stop pickling
        if k.lower().decode("latin-1") not in _CREDENTIAL_HEADERS
    ]
    try:
        content = request.content
    except httpx.RequestNotRead:
        content = b""
    return httpx.Request(
        request.method,
        request.url,
        headers=headers,
        content=_scrub_bytes(content, secrets),
        extensions={},
    )


def _redacted_response(response: httpx.Response, secrets: tuple[str, ...] = ()) -> httpx.Response:
    """A copy of ``response`` to pickle: no cookies, no credential header on its request, and
    no ``secrets`` (plus the credentials its request carried) in its body or header values."""
    import httpx

    try:
        content = response.content
    except httpx.ResponseNotRead:
        content = b""
    request = response._request
    secrets = (*secrets, *_credentials(request))
    # raw bytes (a non-ASCII value must not stop pickling); no cookies; the body was decoded
    # already: drop the encoding header so it is not decoded twice
    headers = [
        (_scrub_bytes(k, secrets), _scrub_bytes(v, secrets))  # an echo may even be a name
        for k, v in response.headers.raw
        if k.lower() not in (b"set-cookie", b"content-encoding")
    ]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=_scrub_bytes(content, secrets),
        request=_redacted_request(request) if request is not None else None,
    )


def _echo_free(response: httpx.Response, content: bytes, secret: str) -> httpx.Response:
    """``response`` with ``content`` (already scrubbed) as its body and ``secret`` out of its
    header values; its request is kept as it is."""
    import httpx

    headers = [
        (_scrub_bytes(k, (secret,)), _scrub_bytes(v, (secret,)))
        for k, v in response.headers.raw  # bytes: non-ASCII values are kept as they came
        if k.lower() != b"content-encoding"  # ``content`` is decoded already
    ]
    return httpx.Response(
        response.status_code, headers=headers, content=content, request=response._request
    )


def _scrub_state(value: Any, secrets: tuple[str, ...]) -> Any:
    """A pickled error's plain field (text, or a parsed body) without ``secrets``."""
    if isinstance(value, str):
        return _scrub_text(value, secrets)
    if isinstance(value, dict):
        return {_scrub_state(k, secrets): _scrub_state(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_state(v, secrets) for v in value]
    return value


class PreoError(Exception):
    """Base of every exception this package raises on purpose.

    Every subclass pickles and unpickles with its class and fields (for Celery,
    multiprocessing, pytest-xdist); the request and response it carries lose their
    ``Authorization`` header on the way.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        state = dict(self.__dict__)
        request = state.get("request")
        response = state.get("response")
        # the API key the call sent, should the server have echoed it into the body or a header
        secrets = _credentials(request)
        if response is not None:
            secrets = (*secrets, *_credentials(response._request))
        if request is not None:
            state["request"] = _redacted_request(request)
        if response is not None:
            state["response"] = _redacted_response(response, secrets)
        if secrets:
            for name, value in state.items():
                if isinstance(value, str | dict | list):
                    state[name] = _scrub_state(value, secrets)
            args = tuple(_scrub_state(a, secrets) for a in self.args)
            return (_rebuild, (type(self), args, state))
        return (_rebuild, (type(self), self.args, state))


class RefundValidationError(PreoError, ValueError):
    """A refund argument that breaks a rule; raised before any network I/O.

    ``field`` names the argument (``reason``, ``scope``, ``amount``, ``purchase_id``, ...); the
    message names the allowed values.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {_without_prefix(field, message)}")
        self.field = field


def _without_prefix(field: str, message: str) -> str:
    """``message`` without a leading ``field:`` it may already carry (a wrapped error's text),
    so the field is named once: ``extra_headers: invalid ...``, never twice."""
    prefix = f"{field}:"
    while message.startswith(prefix):
        message = message[len(prefix) :].lstrip()
    return message


def shown(value: object) -> str:
    """``repr(value)`` for an error message; never raises (``repr`` of an int past Python's
    4,300-digit limit raises ValueError, and an argument error must stay an argument error)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 10_000:
        return f"an int of {value.bit_length()} bits"
    try:
        return repr(value)
    except Exception:  # a hostile __repr__
        return f"a {type(value).__name__}"


def join_sentences(first: str, second: str) -> str:
    """``first``, then ``second`` as a new sentence, with exactly one full stop between them
    (``first`` may already end with ``.``, ``!`` or ``?``)."""
    first = first.rstrip()
    if not first:
        return second
    return f"{first} {second}" if first.endswith((".", "!", "?")) else f"{first}. {second}"


class ConfigurationError(PreoError, ValueError):
    """A client setting that cannot work (no API key, unsafe base URL, ...)."""


class RefundOutcomeUnknownError(PreoError):
    """The request may have reached the server: a refund may or may not exist.

    Raised (as a twin of the specific error class) when an attempt of the call may have been
    processed: a read timeout or dropped connection after sending, any 5xx but 503, a 2xx that
    is not a readable refund, or any later error of such a call. Retrying with the same
    ``idempotency_key`` cannot refund twice on a server that honours the key (except after a
    ``422``: that key was used with another body, and its message says what to do).

    ``idempotency_key`` is the key the call sent (a ``str``); it is empty only for an error
    raised for an item nothing was sent for (a bulk item whose transaction's refund, sent
    with another item's key, has an unknown outcome).
    """

    idempotency_key: str = ""


class APIError(PreoError):
    """A failed API call. ``idempotency_key`` is the key the call sent (retry with it)."""

    def __init__(
        self,
        message: str,
        *,
        request: httpx.Request | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message: str = message
        self.request: httpx.Request | None = request
        self.idempotency_key: str | None = idempotency_key

    def __str__(self) -> str:
        return self.message


class APIConnectionError(APIError):
    """No usable answer: the connection failed, was reset, or broke the protocol."""


class APITimeoutError(APIConnectionError):
    """The attempt timed out (connecting, waiting in the pool, writing, reading, or in total)."""


class APIStatusError(APIError):
    """The server answered with an error status.

    ``status_code``, ``body`` (parsed JSON, else text), ``request_id`` and ``response`` tell what
    came back. ``str()`` gives the status, the request id and the server's message.
    """

    def __init__(
        self,
        message: str,
        *,
        response: httpx.Response,
        body: object,
        request_id: str | None,
        idempotency_key: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, request=response.request, idempotency_key=idempotency_key)
        self.response: httpx.Response = response
        self.status_code: int = response.status_code
        self.body: object = body
        self.request_id: str | None = request_id
        self.retry_after: float | None = retry_after


class BadRequestError(APIStatusError):
    """400: the server rejected the body. ``field_errors`` maps each field to its messages."""

    @property
    def field_errors(self) -> dict[str, list[str]]:
        """Django REST framework field errors of the body: ``{"amount": ["..."]}``."""
        return field_errors_of(self.body)


class AuthenticationError(APIStatusError):
    """401: the API key is missing, wrong or expired."""


class PermissionDeniedError(APIStatusError):
    """403: the API key may not refund this purchase."""


class NotFoundError(APIStatusError):
    """404: no purchase with this id."""


class ConflictError(APIStatusError):
    """409: a request with the same idempotency key is still being processed."""


class UnprocessableEntityError(APIStatusError):
    """422: the idempotency key was already used with a different body."""


class RateLimitError(APIStatusError):
    """429: too many requests. ``retry_after`` is the server's wait in seconds, if it gave one."""


class InternalServerError(APIStatusError):
    """>= 500: the server failed. ``retry_after`` is set when the server sent one (503)."""


class APIResponseValidationError(APIError):
    """A 2xx answer that is not a readable refund (not JSON, no ``id`` or ``amount``)."""

    def __init__(
        self,
        message: str,
        *,
        response: httpx.Response,
        body: str,
        request_id: str | None,
        idempotency_key: str | None = None,
    ) -> None:
        super().__init__(message, request=response.request, idempotency_key=idempotency_key)
        self.response: httpx.Response = response
        self.status_code: int = response.status_code
        self.body: str = truncate(body)
        self.request_id: str | None = request_id


# -- the outcome-unknown twins: one per APIError class, real and importable ---------------------


class APIConnectionOutcomeUnknownError(APIConnectionError, RefundOutcomeUnknownError):
    """An :class:`APIConnectionError` after which the refund may exist."""

    idempotency_key: str


class APITimeoutOutcomeUnknownError(APITimeoutError, RefundOutcomeUnknownError):
    """An :class:`APITimeoutError` after which the refund may exist."""

    idempotency_key: str


class APIStatusOutcomeUnknownError(APIStatusError, RefundOutcomeUnknownError):
    """An :class:`APIStatusError` of a call whose refund may exist."""

    idempotency_key: str


class BadRequestOutcomeUnknownError(BadRequestError, RefundOutcomeUnknownError):
    """A :class:`BadRequestError` of a call whose refund may exist."""

    idempotency_key: str


class AuthenticationOutcomeUnknownError(AuthenticationError, RefundOutcomeUnknownError):
    """An :class:`AuthenticationError` of a call whose refund may exist."""

    idempotency_key: str


class PermissionDeniedOutcomeUnknownError(PermissionDeniedError, RefundOutcomeUnknownError):
    """A :class:`PermissionDeniedError` of a call whose refund may exist."""

    idempotency_key: str


class NotFoundOutcomeUnknownError(NotFoundError, RefundOutcomeUnknownError):
    """A :class:`NotFoundError` of a call whose refund may exist."""

    idempotency_key: str


class ConflictOutcomeUnknownError(ConflictError, RefundOutcomeUnknownError):
    """A :class:`ConflictError` of a call whose refund may exist."""

    idempotency_key: str


class UnprocessableEntityOutcomeUnknownError(UnprocessableEntityError, RefundOutcomeUnknownError):
    """An :class:`UnprocessableEntityError` of a call whose refund may exist."""

    idempotency_key: str


class RateLimitOutcomeUnknownError(RateLimitError, RefundOutcomeUnknownError):
    """A :class:`RateLimitError` of a call whose refund may exist (an earlier attempt may have
    landed)."""

    idempotency_key: str


class InternalServerOutcomeUnknownError(InternalServerError, RefundOutcomeUnknownError):
    """An :class:`InternalServerError` after which the refund may exist (any 5xx but 503)."""

    idempotency_key: str


class APIResponseValidationOutcomeUnknownError(
    APIResponseValidationError, RefundOutcomeUnknownError
):
    """A 2xx that is not a readable refund: the refund was probably created."""

    idempotency_key: str


OUTCOME_UNKNOWN_VARIANTS: Final[dict[type[APIError], type[APIError]]] = {
    APIConnectionError: APIConnectionOutcomeUnknownError,
    APITimeoutError: APITimeoutOutcomeUnknownError,
    APIStatusError: APIStatusOutcomeUnknownError,
    BadRequestError: BadRequestOutcomeUnknownError,
    AuthenticationError: AuthenticationOutcomeUnknownError,
    PermissionDeniedError: PermissionDeniedOutcomeUnknownError,
    NotFoundError: NotFoundOutcomeUnknownError,
    ConflictError: ConflictOutcomeUnknownError,
    UnprocessableEntityError: UnprocessableEntityOutcomeUnknownError,
    RateLimitError: RateLimitOutcomeUnknownError,
    InternalServerError: InternalServerOutcomeUnknownError,
    APIResponseValidationError: APIResponseValidationOutcomeUnknownError,
}

# The one status table: an error status and the class it raises. Everything else: 5xx (and
# anything outside 100-599) is InternalServerError, other codes APIStatusError. Whether the
# refund may exist is decided from the status in one place too: `_call.classify_status`.
_STATUS_CLASSES: Final[dict[int, type[APIStatusError]]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def error_class_for_status(status: int) -> type[APIStatusError]:
    """The exception class an error ``status`` raises."""
    cls = _STATUS_CLASSES.get(status)
    if cls is not None:
        return cls
    if status >= 500 or status < 100:
        return InternalServerError
    return APIStatusError


def field_errors_of(body: object) -> dict[str, list[str]]:
    """Read Django REST framework field errors (``{"amount": ["..."]}``) from a body."""
    if not isinstance(body, dict):
        return {}
    errors: dict[str, list[str]] = {}
    for key, value in body.items():
        if isinstance(value, list):
            errors[str(key)] = [_short(item) for item in value]
        else:
            errors[str(key)] = [_short(value)]
    return errors


def _short(value: object) -> str:
    try:
        return truncate(value if isinstance(value, str) else json.dumps(value, default=str))
    except (ValueError, RecursionError, TypeError):
        return f"<{type(value).__name__}>"


def _body_text(body: object, content: bytes) -> str:
    if isinstance(body, dict | list):
        try:
            return truncate(json.dumps(body, ensure_ascii=False, default=str))
        except (ValueError, RecursionError, TypeError):
            pass
    return truncate(content.decode("utf-8", errors="replace"))


def _server_message(body: object, content: bytes) -> str:
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, str):
            return truncate(detail)
        errors = field_errors_of(body)
        if errors:
            return truncate("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
    return _body_text(body, content)


MAX_BODY_DEPTH: Final = 32


def _shallow(value: object, limit: int = MAX_BODY_DEPTH) -> bool:
    """True when ``value`` nests at most ``limit`` levels (checked without recursion)."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def parse_error_body(content: bytes) -> object:
    """An error body as JSON when it is shallow JSON, else as text; never raises."""
    if not content:
        return None
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, too deep, too many digits
        return content.decode("utf-8", errors="replace")
    if not _shallow(body):  # kept as text: it must pickle, print and compare safely
        return content.decode("utf-8", errors="replace")
    return body


def _scrubbed(value: _V, secret: str) -> _V:
    """``value`` (a parsed body: shallow JSON, or text) with ``secret`` replaced by ``***``."""
    if not secret:
        return value
    if isinstance(value, str):
        return value.replace(secret, "***")  # type: ignore[return-value]
    if isinstance(value, dict):
        return {_scrubbed(k, secret): _scrubbed(v, secret) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list):
        return [_scrubbed(v, secret) for v in value]  # type: ignore[return-value]
    return value


def scrub_error(error: _E, secret: str) -> _E:
    """``error`` with ``secret`` (the API key) out of its message, request id and body, should a
    server or a transport have echoed it in a form the byte-level scrub missed (a header, an
    escaped string, an exception's text). For a call's final error only: not the hot path."""
    if secret:
        error.message = _scrubbed(error.message, secret)
        error.args = tuple(_scrubbed(a, secret) for a in error.args)
        for name in ("body", "request_id"):
            if name in error.__dict__:
                error.__dict__[name] = _scrub_state(error.__dict__[name], (secret,))
        response = error.__dict__.get("response")
        if response is not None:  # the response it keeps: body and header values
            content = _content(response)
            scrubbed = _scrub_bytes(content, (secret,))
            if scrubbed != content or any(secret in v for v in response.headers.values()):
                error.__dict__["response"] = _echo_free(response, scrubbed, secret)
    return error


def _content(response: httpx.Response) -> bytes:
    import httpx

    try:
        return response.content
    except httpx.ResponseNotRead:
        return b""


def make_status_error(
    response: httpx.Response,
    *,
    content: bytes,
    request_id: str | None,
    idempotency_key: str | None,
    retry_after: float | None = None,
    note: str | None = None,
    secret: str = "",
) -> APIStatusError:
    """Build the exception for an error ``response`` (not yet marked outcome-unknown).

    ``secret`` (the API key) is scrubbed from the body and the message should the server
    echo it.
    """
    status = response.status_code
    if secret:
        scrubbed = _scrub_bytes(content, (secret,))
        if scrubbed != content or any(secret in v for v in response.headers.values()):
            # the error keeps the response: keep it without the echoed key as well
            content = scrubbed
            response = _echo_free(response, content, secret)
    # the key may also come back JSON-escaped (a `\\` or `\"` in it) or as the request id
    body = _scrubbed(parse_error_body(content), secret)
    request_id = _scrubbed(request_id, secret)
    cls = error_class_for_status(status)
    message = f"Error code: {status} {response.reason_phrase}".rstrip()
    if request_id:
        message += f" (request id: {request_id})"
    server = _server_message(body, content)
    if server:
        message += f" - {server}"
    if note:
        message += f" ({note})"
    remedy = _KEY_REMEDIES.get(cls)
    if remedy is not None:
        message = join_sentences(message, remedy(idempotency_key))
    message = _scrubbed(message, secret)
    return cls(
        message,
        response=response,
        body=body,
        request_id=request_id,
        idempotency_key=idempotency_key,
        retry_after=retry_after,
    )


def retry_hint(idempotency_key: str | None) -> str:
    """The sentence every unknown-outcome error ends with (but a 409's and a 422's, which
    say their own remedy)."""
    return (
        "The refund may or may not have been created; retry with "
        f"idempotency_key={idempotency_key!r} so that it cannot be created twice "
        "(on a server that honours Idempotency-Key)"
    )


def key_reused_remedy(idempotency_key: str | None) -> str:
    """What a ``422`` (the key was already used with a different body) asks for. Retrying with
    the same key returns the same 422 forever, so this never advises it."""
    return (
        f"The idempotency key {idempotency_key!r} was already used with a different request "
        "body, so the server refused this one; the earlier request with this key may have "
        "created a refund. Look that refund up before refunding this purchase again, and send "
        "a different request only with a new idempotency key"
    )


def key_in_flight_remedy(idempotency_key: str | None) -> str:
    """What a ``409`` (a request with the same key is still being processed) asks for."""
    return (
        f"A request with the idempotency key {idempotency_key!r} is still being processed: "
        f"retry later with the same key (idempotency_key={idempotency_key!r}), which cannot "
        "create the refund twice"
    )


_KEY_REMEDIES: Final[dict[type[APIStatusError], Callable[[str | None], str]]] = {
    ConflictError: key_in_flight_remedy,
    UnprocessableEntityError: key_reused_remedy,
}


def _unknown_hint(error: APIError) -> str:
    for cls, remedy in _KEY_REMEDIES.items():
        if isinstance(error, cls):
            return remedy(error.idempotency_key)
    return retry_hint(error.idempotency_key)


def mark_outcome_unknown(error: _E) -> _E:
    """Return ``error`` as its outcome-unknown twin (same fields, its remedy added once: the
    retry hint, or for a 409 / 422 what that status asks for)."""
    if isinstance(error, RefundOutcomeUnknownError):
        return error
    variant = next(
        (OUTCOME_UNKNOWN_VARIANTS[c] for c in type(error).__mro__ if c in OUTCOME_UNKNOWN_VARIANTS),
        APIConnectionOutcomeUnknownError,
    )
    unknown = variant.__new__(variant)
    unknown.__dict__.update(error.__dict__)
    hint = _unknown_hint(error)
    said = hint in error.message or f"idempotency_key={error.idempotency_key!r}" in error.message
    if not said:  # said once only
        unknown.message = join_sentences(error.message, hint)
    unknown.args = (unknown.message,)
    return unknown  # type: ignore[return-value]
