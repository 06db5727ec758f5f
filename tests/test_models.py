"""Refund parsing: spec-shaped bodies always read, any mutation either reads or fails typed."""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preo_client import APIResponseValidationError, Refund, RefundScope, RefundStatus
from preo_client._models import MAX_DEPTH, PickupPoint, StaffUser, parse_refund
from tests._contract import spec

KEY = "key-1"
SCHEMAS: dict[str, Any] = spec()["components"]["schemas"]
RESPONSE = SCHEMAS["RefundRequest"]
DOCUMENTED = set(RESPONSE["properties"])
WATCHDOG_SECONDS = 60.0  # hang detection only: a parse never comes near it
PROPERTIES = [
    "id", "amount", "edition_id", "requested_by", "pickup_point", "created", "modified",
    "can_approve", "can_reject", "organization", "scope", "status", "comment",
    "service_response", "refund_date", "extra", "invalid_fields", "model", "http_response",
    "replayed", "request_id", "idempotency_key",
]  # fmt: skip


def within_watchdog(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a thread; a hang fails the test instead of blocking CI."""
    result: list[Any] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(WATCHDOG_SECONDS)
    assert not thread.is_alive(), "parse_refund hung"
    if error:
        raise error[0]
    return result[0]


def response_for(content: bytes, content_type: str = "application/json") -> httpx.Response:
    return httpx.Response(
        201,
        content=content,
        headers={"content-type": content_type},
        request=httpx.Request("POST", "https://x"),
    )


def parse(content: bytes) -> Refund:
    return within_watchdog(
        lambda: parse_refund(
            response_for(content), content, idempotency_key=KEY, request_id="req_1"
        )
    )


def outcome(content: bytes) -> Refund | APIResponseValidationError:
    """The Refund, or the one exception type parse_refund may raise (any other propagates)."""
    try:
        return parse(content)
    except APIResponseValidationError as exc:
        return exc


# -- encoding bodies exactly -------------------------------------------------------------------


class Stamp:
    """A date-time as the server writes it (``text``) and the value it means."""

    def __init__(self, text: str, value: datetime.datetime) -> None:
        self.text = text
        self.value = value


def encode(value: Any) -> str:
    """JSON text with Decimals as exact numbers and Stamps as their text."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(encode(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, Stamp):
        return json.dumps(value.text)
    return json.dumps(value)


# -- strategies built from the spec's RefundRequest schema ---------------------------------------

offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(
    lambda m: datetime.timezone(datetime.timedelta(minutes=m))
)


@st.composite
def stamps(draw: st.DrawFn) -> Stamp:
    moment = draw(
        st.datetimes(
            min_value=datetime.datetime(1, 1, 2), max_value=datetime.datetime(9999, 12, 30)
        )
    )
    zone = draw(st.one_of(st.just(datetime.timezone.utc), offsets))
    value = moment.replace(tzinfo=zone)
    style = draw(st.sampled_from(["auto", "micro", "nano"]))
    text = value.isoformat(timespec="auto" if style == "auto" else "microseconds")
    if style == "nano":  # longer fractions: truncated to microseconds
        text = text[:26] + "999" + text[26:]
    if zone is datetime.timezone.utc and draw(st.booleans()):
        text = text.replace("+00:00", draw(st.sampled_from(["Z", "z"])))
    return Stamp(text, value)


amounts = st.decimals(
    min_value=Decimal("-1e15"), max_value=Decimal("1e15"), places=2, allow_nan=False
) | st.decimals(min_value=0, max_value=10**6, places=5, allow_nan=False)
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return SCHEMAS[ref.rsplit("/", 1)[1]] if ref else schema


def strategy_for(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Every spec-valid value of a schema (an enum also yields strings it does not know)."""
    schema = resolve(schema)
    if "allOf" in schema:
        (only,) = schema["allOf"]
        return strategy_for(only)
    if "anyOf" in schema:
        return st.one_of(*(strategy_for(s) for s in schema["anyOf"]))
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    options: list[st.SearchStrategy[Any]] = []
    for kind in types:
        if kind == "null":
            options.append(st.none())
        elif kind == "string" and schema.get("format") == "date-time":
            options.append(stamps())
        elif kind == "string":
            options.append(st.text(max_size=30))
        elif kind == "number":
            options.append(amounts)
        elif kind == "integer":
            options.append(st.integers(-(10**12), 10**12))
        elif kind == "object":
            options.append(object_strategy(schema))
        else:  # pragma: no cover - the spec uses no other type
            raise AssertionError(kind)
    return st.one_of(*options)


def object_strategy(schema: dict[str, Any], extra_keys: bool = True) -> st.SearchStrategy[Any]:
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    base = st.fixed_dictionaries(
        {k: strategy_for(v) for k, v in props.items() if k in required},
        optional={k: strategy_for(v) for k, v in props.items() if k not in required},
    )
    if not extra_keys or schema.get("additionalProperties") is not True:
        return base
    extras = st.dictionaries(
        st.text(max_size=10).filter(lambda k: k not in props), json_values, max_size=3
    )
    return st.tuples(base, extras).map(lambda pair: {**pair[1], **pair[0]})


valid_bodies = object_strategy(RESPONSE).filter(lambda b: b["id"] != "")


# -- checks every returned Refund must pass ------------------------------------------------------


def exercise(refund: Refund) -> None:
    """Every property and conversion works, and they agree."""
    for name in PROPERTIES:
        getattr(refund, name)
    text = repr(refund)
    assert KEY not in text
    assert refund.amount.as_tuple().exponent <= -2  # type: ignore[operator]
    python = refund.to_dict()
    as_json = refund.to_dict(mode="json")
    json.dumps(as_json)
    dumped = refund.to_json()
    loaded = json.loads(dumped, parse_float=Decimal)
    assert Decimal(loaded["amount"]) == refund.amount
    assert re.search(r'"amount": -?[0-9]+\.[0-9]{2,}[,}]', dumped)
    assert python["amount"] == refund.amount
    assert Decimal(as_json["amount"]) == refund.amount
    assert python["id"] == loaded["id"] == refund.id
    assert set(python) == set(as_json) == set(loaded)
    for name in refund.extra:
        assert name not in DOCUMENTED
        assert name in python
    for name in refund.invalid_fields:
        top = name.split(".")[0]
        assert top in DOCUMENTED
        if "." not in name:
            assert getattr(refund, top) is None
    for name in ("created", "modified", "refund_date"):
        value = getattr(refund, name)
        if value is not None:
            assert python[name] == value
            assert as_json[name] == value.isoformat()
    for name in ("requested_by", "pickup_point"):
        view = getattr(refund, name)
        if view is not None:
            assert python[name] == view.to_dict()
            assert {k: v for k, v in python[name].items() if k != "id"} == view.extra
    if not refund.invalid_fields:
        model = refund.model
        assert model is not None
        assert model.id == refund.id
    else:
        assert refund.model is None
    again = parse(dumped.encode())  # what to_json says reads back as the same refund
    assert again.to_dict() == python


# -- properties ------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=valid_bodies)
def test_every_spec_valid_body_is_read_exactly(body: dict[str, Any]) -> None:
    refund = parse(encode(body).encode())
    assert refund.invalid_fields == {}
    assert refund.id == body["id"]
    assert refund.amount == body["amount"]
    if body["amount"].as_tuple().exponent <= -2:  # never rounded, never re-scaled
        assert refund.amount.as_tuple() == body["amount"].as_tuple()
    else:
        assert refund.amount.as_tuple().exponent == -2
    for name in DOCUMENTED - {"id", "amount"}:
        expected = body.get(name)
        actual = getattr(refund, name)
        if isinstance(expected, Stamp):
            assert actual == expected.value
            assert actual.utcoffset() == expected.value.utcoffset()
        elif isinstance(expected, dict):
            assert isinstance(actual, StaffUser | PickupPoint)
            assert actual.to_dict() == json.loads(encode(expected), parse_float=Decimal)
            assert actual.id == expected.get("id")
        else:
            assert actual == expected, name
    assert isinstance(refund.scope, RefundScope | str | type(None))
    if body.get("status") in {s.value for s in RefundStatus}:
        assert isinstance(refund.status, RefundStatus)
    extras = {k: v for k, v in body.items() if k not in DOCUMENTED}
    assert refund.extra == json.loads(encode(extras), parse_float=Decimal)
    exercise(refund)


def readable_id(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def readable_amount(value: Any) -> bool:
    """The documented rule: a JSON number or ASCII decimal string, finite, at most 30 places,
    within a double's range."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float | Decimal):
        number = Decimal(encode(value))
    elif isinstance(value, str) and re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value):
        number = Decimal(value)
    else:
        return False
    exponent = number.as_tuple().exponent
    in_range = number.adjusted() <= 308 and number.copy_abs() <= Decimal(sys.float_info.max)
    return isinstance(exponent, int) and exponent >= -30 and in_range


def test_an_amount_past_the_largest_double_is_unreadable() -> None:
    """Review round 4: 1.8e308 was read, and its JSON form came back as inf."""
    largest = Decimal(sys.float_info.max)
    for text in ["1.8e308", f"{largest}.01", f"-{largest}.5"]:
        assert Decimal(text).copy_abs() > largest
        answer = outcome(b'{"id": "rr_1", "amount": %s}' % text.encode())
        assert isinstance(answer, APIResponseValidationError), text
    refund = outcome(b'{"id": "rr_1", "amount": 1.7976931348623157e308}')
    assert not isinstance(refund, APIResponseValidationError)
    again = Refund.from_dict(json.loads(refund.to_json()))
    assert again.amount == refund.amount


mutations = st.one_of(
    st.tuples(st.just("drop"), st.sampled_from(sorted(DOCUMENTED)), st.none()),
    st.tuples(st.just("set"), st.sampled_from(sorted(DOCUMENTED)), json_values),
    st.tuples(
        st.just("set"),
        st.sampled_from(["amount"]),
        st.sampled_from(["12.50", "١٢", "1e3", " 1.00", "-0", "", "NaN", "12,50", "0.1"]),
    ),
    st.tuples(st.just("set"), st.sampled_from(["created", "modified", "refund_date"]),
              st.sampled_from(["yesterday", "2026-07-04T18:22:11 +00:00", "2026-13-01T00:00:00Z",
                               "2026-07-04T18:22:11+24:00", "20260704T182211Z",
                               "2026-07-04T18:22:11", "2026-07-04", ""])),
)  # fmt: skip


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(body=valid_bodies, changes=st.lists(mutations, max_size=4))
def test_mutated_body_is_a_refund_iff_id_and_amount_are_readable(
    body: dict[str, Any], changes: list[tuple[str, str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    for kind, name, value in changes:
        if kind == "drop":
            body.pop(name, None)
        else:
            body[name] = value
    content = encode(body).encode()
    expect_refund = readable_id(body.get("id")) and readable_amount(body.get("amount"))
    if "amount" not in body:
        expect_refund = False
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="preo_client"):
        refund = outcome(content)
    if isinstance(refund, APIResponseValidationError):
        assert not expect_refund, str(refund)
        assert "probably created" in str(refund)
        assert "internal error" not in str(refund)
        assert refund.idempotency_key == KEY
        return
    assert expect_refund
    records = [r for r in caplog.records if r.name == "preo_client"]
    exercise(refund)
    assert len(records) == (1 if refund.invalid_fields else 0)
    for record in records:
        message = record.getMessage()
        listed = ", ".join(f"{n} (expected {e})" for n, e in refund.invalid_fields.items())
        assert message.split(": ", 1)[1] == listed  # names and types only, never values


@settings(max_examples=300, deadline=None)
@given(content=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_bytes_never_raise_another_exception(content: bytes) -> None:
    result = outcome(content)
    if isinstance(result, Refund):
        exercise(result)
    else:
        assert "internal error" not in str(result)


# -- regressions -----------------------------------------------------------------------------------


def sample(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "rr_1",
        "edition_id": "ed_1",
        "amount": Decimal("51.5"),
        "requested_by": {"id": "usr_1", "name": "Ana"},
        "pickup_point": {"id": 7},
        "created": "2026-07-04T18:22:11Z",
        "modified": "2026-07-04T18:22:11.5+02:00",
        "can_approve": "true",
        "can_reject": "false",
        "organization": None,
        "scope": "purchase_full",
        "status": "requested",
        "comment": "",
        "service_response": None,
        "refund_date": None,
    }
    body.update(overrides)
    return body


def read(**overrides: Any) -> Refund:
    return parse(encode(sample(**overrides)).encode())


def test_comment_null_is_a_refund() -> None:
    refund = read(comment=None)
    assert refund.comment is None
    assert refund.invalid_fields == {}
    assert refund.to_dict()["comment"] is None


def test_space_before_offset_is_kept_raw_and_never_raises_later() -> None:
    refund = read(created="2026-07-04T18:22:11 +00:00")
    assert refund.created is None
    assert refund.invalid_fields == {"created": "string (date-time)"}
    assert refund.to_dict()["created"] == "2026-07-04T18:22:11 +00:00"
    assert refund.scope is RefundScope.PURCHASE_FULL
    exercise(refund)


def test_amount_keeps_cents_in_repr_dict_and_json() -> None:
    refund = read(amount=Decimal("51.5"))
    assert repr(refund.amount) == "Decimal('51.50')"
    assert "Decimal('51.50')" in repr(refund)
    assert refund.to_dict()["amount"] == Decimal("51.50")
    assert refund.to_dict(mode="json")["amount"] == "51.50"
    assert '"amount": 51.50,' in refund.to_json()
    assert read(amount=Decimal("0.125")).to_dict(mode="json")["amount"] == "0.125"
    assert str(read(amount=7).amount) == "7.00"
    assert str(read(amount="12.5").amount) == "12.50"


@pytest.mark.parametrize(
    "amount", ["١٢", "12\u0660", True, None, "NaN", "Infinity", "1e3", "", [1], {"a": 1}, "\u066b5"]
)
def test_unreadable_amount_raises_saying_the_refund_was_probably_created(amount: Any) -> None:
    with pytest.raises(APIResponseValidationError, match="probably created") as info:
        read(amount=amount)
    assert "amount" in str(info.value)


@pytest.mark.parametrize("body", [b'{"amount": NaN}', b'{"id": "rr_1", "amount": Infinity}'])
def test_nan_and_infinity_are_not_json(body: bytes) -> None:
    with pytest.raises(APIResponseValidationError, match="not valid JSON"):
        parse(body)


@pytest.mark.parametrize("id_value", [None, "", 5, ["rr"], True])
def test_unreadable_id_raises(id_value: Any) -> None:
    with pytest.raises(APIResponseValidationError, match="probably created"):
        read(id=id_value)
    body = sample()
    del body["id"]
    with pytest.raises(APIResponseValidationError, match="'id' is missing"):
        parse(encode(body).encode())


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"id": "rr_1", "amount": 1, "x": '
        + b"[" * (MAX_DEPTH + 5)
        + b"]" * (MAX_DEPTH + 5)
        + b"}",
        b'{"id": "rr_1", "amount": ' + b"9" * 5000 + b"}",
        # (an unknown field holding a 5,000-digit integer is a refund: tests/test_bigint.py)
        b'{"id": "rr_1", "amount": 1' + b"0" * 400 + b"}",
        b"\xff\xfe",
        b"",
        b"null",
        b"[]",
        b'"rr_1"',
    ],
    ids=lambda c: repr(c[:20]),
)
def test_hostile_bodies_raise_only_response_validation_error(content: bytes) -> None:
    with pytest.raises(APIResponseValidationError, match="probably created") as info:
        parse(content)
    assert "internal error" not in str(info.value)


@pytest.mark.parametrize("content_type", ["text/html", "text/plain", "", "text/json"])
@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_a_readable_refund_is_returned_whatever_its_label(content_type: str, bom: bytes) -> None:
    """The body decides (I3): a refund made is a refund returned, however it is labelled."""
    content = bom + encode(sample()).encode()
    refund = parse_refund(
        response_for(content, content_type), content, idempotency_key=KEY, request_id=None
    )
    assert refund.id == sample()["id"]


def test_an_html_page_is_refused() -> None:
    content = b"<html>502 Bad Gateway</html>"
    with pytest.raises(APIResponseValidationError, match="not valid JSON"):
        parse_refund(
            response_for(content, "text/html"), content, idempotency_key=KEY, request_id=None
        )


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("created", "yesterday", "string (date-time)"),
        ("can_approve", 7, "string"),
        ("can_approve", True, "string"),
        ("requested_by", "x", "object"),
        ("comment", 5, "string or null"),
        ("scope", 3, "string"),
        ("refund_date", "soon", "string (date-time) or null"),
        ("pickup_point", [], "object"),
    ],
)
def test_invalid_field_is_none_kept_raw_and_logged_once_without_value(
    field: str, value: Any, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="preo_client"):
        refund = read(**{field: value})
        for _ in range(3):
            for name in PROPERTIES:
                getattr(refund, name)
    records = [r for r in caplog.records if r.name == "preo_client"]
    exercise(refund)  # (its read-back logs again: not counted)
    assert getattr(refund, field) is None
    assert refund.invalid_fields == {field: expected}
    assert refund.to_dict()[field] == value
    assert refund.model is None
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert field in records[0].getMessage()
    assert expected in records[0].getMessage()
    assert records[0].getMessage().split(": ", 1)[1] == f"{field} (expected {expected})"


def test_missing_required_field_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    body = sample()
    del body["edition_id"]
    with caplog.at_level(logging.WARNING, logger="preo_client"):
        refund = parse(encode(body).encode())
    assert refund.edition_id is None
    assert refund.invalid_fields == {"edition_id": "string (required, missing)"}
    assert "edition_id" not in refund.to_dict()
    assert len(caplog.records) == 1


def test_warning_never_carries_secret_values(caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk_live_leak_me_please"
    with caplog.at_level(logging.DEBUG, logger="preo_client"):
        read(created=secret, can_approve={"k": secret}, comment=[secret])
    assert caplog.records
    assert all(secret not in r.getMessage() for r in caplog.records)


def test_nested_views_are_typed_read_only_and_keep_extras() -> None:
    refund = read()
    user = refund.requested_by
    assert isinstance(user, StaffUser)
    assert user.id == "usr_1"
    assert user.extra == {"name": "Ana"}
    assert user == StaffUser({"id": "usr_1", "name": "Ana"})
    point = refund.pickup_point
    assert isinstance(point, PickupPoint)
    assert point.id == 7
    with pytest.raises(AttributeError):
        user.id = "other"  # type: ignore[misc]
    user.extra["name"] = "changed"
    assert refund.requested_by is not None
    assert refund.requested_by.extra == {"name": "Ana"}
    bad = read(requested_by={"id": [1], "name": "x"})
    assert bad.requested_by is not None
    assert bad.requested_by.id is None
    assert bad.invalid_fields == {"requested_by.id": "string or integer"}
    assert bad.to_dict()["requested_by"] == {"id": [1], "name": "x"}


def test_unknown_enum_values_and_extra_fields_are_kept() -> None:
    refund = read(scope="edition_full", status="on_hold", new={"a": Decimal("0.1")})
    assert (refund.scope, refund.status) == ("edition_full", "on_hold")
    assert refund.extra == {"new": {"a": Decimal("0.1")}}
    assert refund.to_dict(mode="json")["new"] == {"a": 0.1}
    assert refund.invalid_fields == {}


def test_to_dict_modes_and_json() -> None:
    refund = read(
        refund_date="2026-07-06T10:30:00+02:00", extra_precise=Decimal("0.1000000000000000000001")
    )
    python = refund.to_dict()
    assert python["created"] == datetime.datetime(
        2026, 7, 4, 18, 22, 11, tzinfo=datetime.timezone.utc
    )
    assert python["scope"] == "purchase_full"
    assert type(python["scope"]) is str
    assert python["requested_by"] == {"id": "usr_1", "name": "Ana"}
    as_json = refund.to_dict(mode="json")
    assert as_json["created"] == "2026-07-04T18:22:11+00:00"
    assert as_json["modified"] == "2026-07-04T18:22:11.500000+02:00"
    assert as_json["extra_precise"] == "0.1000000000000000000001"
    assert json.loads(refund.to_json(), parse_float=Decimal)["amount"] == Decimal("51.50")
    with pytest.raises(ValueError, match="mode"):
        refund.to_dict(mode="yaml")  # type: ignore[arg-type]


def test_model_is_a_lazy_convenience() -> None:
    refund = read()
    model = refund.model
    assert model is not None
    assert model is refund.model
    assert model.amount == 51.5
    assert model.created == refund.created
    assert model.requested_by.to_dict() == {"id": "usr_1", "name": "Ana"}


def test_fractions_beyond_microseconds_are_truncated() -> None:
    refund = read(created="2026-07-04T18:22:11.1234567891Z")
    assert refund.created == datetime.datetime(
        2026, 7, 4, 18, 22, 11, 123456, tzinfo=datetime.timezone.utc
    )


def test_help_documents_every_field() -> None:
    for name in PROPERTIES:
        doc = getattr(Refund, name).__doc__
        assert doc, name
    assert "invalid_fields" in (Refund.__doc__ or "")
    assert Refund.to_dict.__doc__
    assert Refund.to_json.__doc__
