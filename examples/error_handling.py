"""Handling every kind of failure: bad input, unknown purchase, over-refund, rate limit.

    python examples/error_handling.py

Runs against the sandbox (it injects the 429 itself), so it needs no API key.
"""

from __future__ import annotations

from decimal import Decimal

from preo_client import (
    BadRequestError,
    NotFoundError,
    PreoClient,
    RateLimitError,
    RefundOutcomeUnknownError,
    RefundValidationError,
)
from preo_client.testing import FakePreo, Fault


def refund_safely(client: PreoClient, purchase_id: str, **kwargs: object) -> str:
    try:
        refund = client.purchases.refund(purchase_id, **kwargs)  # type: ignore[arg-type]
    except RefundValidationError as exc:  # raised before any request was sent
        return f"invalid {exc.field}: {exc}"
    except NotFoundError as exc:
        return f"no such purchase (request {exc.request_id})"
    except BadRequestError as exc:  # the server refused the body; field errors say why
        return f"refused: {exc.field_errors}"
    except RateLimitError as exc:  # retried already; the server still says slow down
        return f"rate limited, retry after {exc.retry_after}s"
    except RefundOutcomeUnknownError as exc:  # the refund may exist: retry with the same key
        return f"outcome unknown, retry with idempotency key {exc.idempotency_key}"
    return f"refunded {refund.amount:.2f} ({refund.id})"


def main() -> int:
    fake = FakePreo.demo()
    with fake.client(max_retries=1) as client:
        print("validation: ", refund_safely(client, "pur_demo_beer", reason="sold-out"))
        print("not found:  ", refund_safely(client, "pur_missing", reason="sold_out"))
        print("ok:         ", refund_safely(client, "pur_demo_locker", reason="deposit_reclaim"))
        print(
            "over-refund:",
            refund_safely(
                client, "pur_demo_locker", reason="rental_return", scope="purchase_custom",
                amount=Decimal("50.00"),
            ),
        )  # fmt: skip
        fake.inject(Fault.http_status(429, retry_after="120"))  # above the 60 s cap: not waited
        print("rate limit: ", refund_safely(client, "pur_demo_beer", reason="sold_out"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
