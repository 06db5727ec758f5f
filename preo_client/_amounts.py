"""Exact money: turning what a caller passes as an amount into a checked two-place Decimal."""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, InvalidOperation
from typing import Final, TypeAlias

__all__ = [
    "MAX_AMOUNT",
    "AmountError",
    "AmountInput",
    "amount_text",
    "exact_add",
    "exact_sum",
    "parse_amount",
    "suggest_decimal",
]

AmountInput: TypeAlias = Decimal | int | str | float

CENT = Decimal("0.01")
# Fifteen significant digits: every two-place value up to this survives the JSON number on the
# wire exactly (a double carries 15 decimal digits), so what is sent is what was asked for.
MAX_AMOUNT = Decimal("9999999999999.99")
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")  # ASCII digits only


# A context in which adding finite Decimals is exact whatever their size (the default context
# rounds to 28 digits): libmpdec only allocates the digits a result needs.
_EXACT: Final = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)


def exact_add(a: Decimal, b: Decimal) -> Decimal:
    """``a + b`` with no rounding, whatever the size of either."""
    return _EXACT.add(a, b)


def exact_sum(values: Iterable[Decimal]) -> Decimal:
    """The exact sum of ``values`` (``Decimal(0)`` for none)."""
    total = Decimal(0)
    for value in values:
        total = _EXACT.add(total, value)
    return total


class AmountError(ValueError):
    """An amount that is not an exact, positive, two-place money value (message says why)."""


def suggest_decimal(value: float) -> str:
    """Return the ``Decimal("...")`` a caller most likely meant for a float with float noise."""
    return f'Decimal("{Decimal(float.__repr__(value)).quantize(CENT)}")'


def parse_amount(value: object) -> Decimal:
    """Return ``value`` as a Decimal quantized to cents, or raise AmountError.

    Accepted: ``Decimal``, ``int`` and decimal ``str`` (``"12.50"``); a ``float`` only when its
    shortest representation already has at most two decimal places (``12.5`` yes,
    ``0.1 + 0.2`` no). ``bool`` is refused even though it is an ``int``. The value must be
    finite, greater than zero, at most :data:`MAX_AMOUNT`, with at most two decimal places.
    """
    if isinstance(value, bool):
        raise AmountError(f"must be a Decimal, int or decimal string, not bool ({value!r})")
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, str):
        if not _DECIMAL_TEXT.fullmatch(value):
            raise AmountError(f"must be a decimal string such as '12.50', got {value!r}")
        amount = Decimal(value)
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise AmountError(f"must be finite, got {value!r}")
        # The float's shortest form is what the caller wrote (12.5 -> "12.5"); only a value
        # whose shortest form already has at most two places is taken as exact money.
        amount = Decimal(float.__repr__(value))  # a subclass (numpy) may repr otherwise
        if amount > 0 and amount.as_tuple().exponent < -2:  # type: ignore[operator]
            if amount < CENT:
                raise AmountError(
                    f"float {value!r} is below the smallest amount, 0.01; pass a Decimal "
                    'such as Decimal("0.01")'
                )
            raise AmountError(
                f"float {value!r} is not an exact two-place amount; "
                f"pass {suggest_decimal(value)} instead"
            )
    else:
        raise AmountError(f"must be a Decimal, int or decimal string, not {type(value).__name__}")
    if not amount.is_finite():
        raise AmountError(f"must be finite, got {value!r}")
    if amount <= 0:
        raise AmountError(f"must be greater than 0, got {amount}")
    if amount > MAX_AMOUNT:
        raise AmountError(f"must be at most {MAX_AMOUNT}, got {amount}")
    try:
        quantized = amount.quantize(CENT)
    except InvalidOperation as exc:  # pragma: no cover - guarded by MAX_AMOUNT above
        raise AmountError(f"is not a valid amount: {amount}") from exc
    if quantized != amount:
        raise AmountError(f"must have at most 2 decimal places, got {amount}")
    return quantized


def amount_text(amount: Decimal) -> str:
    """The one written form of an amount: exact fixed-point decimal text with at least two
    places (``"51.50"``, ``"0.00"``; ``"12.345"`` when the server sent three), never rounded,
    never an exponent. ``to_dict(mode="json")`` and the CLI write it as a string, ``to_json()``
    as a JSON number with the same digits."""
    if amount.is_finite() and amount.as_tuple().exponent > -2:  # type: ignore[operator]
        amount = _EXACT.quantize(amount, CENT)  # only adds zeros: exact, whatever the size
    return format(amount, "f")
