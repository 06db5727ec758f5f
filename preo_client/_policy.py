"""The refund policy: which scopes each reason allows, and every check made before a request.

Pure logic: no I/O and no HTTP library. The client runs it before sending and the sandbox
(:mod:`preo_client.testing`) runs the very same functions on what it receives.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Mapping
from decimal import Decimal
from enum import Enum
from typing import Final, Literal, TypeAlias

from ._amounts import AmountError, parse_amount
from ._exceptions import RefundValidationError

__all__ = [
    "CUSTOM_SCOPES",
    "POLICY",
    "REASONS",
    "SCOPES",
    "Reason",
    "RefundPlan",
    "Scope",
    "check_comment",
    "check_pickup_point_id",
    "check_purchase_id",
    "plan_refund",
]

Reason: TypeAlias = Literal[
    "deposit_reclaim",
    "sold_out",
    "event_cancelled",
    "product_defect",
    "duplicate_purchase",
    "customer_request",
    "compensation",
    "overcharge",
    "other",
    "rental_return",
]
Scope: TypeAlias = Literal[
    "purchase_price",
    "purchase_deposit",
    "purchase_full",
    "purchase_custom",
    "transaction_full",
    "transaction_custom",
]

SCOPES: Final[tuple[Scope, ...]] = (
    "purchase_price",
    "purchase_deposit",
    "purchase_full",
    "purchase_custom",
    "transaction_full",
    "transaction_custom",
)
_VISIBLE_ASCII: Final = re.compile(r"[!-~]+")
CUSTOM_SCOPES: Final[frozenset[Scope]] = frozenset({"purchase_custom", "transaction_custom"})

# reason -> (default scope, every allowed scope with the default first). The one table.
POLICY: Final[Mapping[Reason, tuple[Scope, ...]]] = {
    "deposit_reclaim": ("purchase_deposit",),
    "rental_return": ("purchase_deposit", "purchase_custom"),
    "sold_out": ("purchase_full", "purchase_price"),
    "event_cancelled": ("transaction_full", "purchase_full"),
    "product_defect": ("purchase_price", "purchase_full", "purchase_custom"),
    "duplicate_purchase": ("purchase_full", "transaction_full"),
    "customer_request": ("purchase_price", "purchase_full", "purchase_custom"),
    "compensation": ("purchase_custom", "transaction_custom"),
    "overcharge": ("purchase_custom", "transaction_custom"),
    "other": ("purchase_custom", *(s for s in SCOPES if s != "purchase_custom")),
}
REASONS: Final[tuple[Reason, ...]] = tuple(POLICY)


@dataclasses.dataclass(frozen=True, slots=True)
class RefundPlan:
    """What will be sent: the reason, the scope (derived or checked) and the exact amount."""

    reason: Reason
    scope: Scope
    amount: Decimal | None = None


def _value(value: object) -> object:
    return value.value if isinstance(value, Enum) else value


def _choose(field: str, value: object, allowed: tuple[str, ...]) -> str:
    value = _value(value)
    if isinstance(value, str) and value in allowed:
        return value
    listed = ", ".join(allowed)
    if not isinstance(value, str):
        raise RefundValidationError(
            field, f"must be a string, one of: {listed}; got {type(value).__name__}"
        )
    hint = ""
    folded = value.strip().lower().replace("-", "_").replace(" ", "_")
    import difflib  # only on the error path

    close = [folded] if folded in allowed else difflib.get_close_matches(folded, allowed, n=1)
    if close:
        hint = f" Did you mean {close[0]!r}?"
    raise RefundValidationError(field, f"unknown value {value!r}; allowed: {listed}.{hint}")


def plan_refund(
    reason: Reason | str | Enum,
    scope: Scope | str | Enum | None = None,
    amount: Decimal | int | str | float | None = None,
) -> RefundPlan:
    """Check a refund request and fill in what the API derives.

    ``reason`` must be one of :data:`REASONS`. ``scope`` defaults to the reason's default scope
    and, when given, must be one the reason allows. Custom scopes need an ``amount``; the
    others forbid one, since the server calculates it.
    """
    checked_reason: Reason = _choose("reason", reason, REASONS)  # type: ignore[assignment]
    allowed = POLICY[checked_reason]
    if scope is None:
        checked_scope = allowed[0]
    else:
        checked_scope = _choose("scope", scope, SCOPES)  # type: ignore[assignment]
        if checked_scope not in allowed:
            raise RefundValidationError(
                "scope",
                f"{checked_scope!r} is not allowed for reason {checked_reason!r}; "
                f"allowed: {', '.join(allowed)}",
            )
    if checked_scope not in CUSTOM_SCOPES:
        if amount is not None:
            raise RefundValidationError(
                "amount",
                f"must not be given for scope {checked_scope!r}: the server calculates it; "
                f"amounts go with {' or '.join(sorted(CUSTOM_SCOPES))}",
            )
        return RefundPlan(checked_reason, checked_scope)
    if amount is None:
        raise RefundValidationError("amount", f"is required for scope {checked_scope!r}")
    try:
        exact = parse_amount(amount)
    except AmountError as exc:
        raise RefundValidationError("amount", str(exc)) from None
    return RefundPlan(checked_reason, checked_scope, exact)


MAX_ID_LENGTH: Final = 255
MAX_COMMENT_LENGTH: Final = 10_000


def _encodable(field: str, text: str) -> str:
    """``text`` if it can be sent as UTF-8 (no lone surrogates), else raise."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RefundValidationError(
            field, "must be valid Unicode text (it contains a lone surrogate)"
        ) from None
    return text


def check_purchase_id(purchase_id: object) -> str:
    """Return ``purchase_id`` if it is safe as one URL path segment, else raise."""
    if not isinstance(purchase_id, str):
        raise RefundValidationError(
            "purchase_id", f"must be a string, got {type(purchase_id).__name__}"
        )
    if not purchase_id:
        raise RefundValidationError("purchase_id", "must not be empty")
    if len(purchase_id) > MAX_ID_LENGTH:
        raise RefundValidationError(
            "purchase_id", f"must be at most {MAX_ID_LENGTH} characters, got {len(purchase_id)}"
        )
    if purchase_id in (".", ".."):
        raise RefundValidationError(
            "purchase_id", f"{purchase_id!r} is not a purchase id (it would change the URL)"
        )
    if _VISIBLE_ASCII.fullmatch(purchase_id):  # the common case, checked without a loop
        return purchase_id
    if any(c.isspace() or unicodedata.category(c).startswith("C") for c in purchase_id):
        raise RefundValidationError(
            "purchase_id", "must not contain whitespace, control characters or lone surrogates"
        )
    return purchase_id


def check_comment(comment: object) -> str | None:
    """Return ``comment`` if it is ``None`` or valid Unicode text of at most 10,000 characters."""
    if comment is None:
        return None
    if not isinstance(comment, str):
        raise RefundValidationError("comment", f"must be a string, got {type(comment).__name__}")
    if len(comment) > MAX_COMMENT_LENGTH:
        raise RefundValidationError(
            "comment", f"must be at most {MAX_COMMENT_LENGTH} characters, got {len(comment)}"
        )
    return _encodable("comment", comment)


def check_pickup_point_id(pickup_point_id: object) -> str | None:
    """Return ``pickup_point_id`` if it is ``None`` or a non-empty string, else raise."""
    if pickup_point_id is None:
        return None
    if isinstance(pickup_point_id, str) and pickup_point_id.strip():
        if len(pickup_point_id) > MAX_ID_LENGTH:
            raise RefundValidationError(
                "pickup_point_id", f"must be at most {MAX_ID_LENGTH} characters"
            )
        return _encodable("pickup_point_id", pickup_point_id)
    # Name the type, not the value, for a non-string: repr() of an int past Python's
    # 4,300-digit limit raises ValueError, and a field error must stay a field error.
    got = type(pickup_point_id).__name__
    if isinstance(pickup_point_id, str):
        got = repr(pickup_point_id)
    raise RefundValidationError("pickup_point_id", f"must be a non-empty string, got {got}")
