"""A pickled error never carries the API key: not in its text or body, nor in the response it
keeps (body and header values), even when the server echoed the key there (raw or
JSON-escaped). Celery and multiprocessing ship and store exactly these bytes."""

from __future__ import annotations

import asyncio
import json
import pickle

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preo_client import PreoError
from preo_client.testing import FakePreo, Fault
from tests.test_models import within_watchdog

keys = st.builds(
    lambda tail: f"sk_{tail}",
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=12, max_size=40),
)
filler = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)


def _body(key: str, how: str, before: str, after: str) -> bytes:
    if how == "json":
        return json.dumps({"detail": f"{before}{key}{after}", "echo": [key]}).encode()
    if how == "json_key":
        return json.dumps({key: before, "detail": after}).encode()
    return f"{before}{key}{after}".encode()


def _error(fake: FakePreo, use_async: bool) -> PreoError:
    def sync_call() -> None:
        with fake.client() as client:
            client.purchases.refund("pur_demo_ticket", reason="sold_out")

    async def async_call() -> None:
        async with fake.async_client() as client:
            await client.purchases.refund("pur_demo_ticket", reason="sold_out")

    def call() -> PreoError:
        try:
            asyncio.run(async_call()) if use_async else sync_call()
        except PreoError as exc:
            return exc
        raise AssertionError("the call did not fail")

    result: PreoError = within_watchdog(call)
    return result


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=keys,
    status=st.sampled_from([201, 400, 401, 403, 404, 409, 422, 500]),
    how=st.sampled_from(["json", "json_key", "text"]),
    before=filler,
    after=filler,
    in_header=st.booleans(),
    use_async=st.booleans(),
)
def test_pickled_error_never_holds_the_key(
    key: str,
    status: int,
    how: str,
    before: str,
    after: str,
    in_header: bool,
    use_async: bool,
) -> None:
    fake = FakePreo.demo(api_key=key)
    headers = {"x-echo": key, "www-authenticate": f'Bearer realm="{key}"'} if in_header else None
    body = _body(key, how, before, after)
    if status == 201:  # an unreadable 2xx (the refund was made): its body is kept too
        fake.inject(Fault.with_body(b"<html>" + body))
    else:
        fake.inject(*[Fault.http_status(status, body=body, headers=headers)] * 5)
    error = _error(fake, use_async)
    assert key not in str(error)
    response = getattr(error, "response", None)
    if response is not None:  # the error in memory keeps the response without the echo too
        assert key.encode() not in response.content
        assert all(key not in value for value in response.headers.values())
    blob = pickle.dumps(error)
    assert key.encode() not in blob
    assert json.dumps(key)[1:-1].encode() not in blob
    again = pickle.loads(blob)  # noqa: S301 - our own bytes
    assert type(again) is type(error)
    assert getattr(again, "status_code", None) == getattr(error, "status_code", None)
    assert key not in str(again)


def test_reported_reproducer_401_echoing_the_key() -> None:
    key = "sk_sandbox_demo"
    fake = FakePreo.demo(api_key=key)
    fake.inject(
        Fault.http_status(401, body=json.dumps({"detail": f"Invalid token {key}"}).encode())
    )
    error = _error(fake, use_async=False)
    blob = pickle.dumps(error)
    assert key.encode() not in blob
    again = pickle.loads(blob)  # noqa: S301 - our own bytes
    assert key.encode() not in again.response.content
    assert b"***" in again.response.content
