"""Numbers in answer headers are ASCII digits: a bad ``Content-Length`` (``"²"``, Arabic-Indic
digits, a sign, a list of different values, a number longer than ``int()`` takes) makes the
answer malformed — our typed error, the status deciding — and never a bare ``ValueError``."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from preo_client import (
    APIResponseValidationOutcomeUnknownError,
    AsyncPreoClient,
    BadRequestError,
    PreoClient,
    PreoError,
    Refund,
)
from preo_client._call import MAX_RESPONSE_BYTES, BodyReader, content_length
from preo_client._models import answer_ids
from preo_client._retry import parse_retry_after
from tests.helpers import KEY, NO_WAIT, refund_json

VALID = re.compile(r"[ \t]*([0-9]+)[ \t]*(?:,[ \t]*([0-9]+)[ \t]*)*")
UNICODE_DIGITS = "²³¹٣۴߅३৪੬૭୮௯౦೧൨๓໔༥၆႗០᠑٠０𝟘"

NUMBERISH = st.text(
    alphabet=st.sampled_from(list("0123456789 \t,+-._e") + list(UNICODE_DIGITS)), max_size=24
)
HEADER_VALUES = st.one_of(
    NUMBERISH,
    st.integers(0, 2 * MAX_RESPONSE_BYTES).map(str),
    st.integers(0, 10**60).map(lambda n: f"{n}, {n}"),
    st.text(max_size=30),
    st.sampled_from(["²", "٣", "0" * 5000, "9" * 5000, "1_000", "+5", "5, 6", " 5 ", "", ","]),
)


def reference(value: str) -> str | None:
    """The digits the header states, by the RFC 9110 grammar (1*DIGIT, ASCII; repeats equal)."""
    parts = {part.strip(" \t") for part in value.split(",")}
    return parts.pop() if VALID.fullmatch(value) and len(parts) == 1 else None


@given(HEADER_VALUES)
def test_content_length_takes_ascii_digits_only(value: str) -> None:
    size = content_length(value)
    digits = reference(value)
    if digits is None:
        assert size is None
    elif len(digits) > 18:  # too long to matter: larger than any body accepted
        assert size is not None
        assert size > MAX_RESPONSE_BYTES
    else:
        assert size == int(digits)


@given(HEADER_VALUES)
def test_the_body_reader_never_raises_on_a_content_length(value: str) -> None:
    response = httpx.Response(201, headers=[(b"content-length", value.encode())])
    reader = BodyReader(response)  # must not raise
    reader.feed(b"{}")
    _content, problem = reader.result()
    size = content_length(value)
    if size is None:
        assert problem is not None
        assert "malformed Content-Length" in problem
    elif size > MAX_RESPONSE_BYTES:
        assert problem is not None
        assert "larger than" in problem
    else:
        assert problem is None


class _Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    def __init__(self, body: bytes) -> None:
        self.body = body

    def __iter__(self) -> Iterator[bytes]:
        yield self.body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.body


def _call(kind: str, status: int, value: str) -> Refund | BaseException:
    body = json.dumps(refund_json()).encode() if status == 201 else b'{"detail": "no"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", value.encode())]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers, stream=_Body(body))

    transport = httpx.MockTransport(handler)
    try:
        if kind == "sync":
            with PreoClient(
                api_key=KEY, http_client=httpx.Client(transport=transport), backoff=NO_WAIT
            ) as client:
                return client.purchases.refund("pur_1", reason="sold_out")

        async def go() -> Refund:
            async with AsyncPreoClient(
                api_key=KEY, http_client=httpx.AsyncClient(transport=transport), backoff=NO_WAIT
            ) as client:
                return await client.purchases.refund("pur_1", reason="sold_out")

        return asyncio.run(go())
    except Exception as exc:  # returned, to be checked
        return exc


@pytest.mark.parametrize("kind", ["sync", "async"])
@given(value=HEADER_VALUES, status=st.sampled_from([201, 400]))
def test_a_bad_content_length_is_a_malformed_answer_of_ours(
    kind: str, value: str, status: int
) -> None:
    result = _call(kind, status, value)
    size = content_length(value)
    if status == 400:  # the status decides; the body's trouble is a detail
        assert isinstance(result, BadRequestError)
    elif size is None or size > MAX_RESPONSE_BYTES:
        assert isinstance(result, APIResponseValidationOutcomeUnknownError)
    else:
        assert isinstance(result, Refund | PreoError)
    assert not isinstance(result, Exception) or isinstance(result, PreoError)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_superscript_two_is_a_malformed_refund_answer(kind: str) -> None:
    result = _call(kind, 201, "²")
    assert isinstance(result, APIResponseValidationOutcomeUnknownError)
    assert "malformed Content-Length" in str(result)


@given(st.one_of(NUMBERISH, st.text(max_size=40)))
def test_retry_after_never_raises(value: str) -> None:
    seconds = parse_retry_after(value)
    assert seconds is None or seconds >= 0


NAMES = st.sampled_from(
    [b"X-Request-Id", b"x-request-id", b"X-REQUEST-ID", b"Idempotent-Replayed",
     b"idempotent-replayed", b"content-type", b"x-request-idx", b"date"]
)  # fmt: skip
VALUES = st.one_of(
    st.sampled_from([b"true", b"TRUE", b"false", b"req_1", b"", b"true, true"]),
    st.binary(max_size=12).filter(lambda b: b"\r" not in b and b"\n" not in b),
    st.text(max_size=8).map(lambda t: t.encode("utf-8")),
)


@given(st.lists(st.tuples(NAMES, VALUES), max_size=8))
def test_answer_ids_reads_headers_as_headers_get_does(raw: list[tuple[bytes, bytes]]) -> None:
    headers = httpx.Headers(raw)
    expected = (
        headers.get("x-request-id"),
        headers.get("idempotent-replayed", "").lower() == "true",
    )
    assert answer_ids(headers) == expected
