"""The refund policy: exhaustive tables over reasons x scopes, and every argument rule."""

from __future__ import annotations

import ast
import itertools
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from preo_client import (
    POLICY,
    REASONS,
    SCOPES,
    PreoError,
    RefundPlan,
    RefundReason,
    RefundScope,
    RefundValidationError,
    plan_refund,
)
from preo_client._policy import check_comment, check_pickup_point_id, check_purchase_id

# The table of the issue, written out independently of the implementation's table.
EXPECTED: dict[str, tuple[str, set[str]]] = {
    "deposit_reclaim": ("purchase_deposit", set()),
    "rental_return": ("purchase_deposit", {"purchase_custom"}),
    "sold_out": ("purchase_full", {"purchase_price"}),
    "event_cancelled": ("transaction_full", {"purchase_full"}),
    "product_defect": ("purchase_price", {"purchase_full", "purchase_custom"}),
    "duplicate_purchase": ("purchase_full", {"transaction_full"}),
    "customer_request": ("purchase_price", {"purchase_full", "purchase_custom"}),
    "compensation": ("purchase_custom", {"transaction_custom"}),
    "overcharge": ("purchase_custom", {"transaction_custom"}),
    "other": ("purchase_custom", set(SCOPES)),
}
CUSTOM = {"purchase_custom", "transaction_custom"}


def test_table_is_the_documented_one() -> None:
    assert set(POLICY) == set(EXPECTED) == set(REASONS)
    for reason, (default, also) in EXPECTED.items():
        assert POLICY[reason][0] == default  # type: ignore[index]
        assert set(POLICY[reason]) == {default} | also  # type: ignore[index]


@pytest.mark.parametrize("reason", list(EXPECTED))
def test_default_scope_is_derived(reason: str) -> None:
    default = EXPECTED[reason][0]
    amount = Decimal("1.00") if default in CUSTOM else None
    plan = plan_refund(reason, amount=amount)
    assert plan == RefundPlan(reason, default, amount)  # type: ignore[arg-type]


@pytest.mark.parametrize(("reason", "scope"), list(itertools.product(EXPECTED, SCOPES)))
def test_every_reason_scope_pair(reason: str, scope: str) -> None:
    default, also = EXPECTED[reason]
    allowed = {default} | also
    amount = Decimal("5") if scope in CUSTOM else None
    if scope in allowed:
        plan = plan_refund(reason, scope, amount)
        assert (plan.reason, plan.scope, plan.amount) == (reason, scope, amount)
    else:
        with pytest.raises(RefundValidationError) as info:
            plan_refund(reason, scope, amount)
        assert info.value.field == "scope"
        assert f"not allowed for reason {reason!r}" in str(info.value)
        for name in allowed:  # the message names the allowed values
            assert name in str(info.value)


@pytest.mark.parametrize(("reason", "scope"), list(itertools.product(EXPECTED, SCOPES)))
def test_amount_goes_with_custom_scopes_only(reason: str, scope: str) -> None:
    default, also = EXPECTED[reason]
    if scope not in {default} | also:
        return
    if scope in CUSTOM:
        with pytest.raises(RefundValidationError, match="is required") as info:
            plan_refund(reason, scope)
    else:
        with pytest.raises(RefundValidationError, match="server calculates it") as info:
            plan_refund(reason, scope, Decimal("1.00"))
    assert info.value.field == "amount"


def test_enum_members_are_accepted_and_plans_hold_plain_strings() -> None:
    plan = plan_refund(RefundReason.OTHER, RefundScope.TRANSACTION_FULL)
    assert plan == RefundPlan("other", "transaction_full")
    assert type(plan.reason) is str
    assert type(plan.scope) is str


@pytest.mark.parametrize(
    ("given", "field", "hint"),
    [
        ("sold-out", "reason", "sold_out"),
        ("SOLD_OUT", "reason", "sold_out"),
        ("Sold Out", "reason", "sold_out"),
        ("event_canceled", "reason", "event_cancelled"),
        ("refund", "reason", None),
    ],
)
def test_near_misses_are_refused_with_a_hint(given: str, field: str, hint: str | None) -> None:
    with pytest.raises(RefundValidationError) as info:
        plan_refund(given)
    message = str(info.value)
    assert info.value.field == field
    assert "allowed: deposit_reclaim, rental_return, sold_out" in message
    if hint:
        assert f"Did you mean {hint!r}?" in message
    else:
        assert "Did you mean" not in message


def test_unknown_scope_names_the_scopes() -> None:
    with pytest.raises(RefundValidationError) as info:
        plan_refund("other", "purchase-full")
    assert info.value.field == "scope"
    assert "Did you mean 'purchase_full'?" in str(info.value)
    assert ", ".join(SCOPES) in str(info.value)


@pytest.mark.parametrize("bad", [None, 3, b"sold_out", ["sold_out"]])
def test_non_string_reason(bad: object) -> None:
    with pytest.raises(RefundValidationError, match="must be a string") as info:
        plan_refund(bad)  # type: ignore[arg-type]
    assert info.value.field == "reason"


def test_validation_error_is_a_value_error_and_a_preo_error() -> None:
    with pytest.raises(ValueError, match="reason"):
        plan_refund("nope")
    with pytest.raises(PreoError):
        plan_refund("nope")


@pytest.mark.parametrize("good", ["pur_123", "PUR-1", "a", "ä€", "x" * 255, "a/b", "%2e%2e", "..."])
def test_purchase_ids_accepted(good: str) -> None:
    assert check_purchase_id(good) == good


@pytest.mark.parametrize(
    "bad", ["", ".", "..", "pur 1", "pur\n1", "pur\t", "a\x00b", "a\x7fb", "\u200bx", None, 12]
)
def test_purchase_ids_refused(bad: object) -> None:
    with pytest.raises(RefundValidationError) as info:
        check_purchase_id(bad)
    assert info.value.field == "purchase_id"


def test_comment_and_pickup_point() -> None:
    assert check_comment(None) is None
    assert check_comment("") == ""
    assert check_pickup_point_id("pp_1") == "pp_1"
    with pytest.raises(RefundValidationError, match="comment"):
        check_comment(42)
    for bad in ("", "  ", 5):
        with pytest.raises(RefundValidationError, match="pickup_point_id"):
            check_pickup_point_id(bad)


@pytest.mark.parametrize("module", ["_policy", "_amounts", "_retry"])
def test_pure_modules_import_no_http_library(module: str) -> None:
    path = Path(sys.modules["preo_client"].__file__ or "").parent / f"{module}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 0
    }
    assert not imported & {"httpx", "httpcore", "socket", "urllib", "requests", "asyncio"}
