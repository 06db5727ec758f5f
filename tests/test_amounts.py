"""Amounts: exact two-place money in, the same value out on the wire (tables and Hypothesis)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from preo_client import MAX_AMOUNT, RefundValidationError, plan_refund
from preo_client._amounts import AmountError, parse_amount

cents = st.integers(min_value=1, max_value=int(MAX_AMOUNT * 100))


@pytest.mark.parametrize(
    ("given_value", "expected"),
    [
        (Decimal("12.50"), Decimal("12.50")),
        (Decimal("12.5"), Decimal("12.50")),
        (Decimal("12.500"), Decimal("12.50")),
        (12, Decimal("12.00")),
        ("0.01", Decimal("0.01")),
        ("12.5", Decimal("12.50")),
        (12.5, Decimal("12.50")),
        (0.1, Decimal("0.10")),
        (MAX_AMOUNT, MAX_AMOUNT),
    ],
)
def test_accepted(given_value: object, expected: Decimal) -> None:
    amount = parse_amount(given_value)
    assert amount == expected
    assert amount.as_tuple().exponent == -2


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (True, "not bool"),
        (False, "not bool"),
        (0, "greater than 0"),
        (-1, "greater than 0"),
        (Decimal("-0.01"), "greater than 0"),
        (Decimal("0.001"), "at most 2 decimal places"),
        ("12.345", "at most 2 decimal places"),
        (Decimal("NaN"), "finite"),
        (Decimal("Infinity"), "finite"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        ("NaN", "decimal string"),
        ("1e3", "decimal string"),
        ("12,50", "decimal string"),
        (" 12.50", "decimal string"),
        ("", "decimal string"),
        (0.1 + 0.2, 'Decimal("0.30")'),
        (1e-7, "below the smallest amount, 0.01"),
        (MAX_AMOUNT + Decimal("0.01"), "at most"),
        (None, "not NoneType"),
        ([1], "not list"),
    ],
)
def test_refused(bad: object, words: str) -> None:
    with pytest.raises(AmountError) as info:
        parse_amount(bad)
    assert words in str(info.value)


def test_plan_refund_names_the_amount_field() -> None:
    with pytest.raises(RefundValidationError) as info:
        plan_refund("compensation", amount=0.1 + 0.2)
    assert info.value.field == "amount"
    assert str(info.value).startswith("amount: ")
    assert 'Decimal("0.30")' in str(info.value)


@given(cents)
def test_any_two_place_amount_survives_the_wire_exactly(n: int) -> None:
    amount = Decimal(n).scaleb(-2)
    plan = plan_refund("compensation", amount=amount)
    assert plan.amount == amount
    # What the client sends: the float of the exact amount, as a JSON number.
    wire = json.dumps({"amount": float(plan.amount)})
    assert json.loads(wire, parse_float=Decimal)["amount"] == amount


@given(cents)
def test_str_int_and_decimal_forms_agree(n: int) -> None:
    amount = Decimal(n).scaleb(-2)
    assert parse_amount(str(amount)) == parse_amount(amount) == amount
    if n % 100 == 0:
        assert parse_amount(n // 100) == amount


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_floats_are_accepted_only_when_exactly_two_place(value: float) -> None:
    try:
        amount = parse_amount(value)
    except AmountError:
        text = repr(value)
        assert (
            value != value
            or value <= 0
            or value > float(MAX_AMOUNT)
            or "e" in text
            or len(text.split(".")[1]) > 2
        )
    else:
        assert Decimal(repr(value)) == amount
        assert amount > 0


@given(st.decimals(allow_nan=False, allow_infinity=False, places=3))
def test_three_place_decimals_need_a_zero_third_place(value: Decimal) -> None:
    try:
        amount = parse_amount(value)
    except AmountError:
        assert value <= 0 or value > MAX_AMOUNT or value != value.quantize(Decimal("0.01"))
    else:
        assert amount == value
