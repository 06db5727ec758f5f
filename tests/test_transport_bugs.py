"""A transport's own bug still ends a call in one of our errors, carrying the idempotency key.

A transport that streams chunks that are not bytes (``str``, ``list``, ``tuple``, ``int``), or
raises an exception whose ``__str__`` itself fails, while sending or while the body is read:
the call ends in a :class:`PreoError`; on a ``2xx`` it is an
``APIResponseValidationOutcomeUnknownError`` (the refund may exist), otherwise the status
decides. Sync and async, under a watchdog.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preo_client import (
    APIConnectionOutcomeUnknownError,
    APIResponseValidationOutcomeUnknownError,
    APIStatusError,
    AsyncPreoClient,
    PreoClient,
    PreoError,
    RefundOutcomeUnknownError,
)
from preo_client._call import exception_text
from tests.helpers import KEY, NO_WAIT

WATCHDOG = 30.0
IDEMPOTENCY_KEY = "key-transport-bug-1"


class BrokenStr(Exception):
    """An exception whose message cannot be read: ``str()`` of it raises."""

    def __str__(self) -> str:
        raise RuntimeError("str() of this exception fails")


class Chunks(httpx.SyncByteStream):
    def __init__(self, chunks: list[Any], fail: BaseException | None = None) -> None:
        self.chunks = chunks
        self.fail = fail

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.fail is not None:
            raise self.fail


class AsyncChunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[Any], fail: BaseException | None = None) -> None:
        self.chunks = chunks
        self.fail = fail

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.fail is not None:
            raise self.fail


class Script:
    """Answer ``status`` with ``chunks`` as the body (then raise ``body_error``), or raise
    ``send_error`` while sending."""

    def __init__(
        self,
        status: int,
        chunks: list[Any],
        *,
        send_error: BaseException | None = None,
        body_error: BaseException | None = None,
    ) -> None:
        self.status, self.chunks = status, chunks
        self.send_error, self.body_error = send_error, body_error


class Buggy(Script, httpx.BaseTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.send_error is not None:
            raise self.send_error
        return httpx.Response(self.status, stream=Chunks(self.chunks, self.body_error))


class AsyncBuggy(Script, httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.send_error is not None:
            raise self.send_error
        return httpx.Response(self.status, stream=AsyncChunks(self.chunks, self.body_error))


def watched(fn: Callable[[], BaseException | None]) -> BaseException | None:
    box: list[BaseException | None] = []
    worker = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    worker.start()
    worker.join(WATCHDOG)
    assert not worker.is_alive(), "the call hung"
    return box[0]


def outcome(kind: str, status: int, chunks: list[Any], **errors: Any) -> BaseException | None:
    """The exception one refund call ends with (None for a refund), sync or async."""

    def run_sync() -> BaseException | None:
        http = httpx.Client(transport=Buggy(status, chunks, **errors))
        with PreoClient(api_key=KEY, http_client=http, max_retries=0, backoff=NO_WAIT) as c:
            try:
                c.purchases.refund("pur_1", reason="sold_out", idempotency_key=IDEMPOTENCY_KEY)
            except BaseException as exc:  # the test decides what is allowed
                return exc
        return None

    async def run_async() -> BaseException | None:
        http = httpx.AsyncClient(transport=AsyncBuggy(status, chunks, **errors))
        async with AsyncPreoClient(
            api_key=KEY, http_client=http, max_retries=0, backoff=NO_WAIT
        ) as c:
            try:
                await c.purchases.refund(
                    "pur_1", reason="sold_out", idempotency_key=IDEMPOTENCY_KEY
                )
            except BaseException as exc:  # the test decides what is allowed
                return exc
        return None

    return watched(run_sync if kind == "sync" else lambda: asyncio.run(run_async()))


NOT_BYTES = st.one_of(
    st.text(max_size=20),
    st.lists(st.integers(0, 255), max_size=3),
    st.tuples(st.binary(max_size=4)),
    st.integers(),
    st.none(),
)


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["sync", "async"]),
    status=st.sampled_from([200, 201, 202, 400, 404, 409, 429, 500, 503]),
    before=st.lists(st.binary(max_size=8), max_size=2),
    bad=NOT_BYTES,
)
def test_a_chunk_that_is_not_bytes_ends_in_our_error(
    kind: str, status: int, before: list[bytes], bad: object
) -> None:
    error = outcome(kind, status, [*before, bad])
    assert isinstance(error, PreoError), repr(error)
    assert error.idempotency_key == IDEMPOTENCY_KEY  # type: ignore[attr-defined]
    if 200 <= status < 300:
        assert isinstance(error, APIResponseValidationOutcomeUnknownError)
    else:
        assert isinstance(error, APIStatusError)
        assert error.status_code == status


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("bad", ['{"id":"rr_1"}', [1, 2], (b"a",)])
def test_the_reviewed_chunks_name_the_bug(kind: str, bad: object) -> None:
    error = outcome(kind, 201, [bad])
    assert isinstance(error, APIResponseValidationOutcomeUnknownError)
    assert f"{type(bad).__name__} chunk, not bytes" in str(error)
    assert error.idempotency_key == IDEMPOTENCY_KEY


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_bytes_like_chunks_are_read_as_bytes(kind: str) -> None:
    body = b'{"id":"rr_1","amount":"1.00","scope":"purchase_full","status":"requested"}'
    error = outcome(kind, 201, [bytearray(body[:10]), memoryview(body[10:])])
    assert error is None


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("where", ["send", "body"])
@pytest.mark.parametrize("status", [201, 500])
def test_an_exception_whose_message_cannot_be_read_ends_in_our_error(
    kind: str, where: str, status: int
) -> None:
    errors = {"send_error": BrokenStr()} if where == "send" else {"body_error": BrokenStr()}
    error = outcome(kind, status, [b'{"id":'], **errors)
    assert isinstance(error, PreoError), repr(error)
    assert isinstance(error, RefundOutcomeUnknownError)  # it may have been sent
    assert error.idempotency_key == IDEMPOTENCY_KEY
    assert "BrokenStr" in str(error)
    if where == "send":
        assert isinstance(error, APIConnectionOutcomeUnknownError)
    elif status == 201:
        assert isinstance(error, APIResponseValidationOutcomeUnknownError)
    else:
        assert isinstance(error, APIStatusError)
        assert error.status_code == status


def test_exception_text_never_raises() -> None:
    assert exception_text(ValueError("x" * 500)) == "x" * 200
    assert exception_text(ValueError()) == ""
    assert exception_text(BrokenStr()).startswith("BrokenStr")
