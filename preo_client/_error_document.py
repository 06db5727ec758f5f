"""The ``--json`` error document of the ``preo`` command: what a script needs to act. Pure."""

from __future__ import annotations

from typing import Any, Final

from ._exceptions import BadRequestError, RefundOutcomeUnknownError, RefundValidationError

__all__ = ["ERROR_FIELDS", "error_document"]

ERROR_FIELDS: Final = (
    "type",
    "message",
    "exit_code",
    "status_code",
    "request_id",
    "idempotency_key",
    "outcome_unknown",
    "field_errors",
)
# the type of a failure that is not an exception of ours (a usage problem found by the command)
_TYPE_OF_EXIT: Final = {2: "UsageError", 130: "KeyboardInterrupt"}


def error_document(
    exit_code: int, message: str, error: BaseException | None = None
) -> dict[str, Any]:
    """The error as one JSON-ready object with every field of :data:`ERROR_FIELDS`.

    - ``type``: the exception's class name (``NotFoundError``,
      ``InternalServerOutcomeUnknownError``, ...), or ``UsageError`` / ``KeyboardInterrupt`` /
      ``Error`` for a failure the command found itself;
    - ``message``: the text also printed without ``--json``; ``exit_code``: the process's;
    - ``status_code`` / ``request_id``: the server's answer, when there was one (quote the
      request id to Preo support);
    - ``idempotency_key``: the key the call sent; ``outcome_unknown``: true when the refund may
      exist (retry with that key; after a 422, read ``message``);
    - ``field_errors``: ``{field: [messages]}`` for a bad argument or the server's 400, else ``{}``.
    """
    key = getattr(error, "idempotency_key", None)
    status = getattr(error, "status_code", None)
    request_id = getattr(error, "request_id", None)
    name = type(error).__name__ if error is not None else _TYPE_OF_EXIT.get(exit_code, "Error")
    return {
        "type": name,
        "message": message,
        "exit_code": exit_code,
        "status_code": status if isinstance(status, int) else None,
        "request_id": request_id if isinstance(request_id, str) and request_id else None,
        "idempotency_key": key if isinstance(key, str) and key else None,
        "outcome_unknown": isinstance(error, RefundOutcomeUnknownError),
        "field_errors": _field_errors(error),
    }


def _field_errors(error: BaseException | None) -> dict[str, list[str]]:
    if isinstance(error, RefundValidationError):
        text = str(error)
        prefix = f"{error.field}: "
        return {error.field: [text[len(prefix) :] if text.startswith(prefix) else text]}
    if isinstance(error, BadRequestError):
        return error.field_errors
    return {}
