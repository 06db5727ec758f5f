"""Event cancelled: refund whole transactions with a bulk run on the async client.

    python examples/event_cancelled.py [PURCHASE_ID[:TRANSACTION_ID] ...]

``event_cancelled`` derives scope ``transaction_full``: one request refunds every purchase of
the transaction (ticket, fees, cup deposit). Giving each purchase its transaction id lets the
run send one request per transaction and report the other purchases as covered by it; without
it, the second purchase of a transaction would fail with "Already refunded".
"""

from __future__ import annotations

import asyncio
import sys

from _common import async_sandbox_or_real

from preo_client import RefundItem

DEFAULT = ["pur_demo_ticket:tx_demo", "pur_demo_cup:tx_demo", "pur_demo_locker"]


async def main(argv: list[str]) -> int:
    items = []
    for arg in argv[1:] or DEFAULT:
        purchase_id, _, transaction_id = arg.partition(":")
        items.append(RefundItem(purchase_id, transaction_id=transaction_id or None))
    client, fake = async_sandbox_or_real()
    async with client:
        run = client.purchases.refund_many(items, reason="event_cancelled", concurrency=8)
        async for outcome in run:
            purchase_id = outcome.item.purchase_id
            if outcome.covered_by is not None:
                leader = items[outcome.covered_by].purchase_id
                print(f"{purchase_id}: covered by the refund of {leader}'s transaction")
            elif outcome.refund is not None:
                refund = outcome.refund
                print(f"{purchase_id}: {refund.id} {refund.amount:.2f} ({refund.scope})")
            else:
                print(f"{purchase_id}: failed: {outcome.error}")
                if outcome.note:
                    print(f"  hint: {outcome.note}")
    summary = run.summary
    print(f"refunded {summary.total_amount:.2f} in {summary.succeeded} transaction(s)")
    if fake is not None:
        print(f"sandbox ledger: {len(fake.refunds)} refund(s)")
    return 1 if summary.failures else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(sys.argv)))
