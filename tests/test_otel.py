"""OpenTelemetry (extra ``otel``): a CLIENT span per refund call with its attempts as events, the
call's ``traceparent`` on the request, a bulk run's parent span with its counts, and the refund
counter and duration histogram — read back through the OTel SDK's in-memory exporter and
reader, sync and async, over server behaviour (Hypothesis), each call under a watchdog."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from unittest import mock

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import metrics, propagate, trace
from opentelemetry.propagators.textmap import (
    CarrierT,
    Setter,
    TextMapPropagator,
    default_setter,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from preo_client import AsyncPreoClient, Backoff, PreoClient, Refund, RefundOutcomeUnknownError
from preo_client.testing import FakePreo
from tests._observe_cases import KINDS, WATCHDOG, Script, call_once, scripts, watched
from tests.helpers import KEY, created

NO_WAIT = Backoff(0, 0)


class Telemetry:
    """Providers with in-memory exporters, made the global ones while in use."""

    def __init__(self, *, tracing: bool = True, metering: bool = True) -> None:
        self.exporter = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self.tracer_provider = TracerProvider(shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.meter_provider = MeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)
        self.tracing = tracing
        self.metering = metering

    def spans(self, name: str = "preo.refund") -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name == metric:
                        found.extend(m.data.data_points)
        return found


@contextlib.contextmanager
def telemetry(**kw: bool) -> Iterator[Telemetry]:
    """The global tracer and meter providers for the block (restored after it)."""
    t = Telemetry(**kw)
    with contextlib.ExitStack() as stack:
        if t.tracing:
            stack.enter_context(
                mock.patch.object(trace, "get_tracer_provider", return_value=t.tracer_provider)
            )
        if t.metering:
            stack.enter_context(
                mock.patch.object(metrics, "get_meter_provider", return_value=t.meter_provider)
            )
        yield t


def traceparent(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=40, deadline=None)
@given(script=scripts, max_retries=st.integers(0, 3), retry_unknown=st.booleans())
def test_one_client_span_per_call_with_its_attempts(
    kind: str, script: list[tuple[Any, ...]], max_retries: int, retry_unknown: bool
) -> None:
    answers = Script(script)
    with telemetry() as t:
        result = call_once(
            kind, answers, max_retries=max_retries, retry_unknown_outcome=retry_unknown
        )
    [span] = t.spans()
    a = span.attributes or {}
    sent = answers.requests
    assert span.kind is trace.SpanKind.CLIENT
    assert a["http.request.method"] == "POST"
    assert a["server.address"] == "api.preo.dev"
    assert a["server.port"] == 443
    assert a["url.template"] == "/v1/purchases/{id}/refund"
    assert a["preo.purchase_id"] == "pur_1"
    assert a["preo.idempotency_key"] == sent[0].headers["idempotency-key"]
    assert a["http.request.resend_count"] == len(sent) - 1
    # every attempt is an event, numbered, with what it meant
    events = [e for e in span.events if e.name == "preo.attempt"]
    assert [e.attributes["preo.attempt"] for e in events] == list(range(1, len(sent) + 1))  # type: ignore[index]
    # the call's traceparent is on every request it sent
    assert {r.headers["traceparent"] for r in sent} == {traceparent(span)}
    [count] = t.points("preo.client.refunds")
    [duration] = t.points("preo.client.refund.duration")
    assert count.value == 1
    assert duration.count == 1
    assert count.attributes == duration.attributes
    if isinstance(result, Refund):
        assert a["preo.outcome"] == "succeeded"
        assert a["preo.replayed"] is result.replayed
        assert a["preo.outcome_unknown"] is False
        assert a["http.response.status_code"] == 201
        assert "error.type" not in a
        assert span.status.status_code is trace.StatusCode.UNSET
        assert events[-1].attributes["preo.outcome"] == "succeeded"  # type: ignore[index]
        assert count.attributes == {"preo.outcome": "succeeded"}
    else:
        assert isinstance(result, Exception)
        unknown = isinstance(result, RefundOutcomeUnknownError)
        assert a["preo.outcome"] == ("unknown" if unknown else "failed")
        assert a["preo.outcome_unknown"] is unknown
        assert a["error.type"] == type(result).__name__
        assert span.status.status_code is trace.StatusCode.ERROR
        assert a.get("http.response.status_code") == getattr(result, "status_code", None)
        assert count.attributes == {
            "preo.outcome": a["preo.outcome"],
            "error.type": type(result).__name__,
        }
        assert all("error.type" in (e.attributes or {}) for e in events)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("script", "error", "unknown"),
    [
        ([("status", 400)], "BadRequestError", False),
        ([("status", 404)], "NotFoundError", False),
        ([("status", 503)] * 3, "InternalServerError", False),
        ([("status", 429)] * 3, "RateLimitError", False),
        ([("connect",)] * 3, "APIConnectionError", False),
        ([("read_timeout",)], "APITimeoutOutcomeUnknownError", True),
        ([("reset",)], "APIConnectionOutcomeUnknownError", True),
        ([("status", 500)], "InternalServerOutcomeUnknownError", True),
        ([("bad_body",)], "APIResponseValidationOutcomeUnknownError", True),
    ],
)
def test_error_classes_and_the_unknown_outcome_on_the_span(
    kind: str, script: list[tuple[Any, ...]], error: str, unknown: bool
) -> None:
    with telemetry() as t:
        result = call_once(kind, Script(script), max_retries=2)
    assert type(result).__name__ == error
    [span] = t.spans()
    a = span.attributes or {}
    assert a["error.type"] == error
    assert a["preo.outcome_unknown"] is unknown
    assert a["preo.outcome"] == ("unknown" if unknown else "failed")
    assert span.status.status_code is trace.StatusCode.ERROR


@pytest.mark.parametrize("kind", KINDS)
def test_a_replayed_refund_and_a_retried_success(kind: str) -> None:
    with telemetry() as t:
        result = call_once(kind, Script([("status", 503), ("connect",), ("replayed",)]))
    assert isinstance(result, Refund)
    [span] = t.spans()
    a = span.attributes or {}
    assert a["preo.replayed"] is True
    assert a["http.request.resend_count"] == 2
    outcomes = [(e.attributes or {})["preo.outcome"] for e in span.events]
    assert outcomes == ["refused", "not_sent", "succeeded"]
    statuses = [(e.attributes or {}).get("http.response.status_code") for e in span.events]
    assert statuses == [503, None, 201]


def test_a_cancelled_call_in_flight_is_outcome_unknown() -> None:
    """An async call cancelled while its attempt is on the wire: the span ends, the outcome
    cannot be known."""
    sent = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        sent.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(hang)) as http:
            client = AsyncPreoClient(api_key=KEY, http_client=http)
            task = asyncio.ensure_future(client.purchases.refund("pur_1", reason="sold_out"))
            await sent.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    with telemetry() as t:
        asyncio.run(asyncio.wait_for(go(), WATCHDOG))
    [span] = t.spans()
    a = span.attributes or {}
    assert a["preo.outcome"] == "cancelled"
    assert a["preo.outcome_unknown"] is True
    assert a["error.type"] == "CancelledError"
    [count] = t.points("preo.client.refunds")
    assert count.attributes == {"preo.outcome": "cancelled", "error.type": "CancelledError"}


class Hostile(TextMapPropagator):
    """A propagator that tries to set the SDK's reserved headers."""

    def inject(
        self, carrier: CarrierT, context: Any = None, setter: Setter[CarrierT] = default_setter
    ) -> None:
        for name in ("Authorization", "idempotency-key", "content-type", "host", "x-trace"):
            setter.set(carrier, name, "injected")

    def extract(self, carrier: CarrierT, context: Any = None, getter: Any = None) -> Any:
        raise NotImplementedError

    @property
    def fields(self) -> set[str]:
        return {"authorization", "x-trace"}


@pytest.mark.parametrize("kind", KINDS)
def test_propagation_never_overrides_reserved_or_caller_headers(kind: str) -> None:
    answers = Script([("ok",)])

    def call() -> object:
        before = propagate.get_global_textmap()
        propagate.set_global_textmap(Hostile())
        try:
            with telemetry():
                return call_once(kind, answers)
        finally:
            propagate.set_global_textmap(before)

    assert isinstance(call(), Refund)
    [request] = answers.requests
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["idempotency-key"] != "injected"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["host"] == "api.preo.dev"
    assert request.headers["x-trace"] == "injected"  # anything else is propagated

    # a traceparent the caller sets is theirs
    answers = Script([("ok",)])
    with telemetry():
        http = httpx.Client(transport=httpx.MockTransport(answers))
        with PreoClient(api_key=KEY, http_client=http) as client:
            client.purchases.refund(
                "pur_1", reason="sold_out", extra_headers={"traceparent": "mine"}
            )
    assert answers.requests[0].headers["traceparent"] == "mine"


class _Calling(Script):
    def __init__(self, answer: Any) -> None:
        super().__init__([])
        self.answer = answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", KINDS)
def test_the_span_is_current_during_the_call(kind: str) -> None:
    """What the transport runs (e.g. httpx instrumentation) is a child of the call's span."""
    seen: list[trace.SpanContext] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(trace.get_current_span().get_span_context())
        return created()

    with telemetry() as t:
        result = call_once(kind, _Calling(answer))
    assert isinstance(result, Refund)
    [span] = t.spans()
    assert seen == [span.get_span_context()]


@pytest.mark.parametrize("kind", KINDS)
def test_with_the_api_but_no_provider_nothing_is_traced(kind: str) -> None:
    answers = Script([("status", 503), ("ok",)])
    result = call_once(kind, answers)
    assert isinstance(result, Refund)
    assert all("traceparent" not in r.headers for r in answers.requests)


def test_metrics_without_a_tracer_and_spans_without_a_meter() -> None:
    with telemetry(tracing=False) as t:
        call_once("sync", Script([("ok",)]))
    assert t.spans() == []
    assert [p.value for p in t.points("preo.client.refunds")] == [1]
    with telemetry(metering=False) as t:
        call_once("sync", Script([("ok",)]))
    assert len(t.spans()) == 1
    assert t.points("preo.client.refunds") == []


# -- a bulk run -----------------------------------------------------------------------------


def make_fake(count: int) -> FakePreo:
    fake = FakePreo()
    for i in range(count):
        fake.add_purchase(f"p{i}", price="10.00", deposit="1.00")
    return fake


def bulk(kind: str, fake: FakePreo, items: list[Any]) -> Any:
    options: dict[str, Any] = {"reason": "sold_out", "concurrency": 4}
    if kind == "sync":

        def go() -> Any:
            with fake.client(backoff=NO_WAIT) as client:
                client._sleep = lambda seconds: None
                return client.purchases.refund_many(items, **options).run()

        return watched(go)

    async def go_async() -> Any:
        async with fake.async_client(backoff=NO_WAIT) as client:
            return await client.purchases.refund_many(items, **options).run()

    return asyncio.run(asyncio.wait_for(go_async(), WATCHDOG))


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=10, deadline=None)
@given(count=st.integers(0, 12), missing=st.integers(0, 3))
def test_a_bulk_run_is_the_parent_span_of_its_calls_with_its_counts(
    kind: str, count: int, missing: int
) -> None:
    fake = make_fake(count)
    items = [f"p{i}" for i in range(count)] + [f"nope{i}" for i in range(missing)]
    with telemetry() as t:
        summary = bulk(kind, fake, items)
    [run] = t.spans("preo.refund_many")
    a = run.attributes or {}
    assert a["preo.bulk.total"] == summary.total == count + missing
    assert a["preo.bulk.succeeded"] == summary.succeeded == count
    assert a["preo.bulk.failed"] == summary.failures == missing
    assert a["preo.bulk.skipped"] == 0
    assert a["preo.bulk.unfinished"] == 0
    assert a["preo.bulk.total_amount"] == str(summary.total_amount)
    assert a["preo.bulk.concurrency"] == 4
    calls = t.spans()
    assert len(calls) == count + missing
    run_context = run.get_span_context()
    assert all(c.parent is not None and c.parent.span_id == run_context.span_id for c in calls)
    assert {c.context.trace_id for c in calls} <= {run_context.trace_id}
    outcomes = sorted((c.attributes or {})["preo.outcome"] for c in calls)
    assert outcomes == ["failed"] * missing + ["succeeded"] * count
    # the workers made the instruments once and counted every call
    counted = {p.attributes["preo.outcome"]: p.value for p in t.points("preo.client.refunds")}
    assert counted == {k: v for k, v in {"succeeded": count, "failed": missing}.items() if v}


# -- the real globals, in a fresh interpreter ---------------------------------------------------

PROGRAM = """
import httpx
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from preo_client import PreoClient

seen = []
def answer(request):
    seen.append(request.headers.get("traceparent"))
    return httpx.Response(201, json={"id": "rr_1", "amount": "1.00"})

http = httpx.Client(transport=httpx.MockTransport(answer))
client = PreoClient(api_key="sk_test_1234567890", http_client=http)
client.purchases.refund("pur_1", reason="sold_out")  # before any provider: nothing
exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
with trace.get_tracer("app").start_as_current_span("checkout") as parent:
    client.purchases.refund("pur_1", reason="sold_out")
spans = {s.name: s for s in exporter.get_finished_spans()}
refund = spans["preo.refund"]
assert refund.parent.span_id == spans["checkout"].context.span_id
assert seen[0] is None and seen[1].split("-")[2] == format(refund.context.span_id, "016x")
names = [m.name for rm in reader.get_metrics_data().resource_metrics
         for sm in rm.scope_metrics for m in sm.metrics]
print(sorted(spans), sorted(names))
"""


def test_with_the_global_providers_set_by_the_application() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        capture_output=True,
        text=True,
        timeout=WATCHDOG,
        check=True,
    )
    assert done.stdout.strip() == (
        "['checkout', 'preo.refund'] ['preo.client.refund.duration', 'preo.client.refunds']"
    )
