"""OpenTelemetry for refunds: a CLIENT span per call (attempts as events), a bulk run's span, the
``traceparent`` of the call on its request, and two metrics (extra ``otel``: the API only).

Imported by :mod:`._observe` only once the application has imported the OpenTelemetry API; a
span is made only while a tracer provider is set, metrics only while a meter provider is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import httpx
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace

from ._config import RESERVED_HEADERS
from ._observe import (
    ATTEMPT,
    ELAPSED_MS,
    ERROR_TYPE,
    OUTCOME,
    RETRY_IN_S,
    STATUS_CODE,
    BulkTrace,
    call_outcome,
)
from ._version import __version__

if TYPE_CHECKING:
    from ._call import Call
    from ._models import Refund

__all__ = ["CallTrace", "end_bulk", "start_bulk", "start_call"]

NAME: Final = "preo_client"
SPAN: Final = "preo.refund"
BULK_SPAN: Final = "preo.refund_many"
URL_TEMPLATE: Final = "/v1/purchases/{id}/refund"
REFUNDS: Final = "preo.client.refunds"
DURATION: Final = "preo.client.refund.duration"

try:  # what get_meter_provider() returns while none is set (private: degrade to "set")
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    _UNSET_METERS: tuple[type, ...] = (metrics.NoOpMeterProvider, _ProxyMeterProvider)
except ImportError:  # pragma: no cover - a future API without it
    _UNSET_METERS = (metrics.NoOpMeterProvider,)
_UNSET_TRACERS: Final = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)

_T = TypeVar("_T")
_lock = threading.Lock()
_made: dict[str, tuple[object, Any]] = {}  # what was made from which provider, by kind


def _per_provider(kind: str, provider: object, make: Callable[[], _T]) -> _T:
    """``make()`` once per provider, under a lock (the SDK warns about an instrument made
    twice; concurrent first calls of a bulk run would make it twice)."""
    cached = _made.get(kind)
    if cached is None or cached[0] is not provider:
        with _lock:
            cached = _made.get(kind)
            if cached is None or cached[0] is not provider:
                cached = _made[kind] = (provider, make())
    return cached[1]


def tracer() -> trace.Tracer | None:
    """This library's tracer from the global provider; None while no provider is set."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, _UNSET_TRACERS):
        return None
    return _per_provider("tracer", provider, lambda: provider.get_tracer(NAME, __version__))


def instruments() -> tuple[metrics.Counter, metrics.Histogram] | None:
    """The refund counter and duration histogram; None while no meter provider is set."""
    provider = metrics.get_meter_provider()
    if isinstance(provider, _UNSET_METERS):
        return None

    def make() -> tuple[metrics.Counter, metrics.Histogram]:
        meter = provider.get_meter(NAME, __version__)
        counter = meter.create_counter(
            REFUNDS, unit="{refund}", description="Refund calls, by outcome."
        )
        histogram = meter.create_histogram(
            DURATION,
            unit="s",
            description="Duration of refund calls, every attempt and wait included.",
        )
        return counter, histogram

    return _per_provider("instruments", provider, make)


def start_call(call: Call, parent: Any) -> CallTrace | None:
    """Start tracing one call (the span made current and its ``traceparent`` set on the
    request); None when neither a tracer nor a meter provider is set."""
    found, meters = tracer(), instruments()
    if found is None and meters is None:
        return None
    return CallTrace(call, found, meters, parent)


class CallTrace:
    """One call's span and metrics. The span is current until :meth:`end`."""

    __slots__ = ("_meters", "_span", "_status", "_token")

    def __init__(
        self,
        call: Call,
        found: trace.Tracer | None,
        meters: tuple[metrics.Counter, metrics.Histogram] | None,
        parent: Any,
    ) -> None:
        self._meters = meters
        self._span: trace.Span | None = None
        self._token: Any = None
        self._status: int | None = None
        if found is None:
            return
        url = call.request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        self._span = span = found.start_span(
            SPAN,
            context=parent,
            kind=trace.SpanKind.CLIENT,
            attributes={
                "http.request.method": call.request.method,
                "server.address": url.host,
                "server.port": port,
                "url.template": URL_TEMPLATE,
                "url.full": _full_url(url),
                "preo.purchase_id": call.purchase_id,
                "preo.idempotency_key": call.idempotency_key,
                "preo.replayed": False,
            },
        )
        ctx = trace.set_span_in_context(span, parent)
        self._token = otel_context.attach(ctx)
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=ctx)
        headers = call.request.headers
        for name, value in carrier.items():
            # a propagator never overrides the SDK's reserved headers or the caller's own
            if name.lower() not in RESERVED_HEADERS and name not in headers:
                headers[name] = value

    def attempt(self, fields: dict[str, Any]) -> None:
        """One attempt as an event ``preo.attempt`` of the call's span."""
        self._status = fields[STATUS_CODE]
        span = self._span
        if span is None:
            return
        attributes: dict[str, Any] = {
            "preo.attempt": fields[ATTEMPT],
            "preo.outcome": fields[OUTCOME],
            "preo.elapsed_ms": fields[ELAPSED_MS],
        }
        if fields[STATUS_CODE] is not None:
            attributes["http.response.status_code"] = fields[STATUS_CODE]
        if fields[ERROR_TYPE] is not None:
            attributes["error.type"] = fields[ERROR_TYPE]
        if fields[RETRY_IN_S] is not None:
            attributes["preo.retry_in_s"] = fields[RETRY_IN_S]
        span.add_event("preo.attempt", attributes)

    def answered(self, refund: Refund) -> None:
        if self._span is not None:
            self._span.set_attribute("preo.replayed", refund.replayed)

    def end(
        self, error: BaseException | None, *, attempts: int, unknown: bool, seconds: float
    ) -> None:
        """End the span (status, error, resends) and record the call in the metrics."""
        outcome = call_outcome(error)
        error_type = None if error is None else type(error).__name__
        span = self._span
        if span is not None:
            if self._token is not None:
                otel_context.detach(self._token)
            attributes: dict[str, Any] = {
                "http.request.resend_count": max(attempts - 1, 0),
                "preo.outcome": outcome,
                "preo.outcome_unknown": outcome == "unknown" or (error is not None and unknown),
            }
            if self._status is not None:
                attributes["http.response.status_code"] = self._status
            if error_type is not None:
                attributes["error.type"] = error_type
                span.set_status(trace.StatusCode.ERROR, error_type)
            span.set_attributes(attributes)
            span.end()
        if self._meters is not None:
            counter, histogram = self._meters
            labels = {"preo.outcome": outcome}
            if error_type is not None:
                labels["error.type"] = error_type
            counter.add(1, labels)
            histogram.record(seconds, labels)


def _full_url(url: httpx.URL) -> str:
    """The URL without user information (never a credential on a span)."""
    return str(url.copy_with(username=None, password=None)) if url.userinfo else str(url)


def start_bulk(run_id: str, concurrency: int) -> BulkTrace | None:
    """A bulk run's span (INTERNAL), parent of its refund calls; None without a tracer."""
    found = tracer()
    if found is None:
        return None
    span = found.start_span(
        BULK_SPAN,
        kind=trace.SpanKind.INTERNAL,
        attributes={"preo.run_id": run_id, "preo.bulk.concurrency": concurrency},
    )
    return BulkTrace(span, trace.set_span_in_context(span))


def end_bulk(span: trace.Span, summary: Any) -> None:
    """End a bulk run's span with its counts (``preo.bulk.*``) and why it stopped, if it did."""
    span.set_attributes(
        {
            "preo.bulk.total": summary.total,
            "preo.bulk.succeeded": summary.succeeded,
            "preo.bulk.replayed": summary.replayed,
            "preo.bulk.covered": summary.covered,
            "preo.bulk.skipped": summary.skipped,
            "preo.bulk.failed": summary.failures,
            "preo.bulk.unfinished": summary.unfinished,
            "preo.bulk.total_amount": str(summary.total_amount),
        }
    )
    if summary.stopped is not None:
        span.set_attribute("preo.bulk.stopped", summary.stopped)
        span.set_status(trace.StatusCode.ERROR, summary.stopped)
    span.end()
