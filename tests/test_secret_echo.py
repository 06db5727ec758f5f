"""A server that echoes the API key as its request id never puts the key in a refund, an
error or a log record (adversary round 4, r8 case A: the field warning carried it)."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preo_client import APIError, PreoClient

_KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_",
                min_size=12, max_size=40).map(lambda s: "sk_live_" + s)  # fmt: skip


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.text: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.text.append(record.getMessage())
        self.text.append(json.dumps({k: repr(v) for k, v in vars(record).items()}))


@settings(max_examples=60, deadline=None)
@given(
    key=_KEYS,
    status=st.sampled_from([201, 200, 400, 404, 409, 422, 429, 500, 503]),
    fields_missing=st.booleans(),
    around=st.sampled_from(["{k}", "req-{k}", "{k}, req_2", "Bearer {k}"]),
)
def test_a_key_echoed_as_the_request_id_is_never_kept(
    key: str, status: int, fields_missing: bool, around: str
) -> None:
    body = {"id": "rr_1", "amount": "5.00"}
    if not fields_missing:  # a complete answer takes the parser's fast path
        body.update(created="2026-07-04T18:22:11Z", modified="2026-07-04T18:22:11Z")

    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"X-Request-Id": around.format(k=key), "Retry-After": "0"}
        return httpx.Response(status, headers=headers, content=json.dumps(body).encode())

    records = _Records()
    logger = logging.getLogger("preo_client")
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    try:
        client = PreoClient(
            api_key=key,
            max_retries=1,
            http_client=httpx.Client(transport=httpx.MockTransport(answer)),
        )
        client._sleep = lambda seconds: None  # type: ignore[attr-defined]
        try:
            result: object = client.purchases.refund("pur_1", reason="sold_out")
        except APIError as exc:
            result = exc
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    texts = [repr(result), str(result), str(getattr(result, "request_id", "")), *records.text]
    for text in texts:
        assert key not in text


@pytest.mark.parametrize("status", [201, 400])
def test_the_request_id_keeps_its_text_around_the_key(status: int) -> None:
    key = "sk_live_abcdefghijklmnop"

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"X-Request-Id": f"req-{key}"}, json={"id": "r"})

    client = PreoClient(
        api_key=key, max_retries=0, http_client=httpx.Client(transport=httpx.MockTransport(answer))
    )
    try:
        result: object = client.purchases.refund("pur_1", reason="sold_out")
    except APIError as exc:
        result = exc
    assert getattr(result, "request_id", None) == "req-***"
