"""Invariants under random faults: never a duplicate refund, always a refund or a typed error."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from preo_client import (
    APIResponseValidationError,
    Backoff,
    PreoClient,
    PreoError,
    Refund,
    RefundOutcomeUnknownError,
)
from preo_client import _client as client_module
from preo_client.testing import FakePreo, Fault
from preo_client.testing._fake import CHAOS_FAULTS

NO_WAIT = Backoff(base=0, cap=0)
ALL_FAULTS = [
    *CHAOS_FAULTS,
    Fault.malformed_json(),
    Fault.truncated_json(),
    Fault.http_status(400),
    Fault.http_status(409),
    Fault.edit_json(drop=("id",)),
]


async def _no_sleep(seconds: float) -> None:
    return None


def test_chaos_2000_async_refunds_no_duplicates(monkeypatch: Any) -> None:
    monkeypatch.setattr(client_module, "_async_sleep", _no_sleep)
    fake = FakePreo()
    count = 2000
    for i in range(count):
        fake.add_purchase(f"pur_{i}", price="10.00", deposit="1.00")
    fake.chaos(0.10, seed=20261129)

    async def run() -> list[Refund | BaseException]:
        limit = asyncio.Semaphore(64)
        async with fake.async_client(backoff=NO_WAIT, retry_unknown_outcome=True) as client:

            async def one(i: int) -> Refund:
                async with limit:
                    return await client.purchases.refund(f"pur_{i}", reason="sold_out")

            return await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)

    results = asyncio.run(run())
    per_purchase = collections.Counter(r.purchase_id for r in fake.refunds)
    per_key = collections.Counter(r.idempotency_key for r in fake.refunds)
    assert max(per_purchase.values()) == 1, "a purchase was refunded twice"
    assert max(per_key.values()) == 1
    errors = [r for r in results if not isinstance(r, Refund)]
    assert all(isinstance(e, PreoError) for e in errors), {type(e) for e in errors}
    succeeded = [r for r in results if isinstance(r, Refund)]
    assert len(succeeded) + len(errors) == count
    assert len(succeeded) > count * 0.95  # retries absorbed nearly all faults
    assert {r.id for r in succeeded} <= {r.id for r in fake.refunds}
    assert len(fake.requests) > count  # faults really struck and were retried
    assert len(fake.requests) <= count * 3  # never more than 1 + max_retries attempts per call


class FaultSequences(RuleBasedStateMachine):
    """Random fault sequences against one client; the ledger must stay consistent."""

    def __init__(self) -> None:
        super().__init__()
        self.fake = FakePreo()
        self.retry_unknown = False
        self.client = self._client()
        self.outcomes: dict[str, Refund | PreoError] = {}
        self.next_id = 0

    def _client(self) -> PreoClient:
        return self.fake.client(backoff=NO_WAIT, retry_unknown_outcome=self.retry_unknown)

    @rule(faults=st.lists(st.sampled_from(ALL_FAULTS), max_size=4))
    def inject(self, faults: list[Fault]) -> None:
        self.fake.inject(*faults)

    @rule()
    def toggle_retry_unknown(self) -> None:
        self.retry_unknown = not self.retry_unknown
        self.client = self._client()

    @rule(reason=st.sampled_from(["sold_out", "deposit_reclaim", "compensation"]))
    def refund(self, reason: str) -> None:
        purchase_id = f"pur_{self.next_id}"
        self.next_id += 1
        self.fake.add_purchase(purchase_id, price="10.00", deposit="2.00")
        before = len(self.fake.requests)
        amount = "1.50" if reason == "compensation" else None
        try:
            outcome: Refund | PreoError = self.client.purchases.refund(
                purchase_id, reason=reason, amount=amount
            )
        except PreoError as exc:  # anything else escapes and fails the test
            outcome = exc
        self.outcomes[purchase_id] = outcome
        sent = self.fake.requests[before:]
        assert 1 <= len(sent) <= 1 + self.client.max_retries
        assert len({r.headers["idempotency-key"] for r in sent}) == 1
        assert len({r.content for r in sent}) == 1
        ledger = self.fake.refunds_for(purchase_id)
        if isinstance(outcome, Refund):
            assert [r.id for r in ledger] == [outcome.id]
        elif not isinstance(outcome, RefundOutcomeUnknownError | APIResponseValidationError):
            assert ledger == [], f"{type(outcome).__name__} but a refund exists"

    @invariant()
    def never_two_refunds_for_one_purchase_or_key(self) -> None:
        purchases = collections.Counter(r.purchase_id for r in self.fake.refunds)
        keys = collections.Counter(r.idempotency_key for r in self.fake.refunds)
        assert all(n == 1 for n in purchases.values())
        assert all(n == 1 for n in keys.values())


FaultSequences.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_fault_sequences = FaultSequences.TestCase
