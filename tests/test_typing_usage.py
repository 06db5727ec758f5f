"""The typed usage file runs, against the sandbox, and does what its types promise."""

from __future__ import annotations

from decimal import Decimal

from preo_client.testing import FakePreo
from tests import typing_usage


def test_sync_usage_against_the_demo_sandbox() -> None:
    fake = FakePreo.demo()
    with fake.client() as client:
        total = typing_usage.sync_usage(client)
        assert typing_usage.error_handling(client) == "reason"
    assert total == Decimal("51.50") + Decimal("1.25")
    assert [r.purchase_id for r in fake.refunds] == ["pur_demo_ticket", "pur_demo_beer"]


async def test_async_usage_against_the_demo_sandbox() -> None:
    fake = FakePreo.demo()
    async with fake.async_client() as client:
        refund_id = await typing_usage.async_usage(client)
    assert [r.id for r in fake.refunds] == [refund_id]
    assert fake.refunds[0].scope == "transaction_full"
    assert fake.refunds[0].amount == Decimal("56.50")  # ticket 49 + 2.50 fees + cup 3 + 2 deposit


def test_policy_usage() -> None:
    assert typing_usage.policy_usage().scope == "purchase_custom"
