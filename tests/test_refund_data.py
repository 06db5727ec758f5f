"""`Refund` in partner code: pickle, `from_dict`, `make_refund`, `to_json(indent=...)`, and one
rule for amounts, over bodies generated from the spec (valid and mutated)."""

from __future__ import annotations

import json
import pickle
import re
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preo_client import Refund, RefundValidationError
from preo_client._amounts import amount_text
from preo_client._cli import refund_to_dict
from preo_client._models import PickupPoint, StaffUser, parse_refund
from preo_client.testing import make_refund
from tests.test_models import (
    KEY,
    encode,
    mutations,
    valid_bodies,
    within_watchdog,
)

SECRET = "sk_live_secret_123"


def read(body: dict[str, Any]) -> Refund | None:
    """The refund the client reads from ``body`` (sent with an Authorization header), or
    None when the body is not a readable refund."""
    content = encode(body).encode()
    request = httpx.Request(
        "POST", "https://api.preo.dev/v1/purchases/p/refund",
        headers={"Authorization": f"Bearer {SECRET}"}, content=b"{}",
    )  # fmt: skip
    response = httpx.Response(
        201, content=content, request=request, headers={"Idempotent-Replayed": "true"}
    )
    try:
        refund: Refund = within_watchdog(
            lambda: parse_refund(response, content, idempotency_key=KEY, request_id="req_9")
        )
    except Exception:
        return None
    return refund


def mutated(body: dict[str, Any], changes: list[tuple[str, str, Any]]) -> dict[str, Any]:
    for kind, name, value in changes:
        if kind == "drop":
            body.pop(name, None)
        else:
            body[name] = value
    return body


bodies = st.one_of(
    valid_bodies,
    st.builds(mutated, valid_bodies, st.lists(mutations, max_size=3)),
)
PROFILE = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def same(a: Refund, b: Refund) -> None:
    assert a.to_dict() == b.to_dict()
    assert a.to_dict(mode="json") == b.to_dict(mode="json")
    assert a.to_json() == b.to_json()
    assert dict(a.invalid_fields) == dict(b.invalid_fields)
    for name in ("id", "amount", "scope", "status", "created", "modified", "refund_date",
                 "requested_by", "pickup_point", "extra", "comment", "organization"):  # fmt: skip
        assert getattr(a, name) == getattr(b, name), name


@PROFILE
@given(body=bodies)
def test_pickle_round_trips_every_field(body: dict[str, Any]) -> None:
    refund = read(body)
    if refund is None:
        return
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        data = pickle.dumps(refund, protocol=protocol)
        assert SECRET.encode() not in data
        again = pickle.loads(data)  # noqa: S301 - our own bytes
        assert type(again) is Refund
        same(refund, again)
        assert again.request_id == "req_9"
        assert again.idempotency_key == KEY
        assert again.replayed is True
        assert again.http_response.status_code == 201
        assert "authorization" not in again.http_response.request.headers


@PROFILE
@given(body=bodies)
def test_from_dict_reads_every_conversion_back(body: dict[str, Any]) -> None:
    refund = read(body)
    if refund is None:
        with pytest.raises(RefundValidationError):
            Refund.from_dict(json.loads(encode(body), parse_float=Decimal))
        return
    decoded = json.loads(encode(body), parse_float=Decimal)  # the body as a cache keeps it
    same(Refund.from_dict(decoded, idempotency_key=KEY), refund)
    python = Refund.from_dict(refund.to_dict())
    assert python.to_dict() == refund.to_dict()
    for text in (
        refund.to_json(),
        refund.to_json(indent=2),
        json.dumps(refund.to_dict(mode="json")),
    ):
        again = Refund.from_dict(json.loads(text, parse_float=Decimal))
        assert again.to_dict(mode="json") == refund.to_dict(mode="json")
        assert again.amount == refund.amount
    plain_floats = Refund.from_dict(json.loads(refund.to_json()))  # json.loads' floats
    assert plain_floats.id == refund.id


@PROFILE
@given(body=bodies, indent=st.sampled_from([None, 0, 2, 4, "\t"]))
def test_one_rule_for_amounts(body: dict[str, Any], indent: int | str | None) -> None:
    """to_dict(mode="json"), the CLI's --json and to_json() write the amount the same way:
    amount_text, exact, at least two places."""
    refund = read(body)
    if refund is None:
        return
    text = amount_text(refund.amount)
    assert Decimal(text) == refund.amount
    assert re.fullmatch(r"-?[0-9]+\.[0-9]{2,}", text)
    assert refund.to_dict(mode="json")["amount"] == text
    assert refund_to_dict(refund)["amount"] == text
    dumped = refund.to_json(indent=indent)
    assert re.search(rf'"amount": {re.escape(text)}[,\n}}]', dumped), dumped
    assert json.loads(dumped, parse_float=Decimal) == json.loads(
        refund.to_json(), parse_float=Decimal
    )
    if indent is None:
        assert "\n" not in dumped


def test_amount_text_table() -> None:
    for value, text in [
        ("0", "0.00"), ("51.5", "51.50"), ("51.50", "51.50"), ("51.500", "51.500"),
        ("1E+2", "100.00"), ("-3", "-3.00"), ("12.345", "12.345"),
        ("1E+400", "1" + "0" * 400 + ".00"),
    ]:  # fmt: skip
        assert amount_text(Decimal(value)) == text


def test_make_refund_for_partner_tests() -> None:
    refund = make_refund(amount="12.5", status="approved", scope="purchase_custom", note="x")
    assert refund.amount == Decimal("12.50")
    assert str(refund.status) == "approved"
    assert refund.extra == {"note": "x"}
    assert refund.invalid_fields == {}
    assert refund.request_id == "req_test"
    assert refund.model is not None
    assert make_refund().id != make_refund().id
    assert make_refund(id="rr_1", request_id=None, replayed=True).replayed is True
    broken = make_refund(created="yesterday")
    assert broken.created is None
    assert dict(broken.invalid_fields) == {"created": "string (date-time)"}
    assert pickle.loads(pickle.dumps(refund)).to_dict() == refund.to_dict()  # noqa: S301
    assert json.loads(refund.http_response.content)["id"] == refund.id


@pytest.mark.parametrize(
    "data",
    [[1], {"amount": "1.00"}, {"id": "rr_1"}, {"id": "rr_1", "amount": "x"},
     {"id": "rr_1", "amount": "1.00", "extra": {1, 2}}, {"id": "", "amount": "1"},
     {"id": "rr_1", "amount": float("nan")}, {1: "x", "id": "rr", "amount": "1"}],
)  # fmt: skip
def test_from_dict_refuses_what_is_not_a_refund(data: Any) -> None:
    with pytest.raises(RefundValidationError) as caught:
        Refund.from_dict(data)
    assert caught.value.field == "data"


def test_nested_views_pickle() -> None:
    refund = make_refund()
    for view in (refund.requested_by, refund.pickup_point):
        assert isinstance(view, StaffUser | PickupPoint)
        assert pickle.loads(pickle.dumps(view)) == view  # noqa: S301
