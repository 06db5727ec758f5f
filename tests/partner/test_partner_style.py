"""A partner's contract test, exactly as the README shows it: only the plugin's fixtures.

(Run by tests/test_plugin.py in a separate pytest process, as a partner's suite would run.)
"""

from decimal import Decimal

import pytest

from preo_client import BadRequestError, NotFoundError, RateLimitError, RefundValidationError
from preo_client.testing import Fault


def test_refunds_and_errors(fake_preo, preo):
    fake_preo.add_purchase("pur_1", price="20.00", deposit="2.00", fees="1.00")

    refund = preo.purchases.refund("pur_1", reason="sold_out")
    assert refund.amount == Decimal("23.00")  # purchase_full: price + deposit + fees
    assert refund.scope == "purchase_full"

    with pytest.raises(BadRequestError) as over:  # nothing left to refund
        preo.purchases.refund("pur_1", reason="compensation", amount=Decimal("0.01"))
    assert "amount" in over.value.field_errors

    with pytest.raises(NotFoundError):
        preo.purchases.refund("pur_unknown", reason="sold_out")

    with pytest.raises(RefundValidationError):  # refused before any request
        preo.purchases.refund("pur_1", reason="sold-out")

    fake_preo.inject(Fault.http_status(429), Fault.http_status(429), Fault.http_status(429))
    with pytest.raises(RateLimitError):
        preo.purchases.refund("pur_1", reason="deposit_reclaim")

    assert [r.purchase_id for r in fake_preo.refunds] == ["pur_1"]
    assert len(fake_preo.refunds_for("pur_1")) == 1
    assert len(fake_preo.requests) == 1 + 1 + 1 + 3  # the invalid call sent nothing


async def test_async_refund(fake_preo, async_preo):
    fake_preo.add_purchase("pur_2", price="5.00", transaction_id="tx")
    fake_preo.add_purchase("pur_3", price="7.50", transaction_id="tx")
    refund = await async_preo.purchases.refund("pur_2", reason="event_cancelled")
    assert refund.amount == Decimal("12.50")  # the whole transaction
