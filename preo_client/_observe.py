"""What the SDK tells about its calls: log records with ``preo.*`` fields, ``PREO_LOG``, and the
hooks the network loops call (OpenTelemetry is reached through :mod:`._otel`, imported only
once the application itself has imported the OpenTelemetry API).

Every record on the ``preo_client`` logger carries its facts as ``extra`` fields with stable
names (:data:`FIELDS`); the text of a record never holds a header, and no record ever holds the
API key (anything a server or a transport echoes is scrubbed before it is logged).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Final

from ._config import LOG_ENV
from ._exceptions import (
    APIError,
    PreoError,
    RefundOutcomeUnknownError,
    _scrubbed,
)

if TYPE_CHECKING:
    from ._call import AttemptFailed, Call, CallState
    from ._models import Refund

__all__ = [
    "FIELDS",
    "BulkTrace",
    "CallWatch",
    "JsonFormatter",
    "bulk_trace",
    "setup_logging",
    "watch_call",
]

log: Final = logging.getLogger("preo_client")

# The ``extra`` fields of an attempt's record (every one present, None when it does not apply).
PURCHASE_ID: Final = "preo.purchase_id"
IDEMPOTENCY_KEY: Final = "preo.idempotency_key"
ATTEMPT: Final = "preo.attempt"
MAX_ATTEMPTS: Final = "preo.max_attempts"
STATUS_CODE: Final = "preo.status_code"
REQUEST_ID: Final = "preo.request_id"
OUTCOME: Final = "preo.outcome"
ELAPSED_MS: Final = "preo.elapsed_ms"
ERROR_TYPE: Final = "preo.error_type"
ERROR: Final = "preo.error"
REPLAYED: Final = "preo.replayed"
RETRY_IN_S: Final = "preo.retry_in_s"
FIELDS: Final = (
    PURCHASE_ID,
    IDEMPOTENCY_KEY,
    ATTEMPT,
    MAX_ATTEMPTS,
    STATUS_CODE,
    REQUEST_ID,
    OUTCOME,
    ELAPSED_MS,
    ERROR_TYPE,
    ERROR,
    REPLAYED,
    RETRY_IN_S,
)

# An attempt's ``preo.outcome``: "succeeded" or what its failure means (see _retry.Failure).
SUCCEEDED: Final = "succeeded"

_MAX_TEXT: Final = 200


# -- PREO_LOG -----------------------------------------------------------------------------------

_LEVELS: Final = {"info": logging.INFO, "debug": logging.DEBUG}
_FORMATS: Final = frozenset({"text", "json"})
_TEXT_FORMAT: Final = "[%(asctime)s %(levelname)s %(name)s] %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message`` and every ``preo.*`` field of the record."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name.startswith("preo."):
                data[name] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def parse_log_setting(value: str) -> tuple[int, str] | None:
    """``PREO_LOG``'s level and format (``info``, ``debug``, ``json``, ``debug,json``, ...);
    None when it is unset or empty. Raises ``ValueError`` for anything else."""
    words = value.replace(",", " ").lower().split()
    if not words:
        return None
    unknown = [w for w in words if w not in _LEVELS and w not in _FORMATS]
    levels = [_LEVELS[w] for w in words if w in _LEVELS]
    formats = [w for w in words if w in _FORMATS]
    if unknown or len(levels) > 1 or len(formats) > 1:
        raise ValueError(value)
    return (levels[0] if levels else logging.INFO, formats[0] if formats else "text")


def setup_logging(environ: Mapping[str, str] = os.environ) -> None:
    """``PREO_LOG`` adds one stderr handler to the ``preo_client`` logger: ``info`` or ``debug``
    (text lines), ``json`` (one JSON object per record, INFO), ``debug,json``. Any other value
    is logged as a WARNING and ignored."""
    raw = environ.get(LOG_ENV, "")
    try:
        setting = parse_log_setting(raw)
    except ValueError:
        log.warning(
            "%s=%r not understood (use info, debug, json or debug,json): no log handler added",
            LOG_ENV,
            raw[:40],
            extra={"preo.setting": LOG_ENV},
        )
        return
    if setting is None:
        return
    level, form = setting
    formatter = JsonFormatter() if form == "json" else logging.Formatter(_TEXT_FORMAT)
    handler = next((h for h in log.handlers if getattr(h, "_preo_env_handler", False)), None)
    if handler is None:
        handler = logging.StreamHandler()
        handler._preo_env_handler = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    handler.setFormatter(formatter)
    log.setLevel(level)


# -- the hooks of the network loops ----------------------------------------------------------

_otel_module: ModuleType | None = None


def otel() -> ModuleType | None:
    """:mod:`._otel` once the application has imported the OpenTelemetry API, else None.

    A tracer or meter provider can only be set by code that imported ``opentelemetry``: until
    then nothing of it is imported here, whether it is installed or not (a dict lookup a call).
    """
    global _otel_module
    if _otel_module is None:
        modules = sys.modules
        if "opentelemetry.trace" not in modules and "opentelemetry.metrics" not in modules:
            return None
        from . import _otel

        _otel_module = _otel
    return _otel_module


def watch_call(call: Call, state: CallState) -> CallWatch | None:
    """A watch for one call when its attempts are logged (INFO) or traced, else None."""
    bridge = otel()
    trace = bridge.start_call(call, state.trace_parent) if bridge is not None else None
    watch = None
    if trace is not None or log.isEnabledFor(logging.INFO):
        watch = CallWatch(call, state, trace)
    state.watch = watch  # (a state sent again must not report to an earlier watch)
    return watch


def _short(text: str, secret: str) -> str:
    text = _scrubbed(text, secret)
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


class CallWatch:
    """Logs and traces one refund call: the retry loop reports each attempt's start, each
    failure and the call's end (a context manager around the loop)."""

    __slots__ = ("_begun", "_call", "_secret", "_sent", "_started", "_state", "_trace")

    def __init__(self, call: Call, state: CallState, trace: Any) -> None:
        from ._call import _secret

        self._call = call
        self._state = state
        self._trace = trace
        self._secret = _secret(call)
        self._begun = time.monotonic()
        self._started = self._begun
        self._sent = False  # an attempt is on the wire: its outcome is not known yet

    # the retry loop's hooks

    def sending(self) -> None:
        """An attempt starts (after any pause or pacing wait)."""
        self._started = time.monotonic()
        self._sent = True

    def failed(self, failed: AttemptFailed, delay: float | None) -> None:
        """An attempt failed; ``delay`` is the wait before the next one (None: not retried)."""
        self._sent = False
        error = failed.error
        fields = self._fields(
            outcome=failed.failure.name.lower(),
            status=getattr(error, "status_code", None),
            request_id=getattr(error, "request_id", None),
            error=error,
            delay=delay,
        )
        if self._trace is not None:
            self._trace.attempt(fields)
        if log.isEnabledFor(logging.INFO):
            self._log_attempt(fields)
        if log.isEnabledFor(logging.DEBUG):
            decision = "not retried" if delay is None else f"retrying in {delay:.3f}s"
            log.debug(
                "refund attempt %d failed (%s), %s",
                fields[ATTEMPT],
                fields[OUTCOME],
                decision,
                extra=fields,
            )

    def succeeded(self, refund: Refund) -> Refund:
        """The last attempt returned ``refund`` (handed back unchanged)."""
        self._sent = False
        fields = self._fields(
            outcome=SUCCEEDED,
            status=refund.http_response.status_code,
            request_id=refund.request_id,
            replayed=refund.replayed,
        )
        if self._trace is not None:
            self._trace.attempt(fields)
            self._trace.answered(refund)
        if log.isEnabledFor(logging.INFO):
            self._log_attempt(fields)
        return refund

    def __enter__(self) -> CallWatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._trace is not None:
            self._trace.end(
                exc,
                attempts=self._state.attempts,
                unknown=self._state.unknown_seen or self._sent,
                seconds=time.monotonic() - self._begun,
            )

    # records

    def _fields(
        self,
        *,
        outcome: str,
        status: int | None,
        request_id: str | None,
        error: BaseException | None = None,
        delay: float | None = None,
        replayed: bool = False,
    ) -> dict[str, Any]:
        call, secret = self._call, self._secret
        retries = call.max_retries if self._state.max_retries is None else self._state.max_retries
        return {
            PURCHASE_ID: call.purchase_id,
            IDEMPOTENCY_KEY: call.idempotency_key,
            ATTEMPT: self._state.attempts,
            MAX_ATTEMPTS: retries + 1,
            STATUS_CODE: status,
            REQUEST_ID: None if request_id is None else _short(request_id, secret),
            OUTCOME: outcome,
            ELAPSED_MS: round((time.monotonic() - self._started) * 1000, 1),
            ERROR_TYPE: None if error is None else type(error).__name__,
            ERROR: None if error is None else _short(_message(error), secret),
            REPLAYED: replayed,
            RETRY_IN_S: None if delay is None else round(delay, 3),
        }

    def _log_attempt(self, fields: dict[str, Any]) -> None:
        """One INFO line per attempt, naming the failure's cause: never a header or a key."""
        status = fields[STATUS_CODE]
        answer = "no answer" if status is None else str(status)
        if fields[ERROR_TYPE] is None:
            tail = f"replayed={str(fields[REPLAYED]).lower()}"
        else:
            tail = f"failed ({fields[OUTCOME]}): {fields[ERROR_TYPE]}: {fields[ERROR]}"
        log.info(
            "POST %s -> %s request_id=%s attempt=%d/%d elapsed=%.1fms %s",
            _scrubbed(self._call.request.url.path, self._secret),
            answer,
            fields[REQUEST_ID],
            fields[ATTEMPT],
            fields[MAX_ATTEMPTS],
            fields[ELAPSED_MS],
            tail,
            extra=fields,
        )


def _message(error: BaseException) -> str:
    """The error's message without the key to retry with (a field of its own)."""
    if not isinstance(error, APIError):
        return str(error)
    message = error.message.split("; retry with idempotency_key=", 1)[0]
    key = error.idempotency_key
    # a 409's or 422's remedy names the key inside its sentence: it stays a field only
    return message.replace(repr(key), "(see preo.idempotency_key)") if key else message


def call_outcome(error: BaseException | None) -> str:
    """A whole call's outcome: ``succeeded``, ``failed`` (the refund was not made),
    ``unknown`` (it may exist) or ``cancelled`` (interrupted: cancelled, a stopped bulk run)."""
    if error is None:
        return SUCCEEDED
    if isinstance(error, RefundOutcomeUnknownError):
        return "unknown"
    return "failed" if isinstance(error, PreoError) else "cancelled"


# -- a bulk run ---------------------------------------------------------------------------------


class BulkTrace:
    """A bulk run's span when tracing is on (``parent`` is then the context its refund calls
    start their spans in); otherwise nothing at all."""

    __slots__ = ("_span", "parent")

    def __init__(self, span: Any = None, parent: Any = None) -> None:
        self._span = span
        self.parent = parent

    def end(self, summary: Any) -> None:
        """End the span with the run's counts (idempotent)."""
        span, self._span = self._span, None
        if span is not None:  # made by _otel: it is loaded
            from ._otel import end_bulk

            end_bulk(span, summary)


def bulk_trace(run_id: str, concurrency: int) -> BulkTrace:
    """Start a bulk run's span (when tracing is on): its refund calls are its children."""
    bridge = otel()
    if bridge is None:
        return BulkTrace()
    return bridge.start_bulk(run_id, concurrency) or BulkTrace()
