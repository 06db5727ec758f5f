"""Type-checked by `mypy --strict` (see pyproject): the public API as a partner would use it.

Also run by the suite (tests/test_typing_usage.py) against the sandbox, so it stays true.
"""

from __future__ import annotations

import datetime
from decimal import Decimal

import httpx

from preo_client import (
    APIStatusError,
    AsyncPreoClient,
    BadRequestError,
    PreoClient,
    RateLimitError,
    Refund,
    RefundOutcomeUnknownError,
    RefundPlan,
    RefundReason,
    RefundScope,
    RefundStatus,
    RefundValidationError,
    idempotency_key_for,
    plan_refund,
)


def sync_usage(client: PreoClient) -> Decimal:
    refund: Refund = client.purchases.refund("pur_demo_ticket", reason="sold_out")
    amount: Decimal = refund.amount
    created: datetime.datetime | None = refund.created
    status: RefundStatus | str | None = refund.status
    scope: RefundScope | str | None = refund.scope
    raw: httpx.Response = refund.http_response
    assert created is not None
    assert created.tzinfo is not None
    assert status is not None
    assert scope is not None
    assert raw.status_code == 201
    custom = client.with_options(max_retries=0).purchases.refund(
        "pur_demo_beer",
        reason=RefundReason.COMPENSATION,
        scope=RefundScope.PURCHASE_CUSTOM,
        amount=Decimal("1.25"),
        comment="Late bar opening",
        idempotency_key=idempotency_key_for("pur_demo_beer", "ticket-4711"),
        timeout=10.0,
    )
    return amount + custom.amount


def error_handling(client: PreoClient) -> str:
    try:
        client.purchases.refund("pur_demo_ticket", reason="sold-out")  # type: ignore[arg-type]
    except RefundValidationError as exc:
        return exc.field
    except BadRequestError as exc:
        fields: dict[str, list[str]] = exc.field_errors
        return ",".join(fields)
    except RateLimitError as exc:
        wait: float | None = exc.retry_after
        return str(wait)
    except RefundOutcomeUnknownError as exc:
        key: str | None = exc.idempotency_key
        return str(key)
    except APIStatusError as exc:
        return f"{exc.status_code} {exc.request_id}"
    return ""


async def async_usage(client: AsyncPreoClient) -> str:
    refund = await client.purchases.refund("pur_demo_cup", reason="event_cancelled")
    return refund.id


def policy_usage() -> RefundPlan:
    plan = plan_refund("compensation", amount="12.50")
    assert plan.amount == Decimal("12.50")
    return plan
