"""Escape hatches: per-call ``extra_body`` / ``extra_query`` reach the wire exactly, the same
bytes on every retry, and can never set a field the refund policy decides."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preo_client import RefundValidationError
from preo_client._extras import POLICY_FIELDS
from preo_client.testing import FakePreo, Fault

WATCHDOG = 30.0  # hang detection only
POLICY = sorted(POLICY_FIELDS)

exact_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
names = st.text(min_size=1, max_size=10).filter(lambda n: n not in POLICY_FIELDS)
extra_bodies = st.dictionaries(names, exact_json, max_size=4)
extra_queries = st.dictionaries(
    st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=8).filter(
        lambda n: n not in POLICY_FIELDS
    ),
    st.integers(0, 10**6)
    | st.text(st.characters(codec="ascii", categories=["L", "N"]), max_size=8),
    max_size=3,
)
faults = st.lists(
    st.sampled_from(
        [Fault.http_status(503, retry_after="0"), Fault.http_status(429, retry_after="0"),
         Fault.connect_error(), Fault.read_timeout(after_commit=False),
         Fault.connection_reset(after_commit=False)]
    ),
    max_size=3,
)  # fmt: skip


def _refund(fake: FakePreo, asynchronous: bool, **arguments: Any) -> Any:
    if not asynchronous:
        with fake.client(max_retries=3, retry_unknown_outcome=True) as client:
            return client.purchases.refund("pur_x", **arguments)

    async def run() -> Any:
        async with fake.async_client(max_retries=3, retry_unknown_outcome=True) as client:
            return await asyncio.wait_for(client.purchases.refund("pur_x", **arguments), WATCHDOG)

    return asyncio.run(run())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    extra_body=extra_bodies,
    extra_query=extra_queries,
    injected=faults,
    asynchronous=st.booleans(),
    custom=st.booleans(),
)
def test_extras_reach_the_wire_exactly_and_identically_on_every_attempt(
    extra_body: dict[str, Any],
    extra_query: dict[str, Any],
    injected: list[Fault],
    asynchronous: bool,
    custom: bool,
) -> None:
    fake = FakePreo.demo(auto_purchases=True)
    fake.inject(*injected)
    policy: dict[str, Any] = (
        {"reason": "compensation", "amount": Decimal("3.10"), "comment": "c"}
        if custom
        else {"reason": "sold_out"}
    )
    refund = _refund(
        fake, asynchronous, **policy, extra_body=extra_body, extra_query=extra_query or None
    )
    sent = fake.requests
    assert len(sent) >= 1
    assert len({r.content for r in sent}) == 1  # the same bytes on every attempt
    assert len({r.headers["idempotency-key"] for r in sent}) == 1
    body = json.loads(sent[0].content, parse_float=Decimal)
    expected = (
        {"reason": "compensation", "scope": "purchase_custom", "amount": Decimal("3.10"),
         "comment": "c"}
        if custom
        else {"reason": "sold_out", "scope": "purchase_full"}
    )  # fmt: skip
    assert {k: body[k] for k in POLICY_FIELDS if k in body} == expected
    assert {k: v for k, v in body.items() if k not in POLICY_FIELDS} == extra_body
    for request in sent:
        assert dict(request.url.params) == {k: str(v) for k, v in extra_query.items()}
    assert refund.id


@settings(max_examples=60, deadline=None)
@given(
    field=st.sampled_from(POLICY),
    value=exact_json,
    hatch=st.sampled_from(["extra_body", "extra_query"]),
    others=extra_bodies,
    asynchronous=st.booleans(),
)
def test_a_policy_field_through_a_hatch_is_refused_before_sending(
    field: str, value: Any, hatch: str, others: dict[str, Any], asynchronous: bool
) -> None:
    fake = FakePreo.demo(auto_purchases=True)
    extra = {**others, field: value if hatch == "extra_body" else "1"}
    with pytest.raises(RefundValidationError) as caught:
        _refund(fake, asynchronous, reason="sold_out", **{hatch: extra})
    assert caught.value.field == hatch
    assert repr(field) in str(caught.value)
    assert fake.requests == []


@pytest.mark.parametrize(
    "extra_body",
    [{"x": 0.1}, {"x": [1, {"y": 2.5}]}, {"x": Decimal("1.00")}, {"x": float("nan")},
     {"x": {1: "a"}}, {2: "a"}, {"x": "\ud800"}, {"x": object()}, {"x": {"y": 10**5000}},
     [("x", 1)], "x=1", {"x": set()}],
)  # fmt: skip
def test_extra_body_must_be_exact_json(extra_body: Any) -> None:
    fake = FakePreo.demo(auto_purchases=True)
    with pytest.raises(RefundValidationError) as caught:
        _refund(fake, False, reason="sold_out", extra_body=extra_body)
    assert caught.value.field == "extra_body"
    assert "extra_body: extra_body" not in str(caught.value)
    assert fake.requests == []


def test_extra_body_nested_too_deep_is_refused() -> None:
    deep: Any = 1
    for _ in range(100):
        deep = [deep]
    with pytest.raises(RefundValidationError, match="deeper"):
        _refund(
            FakePreo.demo(auto_purchases=True), False, reason="sold_out", extra_body={"d": deep}
        )


@pytest.mark.parametrize(
    "extra_query",
    [{"x": 1.5}, {"x": True}, {"x": None}, {"": "a"}, {"x": "a\nb"}, {3: "a"}, ["x"]],
)
def test_extra_query_values_are_checked(extra_query: Any) -> None:
    fake = FakePreo.demo(auto_purchases=True)
    with pytest.raises(RefundValidationError) as caught:
        _refund(fake, True, reason="sold_out", extra_query=extra_query)
    assert caught.value.field == "extra_query"
    assert fake.requests == []


def test_the_caller_mutating_extra_body_later_changes_nothing_sent() -> None:
    fake = FakePreo.demo(auto_purchases=True)
    extra: dict[str, Any] = {"tags": ["a"]}
    fake.inject(Fault.http_status(503, retry_after="0"))
    with fake.client(max_retries=2) as client:
        client.purchases.refund("pur_x", reason="sold_out", extra_body=extra)
    extra["tags"].append("b")
    assert {json.loads(r.content)["tags"] == ["a"] for r in fake.requests} == {True}


long_values = st.builds(
    lambda text, times: text * times,
    st.sampled_from(["x", "é", ";", "%", " ", "a/b"]),
    st.integers(5_000, 80_000),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=long_values | st.integers(0, 10**4000), asynchronous=st.booleans())
def test_a_query_too_long_for_a_url_names_extra_query(value: Any, asynchronous: bool) -> None:
    """Review round 4 (r2): an over-long ``extra_query`` was reported as ``purchase_id``. The
    query is sent as ``httpx.Request(..., params=...)`` would build it, or refused naming
    ``extra_query`` exactly when httpx cannot build that URL."""
    query = {"note": value}
    try:
        expected: httpx.URL | None = httpx.Request(
            "POST", "https://api.preo.dev/v1/purchases/pur_x/refund", params=query
        ).url
    except httpx.InvalidURL:
        expected = None
    fake = FakePreo.demo(auto_purchases=True)
    if expected is None:
        with pytest.raises(RefundValidationError) as caught:
            _refund(fake, asynchronous, reason="sold_out", extra_query=query)
        assert caught.value.field == "extra_query"
        assert "purchase_id" not in str(caught.value)
        assert fake.requests == []
    else:
        _refund(fake, asynchronous, reason="sold_out", extra_query=query)
        assert {r.url.raw_path for r in fake.requests} == {expected.raw_path}
