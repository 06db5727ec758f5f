"""Regression tests for the money path's reproduced failures (single calls), sync and async.

Each test names the failure it reproduces; the invariants behind them are proven over random
server behaviour in ``test_invariants.py``.
"""

from __future__ import annotations

import asyncio
import gzip
import inspect
import json
import logging
import pickle
import threading
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

import preo_client
from preo_client import (
    NOT_GIVEN,
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APITimeoutError,
    AsyncPreoClient,
    Backoff,
    BadRequestError,
    ConfigurationError,
    InternalServerError,
    PreoClient,
    PreoError,
    RateLimitError,
    Refund,
    RefundOutcomeUnknownError,
    RefundValidationError,
    _exceptions,
)
from preo_client._amounts import parse_amount
from preo_client._observe import setup_logging
from tests.helpers import KEY, created, refund_json

KINDS = ["sync", "async"]


class Recorder:
    """A transport answering from a function, recording each request."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)  # type: ignore[no-any-return]


def run(
    kind: str, answer: Any, *, client_options: dict[str, Any] | None = None, **call: Any
) -> tuple[object, Recorder]:
    """One refund call against ``answer``; returns the refund or the exception, and requests."""
    recorder = Recorder(answer)
    options: dict[str, Any] = {"api_key": KEY, "backoff": Backoff(0, 0), **(client_options or {})}
    call.setdefault("reason", "sold_out")
    purchase_id = call.pop("purchase_id", "pur_1")
    if kind == "sync":
        http = httpx.Client(transport=httpx.MockTransport(recorder))
        with http, PreoClient(http_client=http, **options) as client:
            client._sleep = lambda seconds: None
            try:
                return client.purchases.refund(purchase_id, **call), recorder
            except Exception as exc:
                return exc, recorder

    async def go() -> object:
        async def no_sleep(seconds: float) -> None:
            return None

        async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as http:
            client = AsyncPreoClient(http_client=http, **options)
            client._sleep = no_sleep
            try:
                return await client.purchases.refund(purchase_id, **call)
            except Exception as exc:
                return exc

    return asyncio.run(go()), recorder


class Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body read from the wire (not decoded up front, as ``content=`` would be)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data


def streamed(status: int, data: bytes, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, stream=Body(data), headers={"content-type": "application/json", **headers}
    )


def unknown_with_key(result: object, cls: type[APIError], recorder: Recorder) -> None:
    assert isinstance(result, cls), repr(result)
    assert isinstance(result, RefundOutcomeUnknownError), repr(result)
    sent = recorder.requests[-1].headers["idempotency-key"]
    assert result.idempotency_key == sent
    assert repr(sent) in str(result)


# -- 2. every 5xx but 503 is outcome-unknown; an unreadable 2xx too ----------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("status", [500, 501, 502, 504, 507, 520, 522, 524, 599])
def test_every_5xx_but_503_is_outcome_unknown(kind: str, status: int) -> None:
    result, recorder = run(kind, lambda r: httpx.Response(status, json={"detail": "boom"}))
    unknown_with_key(result, InternalServerError, recorder)
    assert len(recorder.requests) == 1  # never retried by default


@pytest.mark.parametrize("kind", KINDS)
def test_503_is_a_refusal_retried_and_not_outcome_unknown(kind: str) -> None:
    result, recorder = run(kind, lambda r: httpx.Response(503))
    assert isinstance(result, InternalServerError)
    assert not isinstance(result, RefundOutcomeUnknownError)
    assert len(recorder.requests) == 3


@pytest.mark.parametrize("kind", KINDS)
def test_a_malformed_2xx_is_outcome_unknown(kind: str) -> None:
    result, recorder = run(kind, lambda r: streamed(201, b"{"))
    unknown_with_key(result, APIResponseValidationError, recorder)


# -- 3. raw exceptions after sending -------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_corrupt_gzip_201_is_outcome_unknown_not_decoding_error(kind: str) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return streamed(201, b"\x1f\x8b definitely not gzip", **{"content-encoding": "gzip"})

    result, recorder = run(kind, answer)
    unknown_with_key(result, APIResponseValidationError, recorder)


@pytest.mark.parametrize("kind", KINDS)
def test_good_gzip_201_is_a_refund(kind: str) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            201,
            content=gzip.compress(json.dumps(refund_json()).encode()),
            headers={"content-type": "application/json", "content-encoding": "gzip"},
        )

    result, _ = run(kind, answer)
    assert isinstance(result, Refund)
    assert result.amount == Decimal("12.50")


@pytest.mark.parametrize("kind", KINDS)
def test_deeply_nested_json_in_a_400_is_a_bad_request(kind: str) -> None:
    answer = lambda r: httpx.Response(400, content=b"[" * 100_000)  # noqa: E731
    result, _ = run(kind, answer)
    assert isinstance(result, BadRequestError)
    assert not isinstance(result, RefundOutcomeUnknownError)
    assert len(str(result)) < 3000


@pytest.mark.parametrize("kind", KINDS)
def test_deeply_nested_json_in_a_201_is_outcome_unknown(kind: str) -> None:
    result, recorder = run(kind, lambda r: streamed(201, b"[" * 100_000))
    unknown_with_key(result, APIResponseValidationError, recorder)


@pytest.mark.parametrize("kind", KINDS)
def test_a_transport_bug_after_sending_is_outcome_unknown(kind: str) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("Event loop is closed")

    result, recorder = run(kind, answer)
    unknown_with_key(result, APIConnectionError, recorder)


@pytest.mark.parametrize("kind", KINDS)
def test_a_body_dropped_after_a_400_is_still_the_400(kind: str) -> None:
    class Broken(httpx.SyncByteStream, httpx.AsyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield b'{"amount": ["too'
            raise httpx.RemoteProtocolError("peer closed")

        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b'{"amount": ["too'
            raise httpx.RemoteProtocolError("peer closed")

    result, _ = run(kind, lambda r: httpx.Response(400, stream=Broken()))
    assert isinstance(result, BadRequestError)
    assert not isinstance(result, RefundOutcomeUnknownError)
    assert "body unreadable" in str(result)


def test_async_client_reused_in_a_second_event_loop_fails_before_sending() -> None:
    recorder = Recorder(lambda r: created())
    http = httpx.AsyncClient(transport=httpx.MockTransport(recorder))
    client = AsyncPreoClient(api_key=KEY, http_client=http)

    async def refund() -> Refund:
        return await client.purchases.refund("pur_1", reason="sold_out")

    assert isinstance(asyncio.run(refund()), Refund)
    with pytest.raises(ConfigurationError, match="another event loop"):
        asyncio.run(refund())
    assert len(recorder.requests) == 1  # nothing was sent the second time


@pytest.mark.parametrize("kind", KINDS)
def test_a_huge_purchase_id_is_a_validation_error_before_io(kind: str) -> None:
    result, recorder = run(kind, lambda r: created(), purchase_id="p" * 70_000)
    assert isinstance(result, RefundValidationError)
    assert result.field == "purchase_id"
    assert recorder.requests == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("field", ["comment", "pickup_point_id"])
def test_a_lone_surrogate_is_a_validation_error_before_io(kind: str, field: str) -> None:
    result, recorder = run(kind, lambda r: created(), **{field: "late \ud83d bar"})
    assert isinstance(result, RefundValidationError)
    assert result.field == field
    assert recorder.requests == []


@pytest.mark.parametrize(
    "key",
    ["sk_live_ünïcode", "sk_live_abc\u00a0", "sk_live\tabc", "sk_live_abc\r\nX-Evil: 1", "sk live"],
)
def test_api_keys_that_are_not_visible_ascii_are_refused_without_echo(key: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        PreoClient(api_key=key)
    for text in (str(refused.value), repr(refused.value)):
        assert key not in text
        if key.strip():
            assert key.strip() not in text


# -- 4./I4: fields parse once ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_returned_refund_never_raises_on_field_access(kind: str) -> None:
    body = refund_json(created="2026-07-04T18:22:11 +00:00")
    result, _ = run(kind, lambda r: created(body))
    if isinstance(result, Refund):
        for name in ("scope", "status", "created", "modified", "comment", "requested_by"):
            getattr(result, name)
    else:  # refused as a whole is acceptable only as an outcome-unknown validation error
        assert isinstance(result, APIResponseValidationError)
        assert isinstance(result, RefundOutcomeUnknownError)


# -- 5./I5: timeout bounds the attempt, body included ----------------------------------------------


class Trickle(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that never ends: one byte every 20 ms, forever."""

    def __iter__(self) -> Iterator[bytes]:
        yield b'{"id":'
        while True:
            time.sleep(0.02)
            yield b" "

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"id":'
        while True:
            await asyncio.sleep(0.02)
            yield b" "


@pytest.mark.parametrize("kind", KINDS)
def test_a_trickled_body_ends_at_the_timeout_as_outcome_unknown(kind: str) -> None:
    answer = lambda r: httpx.Response(  # noqa: E731
        201, stream=Trickle(), headers={"content-type": "application/json"}
    )
    box: list[tuple[object, Recorder]] = []
    worker = threading.Thread(
        target=lambda: box.append(run(kind, answer, timeout=0.3)), daemon=True
    )
    worker.start()
    worker.join(20)  # a watchdog, not a timing assertion: without a total bound this never ends
    assert not worker.is_alive(), "the trickled body was read forever"
    result, recorder = box[0]
    assert isinstance(result, RefundOutcomeUnknownError), repr(result)
    assert isinstance(result, APIError)
    assert len(recorder.requests) == 1


# -- 6./I8: inputs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://evil.localhost:8080",
        "http://localhost.evil.com",
        "http://127.0.0.1.nip.io",
        "https://api.preo.dev\n",
        "https://api.preo.dev\r\nX: y",
        "https://api.preo.dev/\x00",
        "https://api .preo.dev",
        "https://api.preo.dev:99999",
    ],
)
def test_unsafe_base_urls_are_refused_by_the_constructor(url: str) -> None:
    with pytest.raises(ConfigurationError):
        PreoClient(api_key=KEY, base_url=url)


@pytest.mark.parametrize("url", ["http://localhost:8080", "http://127.0.0.2", "http://[::1]:80"])
def test_loopback_http_is_allowed(url: str) -> None:
    assert PreoClient(api_key=KEY, base_url=url).base_url == url


@pytest.mark.parametrize("text", ["\u0661\u0662", "\uff11\uff12", "12.\u06650", "\u00b2"])
def test_non_ascii_digits_are_not_an_amount(text: str) -> None:
    with pytest.raises(ValueError, match="decimal string"):
        parse_amount(text)


def test_the_largest_float_amount_is_accepted_exactly() -> None:
    assert parse_amount(9999999999999.99) == Decimal("9999999999999.99")


def test_a_tiny_float_gets_an_honest_hint() -> None:
    with pytest.raises(ValueError, match="smallest amount") as refused:
        parse_amount(1e-07)
    assert "0.00" not in str(refused.value)
    assert "0.01" in str(refused.value)


# -- 7./I7: exceptions pickle, show as preo_client.X ---------------------------------------------


def _errors() -> list[PreoError]:
    request = httpx.Request(
        "POST",
        "https://api.preo.dev/v1/purchases/p/refund",
        headers={"Authorization": f"Bearer {KEY}"},
    )
    response = httpx.Response(
        429, json={"detail": "slow down"}, headers={"x-request-id": "req_1"}, request=request
    )
    status = _exceptions.make_status_error(
        response,
        content=response.content,
        request_id="req_1",
        idempotency_key="k1",
        retry_after=2.5,
    )
    bad_2xx = APIResponseValidationError(
        "bad", response=response, body="{", request_id="req_1", idempotency_key="k1"
    )
    errors: list[PreoError] = [
        RefundValidationError("amount", "must be > 0"),
        ConfigurationError("no key"),
        APIConnectionError("reset", request=request, idempotency_key="k1"),
        APITimeoutError("slow", request=request, idempotency_key="k1"),
        status,
        bad_2xx,
    ]
    for cls in _exceptions.OUTCOME_UNKNOWN_VARIANTS:
        if issubclass(cls, _exceptions.APIStatusError):
            errors.append(
                _exceptions.mark_outcome_unknown(
                    cls("x", response=response, body=None, request_id="r", idempotency_key="k2")
                )
            )
        elif cls is APIResponseValidationError:
            errors.append(_exceptions.mark_outcome_unknown(bad_2xx))
        else:
            errors.append(
                _exceptions.mark_outcome_unknown(cls("x", request=request, idempotency_key="k2"))
            )
    return errors


@pytest.mark.parametrize("error", _errors(), ids=lambda e: type(e).__name__)
def test_every_exception_pickles_with_class_fields_and_mark(error: PreoError) -> None:
    data = pickle.dumps(error)
    assert KEY.encode() not in data  # the Authorization header never travels
    back = pickle.loads(data)  # noqa: S301 - our own bytes
    assert type(back) is type(error)
    assert str(back) == str(error)
    assert isinstance(back, RefundOutcomeUnknownError) == isinstance(
        error, RefundOutcomeUnknownError
    )
    for name in ("field", "idempotency_key", "status_code", "request_id", "retry_after", "body"):
        assert getattr(back, name, None) == getattr(error, name, None)
    if isinstance(error, RateLimitError):
        assert back.response.status_code == 429
        assert back.response.json() == {"detail": "slow down"}
        assert "authorization" not in back.request.headers


def test_exported_classes_show_as_preo_client() -> None:
    for name in preo_client.__all__:
        value = getattr(preo_client, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert value.__module__ == "preo_client", name
            assert getattr(preo_client, value.__qualname__) is value


def test_every_api_error_class_has_a_real_outcome_unknown_twin() -> None:
    classes = [
        c for c in vars(_exceptions).values()
        if isinstance(c, type) and issubclass(c, APIError) and c is not APIError
        and not issubclass(c, RefundOutcomeUnknownError)
    ]  # fmt: skip
    assert set(classes) == set(_exceptions.OUTCOME_UNKNOWN_VARIANTS)
    for cls, twin in _exceptions.OUTCOME_UNKNOWN_VARIANTS.items():
        assert issubclass(twin, cls)
        assert issubclass(twin, RefundOutcomeUnknownError)
        assert getattr(preo_client, twin.__name__) is twin


# -- the partner surface: with_options, per-call options, NOT_GIVEN, logging ---------------------


def test_with_options_refuses_a_misspelt_option() -> None:
    client = PreoClient(api_key=KEY)
    with pytest.raises(TypeError, match="timout"):
        client.with_options(timout=3)  # type: ignore[call-arg]
    copy = client.with_options(max_retries=5, timeout=3)
    assert (copy.max_retries, copy.timeout.read, client.max_retries) == (5, 3.0, 2)
    assert copy.settings.api_key == client.settings.api_key
    assert KEY not in repr(copy.settings)


def test_defaults_show_as_not_given() -> None:
    signature = str(inspect.signature(PreoClient(api_key=KEY).purchases.refund))
    assert "timeout: 'Timeout | NotGiven' = NOT_GIVEN" in signature
    assert "object object" not in signature
    assert repr(NOT_GIVEN) == "NOT_GIVEN"
    assert not NOT_GIVEN


@pytest.mark.parametrize("kind", KINDS)
def test_extra_headers_are_sent_but_never_override_auth_or_key(kind: str) -> None:
    result, recorder = run(kind, lambda r: created(), extra_headers={"X-Trace": "t-1"})
    assert isinstance(result, Refund)
    assert recorder.requests[0].headers["x-trace"] == "t-1"
    for name in ("Authorization", "idempotency-key", "Content-Type"):
        result, recorder = run(kind, lambda r: created(), extra_headers={name: "x"})
        assert isinstance(result, RefundValidationError)
        assert result.field == "extra_headers"
        assert recorder.requests == []


@pytest.mark.parametrize("kind", KINDS)
def test_per_call_max_retries(kind: str) -> None:
    result, recorder = run(kind, lambda r: httpx.Response(503), max_retries=0)
    assert isinstance(result, InternalServerError)
    assert len(recorder.requests) == 1
    result, recorder = run(kind, lambda r: httpx.Response(503), max_retries=4)
    assert len(recorder.requests) == 5


@pytest.mark.parametrize("kind", KINDS)
def test_one_info_line_per_attempt_without_key_or_headers(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    answers = iter([httpx.Response(503, headers={"x-request-id": "req_a"}), created()])
    with caplog.at_level(logging.INFO, logger="preo_client"):
        result, recorder = run(kind, lambda r: next(answers))
    assert isinstance(result, Refund)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(lines) == 2
    assert "POST /v1/purchases/pur_1/refund -> 503 request_id=req_a attempt=1/3" in lines[0]
    assert "-> 201 request_id=req_abc attempt=2/3" in lines[1]
    key = recorder.requests[0].headers["idempotency-key"]
    for record in caplog.records:
        text = record.getMessage()
        assert key not in text
        assert KEY not in text
        assert "Bearer" not in text


def test_preo_log_env_turns_on_a_handler_once() -> None:
    logger = logging.getLogger("preo_client")
    before = list(logger.handlers), logger.level
    try:
        setup_logging({"PREO_LOG": "info"})
        setup_logging({"PREO_LOG": "info"})
        added = [h for h in logger.handlers if h not in before[0]]
        assert len(added) == 1
        assert logger.level == logging.INFO
        setup_logging({"PREO_LOG": "debug"})
        assert logger.level == logging.DEBUG
    finally:
        logger.handlers[:] = before[0]
        logger.setLevel(before[1])


# -- found by the adversarial review of the call core -----------------------------------------


def test_a_with_options_copy_shares_the_event_loop_binding() -> None:
    recorder = Recorder(lambda r: created())
    http = httpx.AsyncClient(transport=httpx.MockTransport(recorder))
    client = AsyncPreoClient(api_key=KEY, http_client=http)
    copy = client.with_options(max_retries=0)  # copied before the first call

    async def refund(c: AsyncPreoClient) -> Refund:
        return await c.purchases.refund("pur_1", reason="sold_out")

    assert isinstance(asyncio.run(refund(client)), Refund)
    with pytest.raises(ConfigurationError, match="another event loop"):
        asyncio.run(refund(copy))
    assert len(recorder.requests) == 1


def test_every_timeout_limit_is_set() -> None:
    client = PreoClient(api_key=KEY, timeout=httpx.Timeout(1.0, read=None))
    assert (client.timeout.connect, client.timeout.read, client.timeout.write) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("value", [10**400, 1e10, 0, -1, float("nan"), True, "5"])
def test_timeouts_out_of_range_are_refused(value: object) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        PreoClient(api_key=KEY, timeout=value)  # type: ignore[arg-type]
    result, recorder = run("sync", lambda r: created(), timeout=value)
    assert isinstance(result, RefundValidationError)
    assert result.field == "timeout"
    assert recorder.requests == []


@pytest.mark.parametrize("kwargs", [{"base": "0.5"}, {"base": None}, {"cap": 1e300}, {"base": -1}])
def test_bad_backoff_values_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="Backoff"):
        Backoff(**kwargs)


def test_a_gzip_bomb_never_inflates_past_the_cap() -> None:
    from preo_client._call import MAX_RESPONSE_BYTES, BodyReader

    bomb = gzip.compress(b"0" * (64 * MAX_RESPONSE_BYTES), 9)  # ~65 KB on the wire
    response = httpx.Response(201, headers={"content-encoding": "gzip"})
    reader = BodyReader(response)
    held = 0
    for start in range(0, len(bomb), 4096):
        reader.feed(bomb[start : start + 4096])
        held = max(held, sum(len(c) for c in reader._chunks))
        if reader.done:
            break
    _content, problem = reader.result()
    assert problem is not None
    assert "larger than" in problem
    assert held <= MAX_RESPONSE_BYTES


@pytest.mark.parametrize("kind", KINDS)
def test_stacked_content_encodings_are_refused_as_unreadable(kind: str) -> None:
    body = gzip.compress(gzip.compress(json.dumps(refund_json()).encode()))
    result, recorder = run(
        kind, lambda r: streamed(201, body, **{"content-encoding": "gzip, gzip"})
    )
    unknown_with_key(result, APIResponseValidationError, recorder)
    assert "Content-Encoding" in str(result)


def test_a_float_subclass_with_its_own_repr_is_read_by_value() -> None:
    class Money(float):
        def __repr__(self) -> str:
            return f"Money({float(self)})"

    assert parse_amount(Money(12.5)) == Decimal("12.50")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("status", [409, 422])
def test_a_key_conflict_on_a_supplied_key_is_outcome_unknown(kind: str, status: int) -> None:
    result, recorder = run(kind, lambda r: httpx.Response(status), idempotency_key="ticket-42")
    assert isinstance(result, RefundOutcomeUnknownError)
    assert result.idempotency_key == "ticket-42"
    assert len(recorder.requests) == 1
    result, _ = run(kind, lambda r: httpx.Response(status))  # our own fresh key: a plain 4xx
    assert not isinstance(result, RefundOutcomeUnknownError)


def test_an_error_with_a_deep_body_pickles() -> None:
    deep = b'{"amount":' + b"[" * 600 + b"]" * 600 + b"}"
    result, _ = run("sync", lambda r: httpx.Response(400, content=deep))
    assert isinstance(result, BadRequestError)
    back = pickle.loads(pickle.dumps(result))  # noqa: S301 - our own bytes
    assert type(back) is BadRequestError


@pytest.mark.parametrize(
    "name", ["Transfer-Encoding", "Content-Encoding", "Connection", "Accept-Encoding", "TE"]
)
def test_headers_that_change_framing_are_reserved(name: str) -> None:
    result, recorder = run("sync", lambda r: created(), extra_headers={name: "chunked"})
    assert isinstance(result, RefundValidationError)
    assert recorder.requests == []
    with pytest.raises(ConfigurationError, match="cannot be overridden"):
        PreoClient(api_key=KEY, default_headers={name: "chunked"})


@pytest.mark.parametrize("kind", KINDS)
def test_an_api_key_echoed_by_the_server_is_scrubbed(kind: str) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        return streamed(400, json.dumps({"detail": request.headers["authorization"]}).encode())

    result, _ = run(kind, echo)
    assert isinstance(result, BadRequestError)
    for text in (str(result), repr(result), repr(result.body), result.response.text):
        assert KEY not in text
    assert KEY.encode() not in pickle.dumps(result)


@pytest.mark.parametrize(
    "url",
    ["", "https://staging.preo.dev?", "https://staging.preo.dev#", "https://x.dev/" + "a" * 3000],
)
def test_base_urls_that_would_post_elsewhere_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="base_url"):
        PreoClient(api_key=KEY, base_url=url)


@pytest.mark.parametrize("kind", KINDS)
def test_a_closed_client_sends_nothing_and_says_so(kind: str) -> None:
    recorder = Recorder(lambda r: created())
    if kind == "sync":
        http = httpx.Client(transport=httpx.MockTransport(recorder))
        with PreoClient(api_key=KEY, http_client=http) as client:
            pass
        http.close()
        with pytest.raises(ConfigurationError, match="closed"):
            client.purchases.refund("pur_1", reason="sold_out")
    else:

        async def go() -> None:
            http = httpx.AsyncClient(transport=httpx.MockTransport(recorder))
            await http.aclose()
            client = AsyncPreoClient(api_key=KEY, http_client=http)
            with pytest.raises(ConfigurationError, match="closed"):
                await client.purchases.refund("pur_1", reason="sold_out")

        asyncio.run(go())
    assert recorder.requests == []


@pytest.mark.parametrize("kind", KINDS)
def test_responses_on_results_and_errors_can_be_read(kind: str) -> None:
    result, _ = run(kind, lambda r: streamed(201, json.dumps(refund_json()).encode()))
    assert isinstance(result, Refund)
    assert result.http_response.json()["id"] == "rr_1"
    result, _ = run(kind, lambda r: streamed(400, b'{"amount": ["too much"]}'))
    assert isinstance(result, BadRequestError)
    assert result.response.json() == {"amount": ["too much"]}


def test_lazy_exports_and_functions_show_as_preo_client() -> None:
    for name in ("RefundScope", "RefundStatus", "plan_refund", "idempotency_key_for"):
        assert getattr(preo_client, name).__module__ == "preo_client", name


def _trickling_server(body_too: bool) -> tuple[str, threading.Event]:
    """A loopback server that answers one byte every 50 ms, forever (until stopped)."""
    import socket

    stop = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    head = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 99999\r\n"

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.recv(65536)
                data = (
                    head + b"\r\n" + b" " * 99999 if body_too else head + b"X-Pad: " + b"a" * 99999
                )
                for byte in data:
                    if stop.is_set():
                        break
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:
                        break
                    time.sleep(0.05)
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", stop


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("body_too", [False, True], ids=["trickled headers", "trickled body"])
def test_the_total_timeout_bounds_an_attempt_over_a_real_socket(kind: str, body_too: bool) -> None:
    """A server trickling its headers (or body) a byte at a time never outlasts ``timeout``:
    the call ends in an outcome-unknown timeout (a watchdog, not a timing assertion: without
    the total bound it would run for over an hour)."""
    url, stop = _trickling_server(body_too)
    box: list[object] = []

    def call() -> None:
        options: dict[str, Any] = {"api_key": KEY, "base_url": url, "timeout": 0.5}
        try:
            if kind == "sync":
                with PreoClient(**options) as client:
                    box.append(client.purchases.refund("pur_1", reason="sold_out"))
            else:

                async def go() -> Refund:
                    async with AsyncPreoClient(**options) as client:
                        return await client.purchases.refund("pur_1", reason="sold_out")

                box.append(asyncio.run(go()))
        except Exception as exc:
            box.append(exc)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(20)
    stop.set()
    assert not worker.is_alive(), "the attempt outlasted its total timeout"
    (result,) = box
    assert isinstance(result, RefundOutcomeUnknownError), repr(result)
