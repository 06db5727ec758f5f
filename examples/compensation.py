"""A custom-amount refund: compensate a customer EUR 1.25 for a late bar opening.

python examples/compensation.py [PURCHASE_ID]
"""

from __future__ import annotations

import sys
from decimal import Decimal

from _common import sandbox_or_real

from preo_client import idempotency_key_for


def main(argv: list[str]) -> int:
    purchase_id = argv[1] if len(argv) > 1 else "pur_demo_beer"
    client, _ = sandbox_or_real()
    with client:
        refund = client.purchases.refund(
            purchase_id,
            reason="compensation",  # default scope purchase_custom: an amount is required
            amount=Decimal("1.25"),
            comment="Late bar opening",
            # Same purchase + same business reference = same key, even after a restart.
            idempotency_key=idempotency_key_for(purchase_id, "late-bar-2026-07-04"),
        )
    print(f"compensation {refund.id}: {refund.amount:.2f} on {purchase_id} ({refund.comment})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
