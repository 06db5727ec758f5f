"""A server that echoes the API key as its request id never puts the key in a refund, an
error or a log record (adversary round 4, r8 case A: the field warning carried it)."""

from __future__ import annotations

import json
import logging
import pickle

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
    if isinstance(result, APIError):
        assert key.encode() not in pickle.dumps(result)


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


@settings(max_examples=80, deadline=None)
@given(
    status=st.sampled_from([200, 201, 400, 404, 409, 422, 429, 500, 503]),
    name=st.sampled_from(
        [b"X-Debug", b"X-Request-Id", b"Retry-After", b"Set-Cookie", b"X-sk_live_pickle_1234567890"]
    ),
    value=st.binary(min_size=1, max_size=20).map(
        lambda b: bytes(c for c in b if c not in b"\r\n\x00") or b"\xe9"
    ),
    echo=st.booleans(),
)
def test_every_error_pickles_whatever_bytes_its_headers_hold(
    status: int, name: bytes, value: bytes, echo: bool
) -> None:
    """Adversary round 4, r15: a non-ASCII header value (obs-text, legal on the wire) made
    ``pickle.dumps(error)`` raise UnicodeEncodeError; an echoed key stays out of the pickle."""
    key = "sk_live_pickle_1234567890"
    extra = value + (b" " + key.encode() if echo else b"")

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=[(name, extra)], content=b'{"detail": "no"}')

    client = PreoClient(
        api_key=key, max_retries=0, http_client=httpx.Client(transport=httpx.MockTransport(answer))
    )
    with pytest.raises(APIError) as caught:
        client.purchases.refund("pur_1", reason="sold_out")
    error = caught.value
    data = pickle.dumps(error)
    assert key.encode() not in data
    back = pickle.loads(data)  # noqa: S301 - our own bytes
    assert type(back) is type(error)
    assert back.idempotency_key == error.idempotency_key
    assert back.status_code == error.status_code
