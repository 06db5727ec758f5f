"""Integers past Python's int-to-text digit limit (4,300 digits): an argument holding one is a
``RefundValidationError`` naming the field (nothing sent), and one in a refund body is that
field's raw value, never a bare ``ValueError`` or an unreadable body."""

from __future__ import annotations

import asyncio
import json
import pickle
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preo_client import (
    APIResponseValidationOutcomeUnknownError,
    Refund,
    RefundItem,
    RefundValidationError,
)
from preo_client.testing import FakePreo, Fault, make_refund
from tests.test_models import within_watchdog

LIMIT = 4300
ARGS = ("purchase_id", "reason", "scope", "amount", "comment", "pickup_point_id")
ITEM_FIELDS = (*ARGS, "reference", "transaction_id")
# Every field of a refund body, nested ones as (object, key).
PATHS: tuple[tuple[str, ...], ...] = tuple(
    [(name,) for name in make_refund().to_dict(mode="json")]
    + [("requested_by", "id"), ("pickup_point", "name"), ("extra_counter",)]
)

huge = st.builds(
    lambda digits, sign, lead: sign * (lead * 10 ** (digits - 1) + 7),
    st.integers(min_value=LIMIT + 1, max_value=LIMIT + 3000),
    st.sampled_from([1, -1]),
    st.integers(min_value=1, max_value=9),
)
fast = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _digits(value: int) -> str:
    return str(Decimal(value))  # Decimal(int) converts without the digit limit


def _with(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    target = body
    for key in path[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[path[-1]] = value
    return body


def _text(body: dict[str, Any], path: tuple[str, ...], big: int) -> bytes:
    marker = "<<BIG>>"
    return json.dumps(_with(body, path, marker)).replace(f'"{marker}"', _digits(big)).encode()


def _check_refund(refund: Refund, path: tuple[str, ...], big: int) -> None:
    assert refund.id
    assert isinstance(refund.amount, Decimal)
    raw: Any = refund.to_dict()
    for key in path:
        raw = raw[key]
    assert raw == big  # exact (a Decimal equal to the int)
    assert _digits(big) in refund.to_json()
    assert pickle.loads(pickle.dumps(refund)).to_dict() == refund.to_dict()  # noqa: S301
    repr(refund)


@fast
@given(field=st.sampled_from(ARGS), big=huge)
def test_refund_argument_holding_a_huge_int_is_a_field_error(field: str, big: int) -> None:
    fake = FakePreo(auto_purchases=True)
    kw: dict[str, Any] = {"reason": "compensation", "amount": "5.00"}
    purchase: Any = "pur_1"
    if field == "purchase_id":
        purchase = big
    else:
        kw[field] = big

    def call() -> None:
        with fake.client() as client:
            with pytest.raises(RefundValidationError) as caught:
                client.purchases.refund(purchase, **kw)
            assert caught.value.field == field
            run = client.purchases.refund_many(
                [RefundItem(**{"purchase_id": "pur_1", **kw, field: big})], batch_id="b"
            )
            (outcome,) = list(run)
            assert isinstance(outcome.error, RefundValidationError)
            assert outcome.error.field == field

    within_watchdog(call)
    assert fake.requests == []  # nothing was sent


def test_item_fields_with_huge_ints_are_invalid_items_nothing_sent() -> None:
    fake = FakePreo(auto_purchases=True)
    with fake.client() as client:
        for field in ITEM_FIELDS:
            kw: dict[str, Any] = {"purchase_id": "pur_1", "reason": "compensation"}
            kw["amount"] = "5.00"
            kw[field] = 10**5000
            (outcome,) = list(client.purchases.refund_many([RefundItem(**kw)], batch_id="b"))
            assert isinstance(outcome.error, RefundValidationError), field
            assert outcome.error.field == field
    assert fake.requests == []


@fast
@given(path=st.sampled_from(PATHS), big=huge)
def test_from_dict_keeps_a_huge_int_raw_or_names_the_unreadable_body(
    path: tuple[str, ...], big: int
) -> None:
    data = _with(make_refund().to_dict(mode="json"), path, 0)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = big
    if path in (("id",), ("amount",)):
        with pytest.raises(RefundValidationError):
            Refund.from_dict(data)
        return
    refund = within_watchdog(lambda: Refund.from_dict(data))
    _check_refund(refund, path, big)
    if path in (("created",), ("modified",), ("edition_id",)):
        assert path[0] in refund.invalid_fields


@fast
@given(path=st.sampled_from(PATHS), big=huge, use_async=st.booleans())
def test_answer_with_a_huge_int_is_a_refund_when_id_and_amount_read(
    path: tuple[str, ...], big: int, use_async: bool
) -> None:
    fake = FakePreo.demo()
    fake.inject(Fault.with_body(_text(make_refund().to_dict(mode="json"), path, big)))

    def sync_call() -> Refund:
        with fake.client() as client:
            return client.purchases.refund("pur_demo_ticket", reason="sold_out")

    async def async_call() -> Refund:
        async with fake.async_client() as client:
            return await client.purchases.refund("pur_demo_ticket", reason="sold_out")

    def call() -> Refund:
        return asyncio.run(async_call()) if use_async else sync_call()

    if path in (("id",), ("amount",)):
        with pytest.raises(APIResponseValidationOutcomeUnknownError):
            within_watchdog(call)
        return
    _check_refund(within_watchdog(call), path, big)


def test_reported_answer_reproducer() -> None:
    """The review's body: an unknown field holding a 5,000-digit integer."""
    fake = FakePreo.demo()
    body = (
        '{"id":"rr_1","amount":51.50,"scope":"purchase_full","status":"requested",'
        '"note_counter":' + "9" * 5000 + "}"
    ).encode()
    fake.inject(Fault.with_body(body))
    with fake.client() as client:
        refund = client.purchases.refund("pur_demo_ticket", reason="sold_out")
    assert (refund.id, refund.amount) == ("rr_1", Decimal("51.50"))
    assert refund.to_dict()["note_counter"] == Decimal("9" * 5000)


@fast
@given(big=huge, use_async=st.booleans())
def test_numeric_arguments_holding_a_huge_int_are_field_errors(big: int, use_async: bool) -> None:
    """``timeout``, ``max_pause``, ``max_rate``: a huge int (either sign) is refused naming the
    field, before anything is sent (a float conversion or ``repr`` must not escape)."""
    fake = FakePreo.demo()
    calls: list[tuple[str, dict[str, Any]]] = [
        ("timeout", {"timeout": big}),
        ("max_pause", {"max_pause": big}),
        ("max_rate", {"max_rate": big}),
    ]

    async def async_run(field: str, kw: dict[str, Any]) -> None:
        async with fake.async_client() as client:
            if field == "timeout":
                await client.purchases.refund("pur_demo_ticket", reason="sold_out", **kw)
            else:
                run = client.purchases.refund_many(["pur_demo_ticket"], reason="sold_out", **kw)
                await run.run()

    def sync_run(field: str, kw: dict[str, Any]) -> None:
        with fake.client() as client:
            if field == "timeout":
                client.purchases.refund("pur_demo_ticket", reason="sold_out", **kw)
            else:
                client.purchases.refund_many(["pur_demo_ticket"], reason="sold_out", **kw).run()

    for field, kw in calls:
        if field == "max_pause" and big > 0:
            continue  # checked below: a pause limit past a float's range
        with pytest.raises(RefundValidationError) as caught:
            within_watchdog(
                lambda f=field, k=kw: asyncio.run(async_run(f, k)) if use_async else sync_run(f, k)  # type: ignore[misc]
            )
        assert caught.value.field == field
    with pytest.raises(RefundValidationError) as caught:
        sync_run("max_pause", {"max_pause": abs(big)})
    assert caught.value.field == "max_pause"
    assert fake.requests == []
    from preo_client import ConfigurationError, PreoClient

    with pytest.raises(ConfigurationError, match="timeout"):
        PreoClient(api_key="sk_test_1234567890", timeout=big)


# Every public argument of refund() (purchase_id is positional), with a valid base call.
REFUND_ARGS = (
    *ARGS, "idempotency_key", "extra_headers", "extra_body", "extra_query", "timeout",
    "max_retries",
)  # fmt: skip
BASE: dict[str, Any] = {"reason": "compensation", "amount": "5.00"}
# Where a caller's huge int can hide: the value itself, or inside a mapping or a sequence, as a
# value or as a key (str()/repr() of any of them raises ValueError past the digit limit).
holding = st.sampled_from(
    [lambda b: b, lambda b: {b: "x"}, lambda b: {"x": b}, lambda b: {"x": [1, b]},
     lambda b: {"x": {"y": b}}, lambda b: {"x": {b: 1}}, lambda b: [b], lambda b: (b,),
     lambda b: {b: b}]
)  # fmt: skip
# Values of wrong (or odd) types for any argument; some are valid for some arguments.
odd = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.binary(max_size=4)
    | st.decimals() | st.text(max_size=6) | st.builds(object) | st.just(Decimal("sNaN")),
    lambda inner: (
        st.lists(inner, max_size=3) | st.tuples(inner)
        | st.dictionaries(st.integers() | st.text(max_size=4), inner, max_size=3)
        | st.frozensets(st.integers(), max_size=2)
    ),
    max_leaves=6,
)  # fmt: skip


def _refund_with(fake: FakePreo, field: str, value: Any, use_async: bool) -> object:
    """``refund("pur_1", **BASE)`` with ``field`` set to ``value``: the Refund or the error."""
    kw = dict(BASE)
    purchase: Any = "pur_1"
    if field == "purchase_id":
        purchase = value
    else:
        kw[field] = value

    async def async_call() -> object:
        async with fake.async_client() as client:
            return await client.purchases.refund(purchase, **kw)

    def call() -> object:
        try:
            if use_async:
                return asyncio.run(async_call())
            with fake.client() as client:
                return client.purchases.refund(purchase, **kw)
        except RefundValidationError as exc:
            return exc

    return within_watchdog(call)  # any other exception escapes and fails the test


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(REFUND_ARGS), big=huge, where=holding, use_async=st.booleans())
def test_a_huge_int_anywhere_in_any_refund_argument_is_a_field_error(
    field: str, big: int, where: Any, use_async: bool
) -> None:
    """Review round 4 (r1): ``extra_query={"batch": 10**5000}`` escaped as a bare ValueError;
    so could a huge key in ``extra_body`` / ``extra_headers`` / ``extra_query`` (shown in the
    message) and ``max_retries=-10**5000`` (its repr)."""
    fake = FakePreo(auto_purchases=True)
    result = _refund_with(fake, field, where(big), use_async)
    assert isinstance(result, RefundValidationError), result
    assert result.field == field
    assert fake.requests == []  # nothing was sent


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(REFUND_ARGS), value=odd, use_async=st.booleans())
def test_any_value_of_any_refund_argument_is_a_refund_or_its_field_error(
    field: str, value: Any, use_async: bool
) -> None:
    """Whatever an argument holds, refund() ends in a Refund or a RefundValidationError naming
    that argument (nothing sent), never another exception type."""
    fake = FakePreo(auto_purchases=True)
    result = _refund_with(fake, field, value, use_async)
    if isinstance(result, RefundValidationError):
        assert result.field == field
        assert fake.requests == []
    else:
        assert isinstance(result, Refund)
        assert len(fake.requests) == 1


def test_the_reviewed_extra_query_reproducer() -> None:
    fake = FakePreo(auto_purchases=True)
    for use_async in (False, True):
        result = _refund_with(fake, "extra_query", {"batch": 10**5000}, use_async)
        assert isinstance(result, RefundValidationError)
        assert result.field == "extra_query"
        assert "'batch'" in str(result)
    assert fake.requests == []


def test_max_retries_is_bounded_so_a_client_stays_printable() -> None:
    from preo_client import ConfigurationError, PreoClient
    from preo_client._config import MAX_RETRIES

    client = PreoClient(api_key="sk_test_1234567890", max_retries=MAX_RETRIES)
    assert f"max_retries={MAX_RETRIES}" in repr(client)
    for bad in (MAX_RETRIES + 1, 10**5000, -(10**5000)):
        with pytest.raises(ConfigurationError, match="max_retries"):
            PreoClient(api_key="sk_test_1234567890", max_retries=bad)
        with pytest.raises(ConfigurationError, match="max_retries"):
            client.with_options(max_retries=bad)
