"""Event cancelled: refund whole transactions concurrently with the async client.

    python examples/event_cancelled.py [PURCHASE_ID ...]

``event_cancelled`` derives scope ``transaction_full``: one request per transaction refunds
every purchase in it (ticket, fees, cup deposit).
"""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal

from _common import async_sandbox_or_real

from preo_client import PreoError, Refund


async def main(argv: list[str]) -> int:
    purchase_ids = argv[1:] or ["pur_demo_ticket", "pur_demo_locker"]
    client, fake = async_sandbox_or_real()
    async with client:
        results = await asyncio.gather(
            *(client.purchases.refund(p, reason="event_cancelled") for p in purchase_ids),
            return_exceptions=True,
        )
    total = Decimal(0)
    failures = 0
    for purchase_id, result in zip(purchase_ids, results, strict=True):
        if isinstance(result, Refund):
            total += result.amount
            print(f"{purchase_id}: {result.id} {result.amount:.2f} ({result.scope})")
        elif isinstance(result, PreoError):
            failures += 1
            print(f"{purchase_id}: failed: {result}")
        else:
            raise result
    print(f"refunded {total:.2f} in {len(purchase_ids) - failures} transaction(s)")
    if fake is not None:
        print(f"sandbox ledger: {len(fake.refunds)} refund(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(sys.argv)))
