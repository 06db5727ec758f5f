"""Create one refund request and print it.

With no PREO_API_KEY set this runs against an in-process sandbox seeded with demo purchases
(no network needed). With PREO_API_KEY (and optionally PREO_BASE_URL) it calls the real API:

    PREO_API_KEY=... python examples/quickstart.py PURCHASE_ID [REASON]
"""

from __future__ import annotations

import os
import sys

from preo_client import PreoClient, PreoError
from preo_client.testing import FakePreo


def main(argv: list[str]) -> int:
    purchase_id = argv[1] if len(argv) > 1 else "pur_demo_ticket"
    reason = argv[2] if len(argv) > 2 else "sold_out"
    if os.environ.get("PREO_API_KEY"):
        client = PreoClient()
        where = client.base_url
    else:
        client = FakePreo.demo().client()
        where = "the embedded sandbox (no PREO_API_KEY set)"
    print(f"Refunding {purchase_id} (reason={reason}) against {where}")
    with client:
        try:
            refund = client.purchases.refund(purchase_id, reason=reason)
        except PreoError as exc:
            print(f"Refund failed: {exc}", file=sys.stderr)
            return 1
    scope = getattr(refund.scope, "value", refund.scope)
    status = getattr(refund.status, "value", refund.status)
    print(f"  id:       {refund.id}")
    print(f"  scope:    {scope}")
    print(f"  amount:   {refund.amount:.2f}")
    print(f"  status:   {status}")
    print(f"  created:  {refund.created.isoformat() if refund.created else '-'}")
    print(f"  idempotency key: {refund.idempotency_key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
