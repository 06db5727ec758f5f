"""The exception hierarchy, and the one function that maps an HTTP status to its class.

Our exception hierarchy::

    PreoError
    ├── RefundValidationError (also ValueError)  bad argument, raised before any I/O
    ├── RefundOutcomeUnknownError                mixed into errors where the refund may exist
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
        └── APIResponseValidationError           a 2xx answer that is not the documented shape

No message ever carries request headers or the API key: texts are built from the status, the
request id and the (truncated) body only. This module imports no HTTP library at run time.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import httpx

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "PreoError",
    "RateLimitError",
    "RefundOutcomeUnknownError",
    "RefundValidationError",
    "UnprocessableEntityError",
    "make_status_error",
    "mark_outcome_unknown",
]

BODY_TEXT_LIMIT = 2048
_E = TypeVar("_E", bound="APIError")


def truncate(text: str, limit: int = BODY_TEXT_LIMIT) -> str:
    """Cut ``text`` to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


class PreoError(Exception):
    """Base of every exception this package raises on purpose."""


class RefundValidationError(PreoError, ValueError):
    """A refund argument that breaks a rule; raised before any network I/O.

    ``field`` names the argument (``reason``, ``scope``, ``amount``, ``purchase_id``, ...); the
    message names the allowed values.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class RefundOutcomeUnknownError(PreoError):
    """The request may have reached the server: a refund may or may not exist.

    Mixed into :class:`APITimeoutError`, :class:`APIConnectionError` and
    :class:`InternalServerError` when they happen after the request was sent. Retrying with the
    same ``idempotency_key`` is safe on a server that honours it.
    """

    idempotency_key: str | None = None


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
        self.message = message
        self.request = request
        self.idempotency_key = idempotency_key


class APIConnectionError(APIError):
    """No usable answer: the connection failed, was reset, or broke the protocol."""


class APITimeoutError(APIConnectionError):
    """The request timed out (connecting, waiting in the pool, writing or reading)."""


def _body_text(body: object, content: bytes) -> str:
    if isinstance(body, dict | list):
        return truncate(json.dumps(body, ensure_ascii=False, default=str))
    return truncate(content.decode("utf-8", errors="replace"))


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
        self.response = response
        self.status_code = response.status_code
        self.body = body
        self.request_id = request_id
        self.retry_after = retry_after


class BadRequestError(APIStatusError):
    """400: the server rejected the body. ``field_errors`` maps each field to its messages."""

    @property
    def field_errors(self) -> dict[str, list[str]]:
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
    """A 2xx answer that is not the documented shape (bad JSON, wrong type, missing field)."""

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
        self.response = response
        self.status_code = response.status_code
        self.body = truncate(body)
        self.request_id = request_id


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}
_UNKNOWN_OUTCOME_STATUSES = frozenset({500, 502, 504})


def field_errors_of(body: object) -> dict[str, list[str]]:
    """Read Django REST framework field errors (``{"amount": ["..."]}``) from a body."""
    if not isinstance(body, dict):
        return {}
    errors: dict[str, list[str]] = {}
    for key, value in body.items():
        if isinstance(value, list):
            errors[str(key)] = [str(item) for item in value]
        else:
            errors[str(key)] = [str(value)]
    return errors


def _server_message(body: object, content: bytes) -> str:
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, str):
            return truncate(detail)
        errors = field_errors_of(body)
        if errors:
            return truncate("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
    return _body_text(body, content)


def make_status_error(
    response: httpx.Response,
    *,
    content: bytes,
    request_id: str | None,
    idempotency_key: str | None,
    retry_after: float | None = None,
) -> APIStatusError:
    """Build the exception for an error ``response``: the one status-to-class mapping."""
    status = response.status_code
    body: Any
    try:
        body = json.loads(content) if content else None
    except ValueError:
        body = content.decode("utf-8", errors="replace")
    cls: type[APIStatusError]
    if status in _STATUS_CLASSES:
        cls = _STATUS_CLASSES[status]
    elif status >= 500:
        cls = InternalServerError
    else:
        cls = APIStatusError
    message = f"Error code: {status} {response.reason_phrase}".rstrip()
    if request_id:
        message += f" (request id: {request_id})"
    server = _server_message(body, content)
    if server:
        message += f" - {server}"
    error = cls(
        message,
        response=response,
        body=body,
        request_id=request_id,
        idempotency_key=idempotency_key,
        retry_after=retry_after,
    )
    return mark_outcome_unknown(error) if status in _UNKNOWN_OUTCOME_STATUSES else error


def retry_hint(idempotency_key: str | None) -> str:
    """The sentence every unknown-outcome error ends with."""
    return (
        "The refund may or may not have been created; retry with "
        f"idempotency_key={idempotency_key!r} so that it cannot be created twice"
    )


_UNKNOWN_VARIANTS: dict[type[APIError], type[APIError]] = {}


def mark_outcome_unknown(error: _E) -> _E:
    """Return ``error`` as an instance of its class *and* :class:`RefundOutcomeUnknownError`.

    Used when the request may have been processed: a read timeout or dropped connection after
    sending, a 500/502/504, or any final error of a call one of whose earlier attempts had such
    an unknown outcome. The message gains the sentence saying which key to retry with.
    """
    if isinstance(error, RefundOutcomeUnknownError):
        return error
    cls = type(error)
    variant = _UNKNOWN_VARIANTS.get(cls)
    if variant is None:
        variant = type(
            cls.__name__,
            (cls, RefundOutcomeUnknownError),
            {"__doc__": cls.__doc__, "__module__": cls.__module__},
        )
        _UNKNOWN_VARIANTS[cls] = variant
    unknown = Exception.__new__(variant)
    unknown.__dict__.update(error.__dict__)
    unknown.message = f"{error.message}. {retry_hint(error.idempotency_key)}"
    unknown.args = (unknown.message,)
    return unknown  # type: ignore[return-value]
