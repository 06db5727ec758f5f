"""The client against respx: the exact bytes sent, errors mapped, responses read leniently."""

from __future__ import annotations

import json
import logging
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx

import preo_client
from preo_client import (
    APIResponseValidationError,
    APIStatusError,
    AsyncPreoClient,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    PreoClient,
    RateLimitError,
    RefundOutcomeUnknownError,
    RefundScope,
    RefundStatus,
    RefundValidationError,
    UnprocessableEntityError,
)
from tests.helpers import API, KEY, Runner, created, refund_json

URL = f"{API}/v1/purchases/pur_1/refund"


@pytest.fixture(params=["sync", "async"])
def runner(request: pytest.FixtureRequest) -> Runner:
    return Runner(request.param)


@pytest.fixture
def mock() -> Any:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        yield router


# -- what goes on the wire -------------------------------------------------------------------

WIRE_CASES = [
    # (kwargs, exact body bytes)
    ({"reason": "deposit_reclaim"}, b'{"reason":"deposit_reclaim","scope":"purchase_deposit"}'),
    (
        {"reason": "rental_return", "scope": "purchase_custom", "amount": "7.5",
         "pickup_point_id": "pp_gate"},
        b'{"reason":"rental_return","scope":"purchase_custom","amount":7.5,'
        b'"pickup_point_id":"pp_gate"}',
    ),
    ({"reason": "sold_out"}, b'{"reason":"sold_out","scope":"purchase_full"}'),
    ({"reason": "event_cancelled"}, b'{"reason":"event_cancelled","scope":"transaction_full"}'),
    (
        {"reason": "product_defect", "comment": "Cup cracked \u2615"},
        '{"reason":"product_defect","scope":"purchase_price","comment":"Cup cracked \u2615"}'
        .encode(),
    ),
    ({"reason": "duplicate_purchase"}, b'{"reason":"duplicate_purchase","scope":"purchase_full"}'),
    ({"reason": "customer_request"}, b'{"reason":"customer_request","scope":"purchase_price"}'),
    (
        {"reason": "compensation", "amount": Decimal("12.50"), "comment": "Late bar opening"},
        b'{"reason":"compensation","scope":"purchase_custom","amount":12.5,'
        b'"comment":"Late bar opening"}',
    ),
    (
        {"reason": "overcharge", "scope": "transaction_custom", "amount": 3},
        b'{"reason":"overcharge","scope":"transaction_custom","amount":3.0}',
    ),
    (
        {"reason": "other", "scope": "purchase_full"},
        b'{"reason":"other","scope":"purchase_full"}',
    ),
    (
        {"reason": "compensation", "amount": Decimal("0.30")},
        b'{"reason":"compensation","scope":"purchase_custom","amount":0.3}',
    ),
    (
        {"reason": "compensation", "amount": Decimal("9999999999999.99")},
        b'{"reason":"compensation","scope":"purchase_custom","amount":9999999999999.99}',
    ),
]  # fmt: skip


@pytest.mark.parametrize(("kwargs", "body"), WIRE_CASES)
def test_exact_json_sent(runner: Runner, mock: Any, kwargs: dict[str, Any], body: bytes) -> None:
    route = mock.post(URL).mock(return_value=created())
    runner.refund("pur_1", **kwargs)
    assert route.call_count == 1
    sent = route.calls.last.request
    assert sent.content == body
    wire_amount = json.loads(sent.content, parse_float=Decimal).get("amount")
    if "amount" in kwargs:
        assert wire_amount == Decimal(str(kwargs["amount"]))


def test_headers(runner: Runner, mock: Any) -> None:
    route = mock.post(URL).mock(return_value=created())
    runner.refund("pur_1", reason="sold_out", options={"default_headers": {"X-Partner": "fest"}})
    headers = route.calls.last.request.headers
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["user-agent"] == f"preo-client-python/{preo_client.__version__}"
    assert headers["content-type"] == "application/json"
    assert headers["accept"] == "application/json"
    assert headers["x-partner"] == "fest"
    assert uuid.UUID(headers["idempotency-key"]).version == 4


def test_caller_idempotency_key_is_sent_unchanged(runner: Runner, mock: Any) -> None:
    route = mock.post(URL).mock(return_value=created())
    refund = runner.refund("pur_1", reason="sold_out", idempotency_key="order-42/refund#1")
    assert route.calls.last.request.headers["idempotency-key"] == "order-42/refund#1"
    assert refund.idempotency_key == "order-42/refund#1"


@pytest.mark.parametrize("bad", ["", "has space", "caf\u00e9", "x" * 256, "a\nb"])
def test_bad_idempotency_key_is_refused(runner: Runner, mock: Any, bad: str) -> None:
    route = mock.post(URL)
    with pytest.raises(RefundValidationError) as info:
        runner.refund("pur_1", reason="sold_out", idempotency_key=bad)
    assert info.value.field == "idempotency_key"
    assert route.call_count == 0


@pytest.mark.parametrize(
    ("purchase_id", "raw_path"),
    [
        ("a/b", b"/v1/purchases/a%2Fb/refund"),
        ("%2e%2e", b"/v1/purchases/%252e%252e/refund"),
        ("...", b"/v1/purchases/.../refund"),
        ("p?x=1#f", b"/v1/purchases/p%3Fx%3D1%23f/refund"),
    ],
)
def test_purchase_id_is_one_path_segment(
    runner: Runner, mock: Any, purchase_id: str, raw_path: bytes
) -> None:
    route = mock.post(url__regex=r".*").mock(return_value=created())
    runner.refund(purchase_id, reason="sold_out")
    assert route.calls.last.request.url.raw_path == raw_path


INVALID_CALLS = [
    ({"purchase_id": "..", "reason": "sold_out"}, "purchase_id"),
    ({"purchase_id": "", "reason": "sold_out"}, "purchase_id"),
    ({"purchase_id": "pur_1", "reason": "SOLD_OUT"}, "reason"),
    ({"purchase_id": "pur_1", "reason": "sold_out", "scope": "purchase_custom"}, "scope"),
    ({"purchase_id": "pur_1", "reason": "compensation"}, "amount"),
    ({"purchase_id": "pur_1", "reason": "compensation", "amount": 0.1 + 0.2}, "amount"),
    ({"purchase_id": "pur_1", "reason": "compensation", "amount": True}, "amount"),
    ({"purchase_id": "pur_1", "reason": "sold_out", "amount": "5"}, "amount"),
    ({"purchase_id": "pur_1", "reason": "sold_out", "comment": 5}, "comment"),
    ({"purchase_id": "pur_1", "reason": "sold_out", "pickup_point_id": ""}, "pickup_point_id"),
]


@pytest.mark.parametrize(("kwargs", "field"), INVALID_CALLS)
def test_invalid_input_makes_zero_http_calls(
    runner: Runner, mock: Any, kwargs: dict[str, Any], field: str
) -> None:
    route = mock.route()
    kwargs = dict(kwargs)
    purchase_id = kwargs.pop("purchase_id")
    with pytest.raises(RefundValidationError) as info:
        runner.refund(purchase_id, **kwargs)
    assert info.value.field == field
    assert route.call_count == 0
    assert len(mock.calls) == 0


# -- errors ----------------------------------------------------------------------------------

STATUS_CASES = [
    (400, {"amount": ["Too much."], "non_field_errors": ["Already refunded."]}, BadRequestError),
    (401, {"detail": "Invalid token."}, AuthenticationError),
    (403, {"detail": "You do not have permission."}, PermissionDeniedError),
    (404, {"detail": "Not found."}, NotFoundError),
    (409, {"detail": "In flight."}, ConflictError),
    (422, {"detail": "Key reused."}, UnprocessableEntityError),
    (429, {"detail": "Slow down."}, RateLimitError),
    (500, {"detail": "Boom."}, InternalServerError),
    (503, {"detail": "Maintenance."}, InternalServerError),
    (418, {"detail": "Teapot."}, APIStatusError),
]


@pytest.mark.parametrize(("status", "body", "cls"), STATUS_CASES)
def test_error_statuses_map_to_classes(
    runner: Runner, mock: Any, status: int, body: dict[str, Any], cls: type[APIStatusError]
) -> None:
    mock.post(URL).mock(
        return_value=httpx.Response(status, json=body, headers={"x-request-id": "req_err"})
    )
    with pytest.raises(APIStatusError) as info:
        runner.refund("pur_1", reason="sold_out", options={"max_retries": 0})
    err = info.value
    assert type(err) is cls or (type(err).__mro__[1] is cls)
    assert isinstance(err, cls)
    assert err.status_code == status
    assert err.request_id == "req_err"
    assert err.body == body
    assert err.response.status_code == status
    assert err.idempotency_key
    text = str(err)
    assert str(status) in text
    assert "req_err" in text
    assert KEY not in text
    assert "Bearer" not in text
    message = body.get("detail") or "Too much."
    assert message in text


def test_bad_request_field_errors(runner: Runner, mock: Any) -> None:
    mock.post(URL).mock(
        return_value=httpx.Response(
            400, json={"amount": ["Too much."], "non_field_errors": "Already refunded."}
        )
    )
    with pytest.raises(BadRequestError) as info:
        runner.refund("pur_1", reason="sold_out")
    assert info.value.field_errors == {
        "amount": ["Too much."],
        "non_field_errors": ["Already refunded."],
    }


def test_unknown_outcome_server_errors_carry_the_mixin(runner: Runner, mock: Any) -> None:
    for status in (500, 502, 504):
        mock.post(URL).mock(return_value=httpx.Response(status, text="<html>bad</html>"))
        with pytest.raises(InternalServerError) as info:
            runner.refund("pur_1", reason="sold_out", idempotency_key="k-1")
        assert isinstance(info.value, RefundOutcomeUnknownError)
        assert info.value.idempotency_key == "k-1"
        assert "idempotency_key='k-1'" in str(info.value)


def test_error_body_text_is_truncated(runner: Runner, mock: Any) -> None:
    mock.post(URL).mock(return_value=httpx.Response(403, text="x" * 10_000))
    with pytest.raises(PermissionDeniedError) as info:
        runner.refund("pur_1", reason="sold_out")
    assert len(str(info.value)) < 2300
    assert "more characters" in str(info.value)


# -- reading responses -----------------------------------------------------------------------


def test_every_field_is_read(runner: Runner, mock: Any) -> None:
    body = refund_json(
        amount=15.5,
        scope="purchase_full",
        status="processed",
        comment="ok",
        service_response="gateway ok",
        refund_date="2026-07-06T10:30:00+02:00",
        organization=None,
        requested_by={"id": "usr_1", "name": "Ana"},
    )
    mock.post(URL).mock(return_value=created(body))
    refund = runner.refund("pur_1", reason="sold_out")
    assert refund.id == "rr_1"
    assert refund.edition_id == "ed_2026"
    assert refund.amount == Decimal("15.5")
    assert refund.requested_by is not None
    assert refund.requested_by.to_dict() == {"id": "usr_1", "name": "Ana"}
    assert refund.pickup_point is not None
    assert refund.pickup_point.id == "pp_1"
    assert refund.created is not None
    assert refund.created.isoformat() == "2026-07-04T18:22:11+00:00"
    assert refund.modified == refund.created
    assert refund.can_approve == "true"
    assert refund.organization is None
    assert refund.scope is RefundScope.PURCHASE_FULL
    assert refund.status is RefundStatus.PROCESSED
    assert refund.comment == "ok"
    assert refund.service_response == "gateway ok"
    assert refund.refund_date is not None
    assert refund.refund_date.utcoffset() is not None
    assert refund.request_id == "req_abc"
    assert refund.replayed is False
    assert refund.http_response.status_code == 201
    assert KEY not in repr(refund)


@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        ({"status": "escalated"}, lambda r: r.status == "escalated"),
        ({"scope": "edition_full"}, lambda r: r.scope == "edition_full"),
        ({"can_approve": True, "can_reject": False}, lambda r: (r.can_approve, r.can_reject)
         == (None, None) and r.to_dict()["can_approve"] is True),  # the page says string
        ({"amount": "12.50"}, lambda r: r.amount == Decimal("12.50")),
        ({"amount": 0.1}, lambda r: str(r.amount) == "0.10"),
        ({"amount": 1234567.89}, lambda r: str(r.amount) == "1234567.89"),
        ({"amount": 7}, lambda r: r.amount == Decimal(7)),
        ({"new_field": {"a": 1}}, lambda r: r.extra == {"new_field": {"a": 1}}),
    ],
)  # fmt: skip
def test_forward_compatible_reading(
    runner: Runner, mock: Any, overrides: dict[str, Any], check: Any
) -> None:
    mock.post(URL).mock(return_value=created(refund_json(**overrides)))
    assert check(runner.refund("pur_1", reason="sold_out"))


def test_exact_amount_from_the_raw_text(runner: Runner, mock: Any) -> None:
    raw = json.dumps(refund_json()).replace('"amount": 12.5', '"amount": 0.30000000000000004')
    mock.post(URL).mock(
        return_value=httpx.Response(201, content=raw, headers={"content-type": "application/json"})
    )
    assert runner.refund("pur_1", reason="sold_out").amount == Decimal("0.30000000000000004")


BAD_2XX = [
    (b'{"id": "rr_1", ', "application/json", "not valid JSON"),
    (json.dumps(refund_json()).encode()[:60], "application/json", "not valid JSON"),
    (b"<html>ok</html>", "text/html", "not valid JSON"),
    (json.dumps([refund_json()]).encode(), "application/json", "expected a JSON object"),
    (json.dumps(refund_json(amount=None)).encode(), "application/json", "amount"),
    (json.dumps(refund_json(amount=True)).encode(), "application/json", "amount"),
    (json.dumps(refund_json(id=5)).encode(), "application/json", "id is not a string"),
    (b"\xff\xfe", "application/json", "not valid JSON"),
]  # fmt: skip


@pytest.mark.parametrize(("content", "ctype", "words"), BAD_2XX)
def test_bad_2xx_bodies_raise_response_validation_error(
    runner: Runner, mock: Any, content: bytes, ctype: str, words: str
) -> None:
    mock.post(URL).mock(
        return_value=httpx.Response(
            201, content=content, headers={"content-type": ctype, "x-request-id": "req_bad"}
        )
    )
    with pytest.raises(APIResponseValidationError) as info:
        runner.refund("pur_1", reason="sold_out", idempotency_key="key-1")
    err = info.value
    assert err.status_code == 201
    assert err.request_id == "req_bad"
    assert err.idempotency_key == "key-1"
    assert words in str(err)
    assert err.body == content.decode("utf-8", errors="replace")


def test_oversized_response_is_refused(runner: Runner, mock: Any) -> None:
    big = json.dumps(refund_json(comment="x" * (1024 * 1024 + 10))).encode()
    mock.post(URL).mock(
        return_value=httpx.Response(201, content=big, headers={"content-type": "application/json"})
    )
    with pytest.raises(APIResponseValidationError, match="larger than 1048576 bytes"):
        runner.refund("pur_1", reason="sold_out")


# -- configuration ---------------------------------------------------------------------------


def test_env_fallbacks_and_precedence(monkeypatch: pytest.MonkeyPatch, mock: Any) -> None:
    monkeypatch.setenv("PREO_API_KEY", "sk_env")
    monkeypatch.setenv("PREO_BASE_URL", "https://eu.preo.example/")
    route = mock.post("https://eu.preo.example/v1/purchases/pur_1/refund").mock(
        return_value=created()
    )
    with PreoClient() as client:
        assert client.base_url == "https://eu.preo.example"
        client.purchases.refund("pur_1", reason="sold_out")
    assert route.calls.last.request.headers["authorization"] == "Bearer sk_env"
    explicit = mock.post(URL).mock(return_value=created())
    with PreoClient(api_key="sk_arg", base_url=API) as client:
        client.purchases.refund("pur_1", reason="sold_out")
    assert explicit.calls.last.request.headers["authorization"] == "Bearer sk_arg"


def test_missing_api_key_names_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREO_API_KEY", raising=False)
    for cls in (PreoClient, AsyncPreoClient):
        with pytest.raises(ConfigurationError) as info:
            cls()
        assert "api_key=" in str(info.value)
        assert "PREO_API_KEY" in str(info.value)


@pytest.mark.parametrize("key", ["sk_abc\r\nX-Evil: 1", "sk abc", "sk\x00abc"])
def test_api_key_with_control_characters_is_refused_without_echo(key: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        PreoClient(api_key=key)
    assert "sk_abc" not in str(info.value)
    assert "abc" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://api.preo.dev", True),
        ("http://localhost:8765", True),
        ("http://127.0.0.1:8765", True),
        ("http://127.8.9.10", True),
        ("http://[::1]:8765", True),
        ("http://api.preo.dev", False),
        ("http://10.0.0.1", False),
        ("ftp://api.preo.dev", False),
        ("https://user:pw@api.preo.dev", False),
        ("api.preo.dev", False),
    ],
)
def test_base_url_must_be_https_unless_loopback(url: str, ok: bool) -> None:
    if ok:
        PreoClient(api_key=KEY, base_url=url).close()
    else:
        with pytest.raises(ConfigurationError):
            PreoClient(api_key=KEY, base_url=url)


def test_allow_insecure_http_opt_in() -> None:
    client = PreoClient(api_key=KEY, base_url="http://api.preo.dev", allow_insecure_http=True)
    assert client.base_url == "http://api.preo.dev"
    client.close()


def test_repr_never_shows_the_key() -> None:
    for client in (PreoClient(api_key=KEY), AsyncPreoClient(api_key=KEY)):
        assert KEY not in repr(client)
        assert KEY not in str(client)
        assert "***" in repr(client)


def test_with_options_returns_a_configured_copy(mock: Any) -> None:
    route = mock.post(URL).mock(return_value=httpx.Response(503))
    with PreoClient(api_key=KEY, max_retries=0) as client:
        copy = client.with_options(max_retries=3, backoff=preo_client.Backoff(0, 0))
        assert copy is not client
        assert (client.max_retries, copy.max_retries) == (0, 3)
        assert copy._http is client._http
        with pytest.raises(InternalServerError):
            copy.purchases.refund("pur_1", reason="sold_out")
        assert route.call_count == 4
        copy.close()  # a copy never closes the shared HTTP client
        assert not client._http.is_closed
        with pytest.raises(TypeError, match="colour"):
            client.with_options(colour="red")
    assert client._http.is_closed


def test_context_managers_close_what_they_opened_only() -> None:
    injected = httpx.Client()
    with PreoClient(api_key=KEY, http_client=injected):
        pass
    assert not injected.is_closed
    injected.close()
    with PreoClient(api_key=KEY) as own:
        pass
    assert own._http.is_closed


async def test_async_context_managers_close_what_they_opened_only() -> None:
    injected = httpx.AsyncClient()
    async with AsyncPreoClient(api_key=KEY, http_client=injected):
        pass
    assert not injected.is_closed
    await injected.aclose()
    async with AsyncPreoClient(api_key=KEY) as own:
        pass
    assert own._http.is_closed


def test_wrong_http_client_kind_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        PreoClient(api_key=KEY, http_client=httpx.AsyncClient())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        AsyncPreoClient(api_key=KEY, http_client=httpx.Client())  # type: ignore[arg-type]


def test_no_secret_in_any_log_record(
    runner: Runner, mock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    mock.post(URL).mock(side_effect=[httpx.Response(503), created()])
    with caplog.at_level(logging.DEBUG):
        runner.refund("pur_1", reason="sold_out")
    assert caplog.records
    assert any("attempt=2/3" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in str(record.args)
