"""The money path's invariants, over random server behaviour, sync and async.

Each call runs against a scripted transport: every attempt draws what the server does — a
status from 100 to 599, ``Retry-After``, ``Content-Encoding``, a body (a spec-valid refund
generated from ``openapi/preo.yaml``, a mutated one, truncated or deep JSON, invalid UTF-8,
corrupt gzip, oversize), or a fault before sending, after sending, or in the middle of the body.
The server honours nothing (no idempotency store), so the ledger counts every attempt that may
have created a refund. Whatever happens:

- I1 the call ends with a ``Refund`` or a ``PreoError``, never another exception type;
- I2 if any attempt may have been processed, the error is a ``RefundOutcomeUnknownError``
  carrying the key that was sent; if none may have been, it is not;
- I3 a call whose last answer is a 2xx with a readable ``id`` and ``amount`` returns a Refund
  whose every field can be read;
- every attempt sends the same key and the same body bytes; without ``retry_unknown_outcome``
  at most one attempt may have created a refund (no double refund by our own retries);
- attempts never exceed ``1 + max_retries``; nothing hangs (a watchdog bounds every call).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import gzip
import json
import threading
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preo_client import (
    AsyncPreoClient,
    Backoff,
    PreoClient,
    PreoError,
    Refund,
    RefundOutcomeUnknownError,
)
from preo_client._call import MAX_RESPONSE_BYTES

SPEC = yaml.safe_load((Path(__file__).parent.parent / "openapi" / "preo.yaml").read_text())
API = "https://api.preo.dev"
WATCHDOG = 20.0


def _resolve(node: Any) -> Any:
    """The schema with every local ``$ref`` inlined (hypothesis-jsonschema wants no refs)."""
    if isinstance(node, dict):
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            return _resolve(copy.deepcopy(SPEC["components"]["schemas"][name]))
        return {k: _resolve(v) for k, v in node.items() if k not in ("example", "examples")}
    if isinstance(node, list):
        return [_resolve(v) for v in node]
    return node


REFUND_SCHEMA = _resolve(SPEC["components"]["schemas"]["RefundRequest"])
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values a (resolved) JSON schema allows: the subset of JSON Schema the spec uses."""
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(option) for option in schema[key]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kinds = schema.get("type", "object")
    if isinstance(kinds, list):
        return st.one_of([from_schema({**schema, "type": kind}) for kind in kinds])
    if kinds == "null":
        return st.none()
    if kinds == "boolean":
        return st.booleans()
    if kinds == "integer":
        return st.integers(-(10**6), 10**6)
    if kinds == "number":
        return st.decimals(min_value=0, max_value=10**6, places=2)
    if kinds == "string":
        if schema.get("format") == "date-time":
            return st.datetimes().map(lambda d: d.isoformat() + "Z")
        return st.text(max_size=12)
    properties = schema.get("properties", {})
    required = set(schema.get("required", ()))
    fixed = {name: from_schema(sub) for name, sub in properties.items() if name in required}
    optional = {name: from_schema(sub) for name, sub in properties.items() if name not in required}
    extra = schema.get("additionalProperties", True)
    extras = (
        st.dictionaries(
            st.text(min_size=1, max_size=6).filter(lambda k: k not in properties),
            JSON_VALUES,
            max_size=2,
        )
        if extra is not False
        else st.just({})
    )
    return st.builds(
        lambda a, b, c: {**c, **a, **b},
        st.fixed_dictionaries(fixed, optional=optional),
        st.just({}),
        extras,
    )


def _json_number(value: Decimal) -> str:
    return format(value, "f")


@st.composite
def valid_refund(draw: st.DrawFn) -> dict[str, Any]:
    """A refund body the spec allows, with a realistic id and an exact two-place amount."""
    body: dict[str, Any] = draw(from_schema(REFUND_SCHEMA))
    body["id"] = draw(st.from_regex(r"rr_[a-z0-9]{1,12}", fullmatch=True))
    body = {k: (float(v) if isinstance(v, Decimal) else v) for k, v in body.items()}
    body["amount"] = draw(
        st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999.99"), places=2)
    )
    return body


@st.composite
def mutated_refund(draw: st.DrawFn) -> dict[str, Any]:
    """A valid refund with other fields dropped or replaced by any JSON value (not id/amount)."""
    body = draw(valid_refund())
    others = sorted(k for k in body if k not in ("id", "amount"))
    for name in draw(st.lists(st.sampled_from(others), max_size=4, unique=True)):
        if draw(st.booleans()):
            del body[name]
        else:
            body[name] = draw(JSON_VALUES)
    return body


def _encode(body: dict[str, Any]) -> bytes:
    def default(value: object) -> Any:
        raise TypeError

    text = json.dumps(
        {k: ("__AMOUNT__" if k == "amount" else v) for k, v in body.items()}, default=default
    )
    amount = body["amount"]
    number = _json_number(amount) if isinstance(amount, Decimal) else json.dumps(amount)
    return text.replace('"__AMOUNT__"', number, 1).encode()


@dataclasses.dataclass
class Attempt:
    """What the server does with one attempt."""

    kind: str  # not_sent | lost_after_send | answer
    status: int = 201
    body: bytes = b""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    processed: bool = False  # for lost_after_send / 5xx: whether the server made the refund
    drop_mid_body: bool = False
    readable_refund: bool = False  # a 2xx whose id and amount can be read, delivered whole

    @property
    def may_have_refunded(self) -> bool:
        """What the client cannot rule out: the refund may exist after this attempt."""
        if self.kind == "not_sent":
            return False
        if self.kind == "lost_after_send":
            return True
        return not (300 <= self.status < 500 or self.status == 503)

    @property
    def refunded(self) -> bool:
        """What the (non-idempotent) server actually did."""
        if self.kind == "not_sent":
            return False
        if self.kind == "answer" and 200 <= self.status < 300:
            return True
        return self.may_have_refunded and self.processed


BODIES = st.one_of(
    valid_refund().map(lambda b: ("refund", _encode(b))),
    mutated_refund().map(lambda b: ("refund", _encode(b))),
    st.sampled_from(
        [
            ("junk", b""),
            ("junk", b"{"),
            ("junk", b'{"id": "rr_1", "amount": 1'),
            ("junk", b"[" * 100_000),
            ("junk", b'{"a":' * 50_000),
            ("junk", b"\xff\xfe not utf-8"),
            ("junk", b"<html>502 Bad Gateway</html>"),
            ("junk", b'{"id": "rr_1", "amount": "\xd9\xa1\xd9\xa2"}'),
            ("junk", b'{"id": "rr_1", "amount": ' + b"9" * 5000 + b"}"),
            ("junk", b'{"id": "rr_1", "amount": true}'),
            ("junk", b'{"id": 7, "amount": 1.5}'),
            ("junk", b'{"detail": "x"}'),
            ("oversize", b"x" * (MAX_RESPONSE_BYTES + 10)),
        ]
    ),
)


@st.composite
def attempt(draw: st.DrawFn) -> Attempt:
    kind = draw(st.sampled_from(["not_sent", "lost_after_send", "answer", "answer", "answer"]))
    if kind != "answer":
        return Attempt(kind, processed=draw(st.booleans()))
    status = draw(
        st.one_of(
            st.sampled_from([201, 201, 200, 400, 401, 404, 409, 422, 429, 500, 502, 503, 504]),
            st.integers(100, 599),
        )
    )
    what, body = draw(BODIES)
    headers = {"content-type": draw(st.sampled_from(["application/json"] * 4 + ["text/html"]))}
    if draw(st.booleans()):
        headers["retry-after"] = draw(st.sampled_from(["0", "1", "-10", "abc", "120", "0.5"]))
    gzip_mode = draw(st.sampled_from(["none", "none", "good", "corrupt"]))
    if gzip_mode == "good":
        body = gzip.compress(body)
        headers["content-encoding"] = "gzip"
    elif gzip_mode == "corrupt":
        body = b"\x1f\x8b not really gzip" + body[:20]
        headers["content-encoding"] = "gzip"
    if draw(st.booleans()):
        headers["content-length"] = str(draw(st.sampled_from([0, 3, len(body), len(body) + 50])))
    drop = draw(st.booleans()) if len(body) > 1 else False
    readable = (
        what == "refund"
        and 200 <= status < 300
        and gzip_mode != "corrupt"
        and not drop
        and headers["content-type"] == "application/json"
    )
    return Attempt(
        "answer",
        status=status,
        body=body,
        headers=headers,
        processed=draw(st.booleans()),
        drop_mid_body=drop,
        readable_refund=readable,
    )


class _Stream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that may break half-way (the connection dropped mid-body)."""

    def __init__(self, body: bytes, drop: bool) -> None:
        self.body = body
        self.drop = drop

    def _chunks(self) -> Iterator[bytes]:
        half = len(self.body) // 2 if self.drop else len(self.body)
        for start in range(0, half, 65536):
            yield self.body[start : min(half, start + 65536)]
        if self.drop:
            raise httpx.RemoteProtocolError("peer closed connection mid-body")

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks():
            yield chunk


class Server:
    """Plays a script of attempts; records what was sent and what was refunded."""

    def __init__(self, script: list[Attempt]) -> None:
        self.script = script
        self.sent: list[tuple[str | None, bytes]] = []
        self.played: list[Attempt] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        step = self.script[min(len(self.played), len(self.script) - 1)]
        self.played.append(step)
        if step.kind == "not_sent":
            raise httpx.ConnectError("connection refused", request=request)
        self.sent.append((request.headers.get("idempotency-key"), request.content))
        if step.kind == "lost_after_send":
            raise httpx.ReadTimeout("timed out waiting for the answer", request=request)
        return httpx.Response(
            step.status,
            headers=step.headers,
            stream=_Stream(step.body, step.drop_mid_body),
            request=request,
        )

    @property
    def refunds(self) -> int:
        return sum(step.refunded for step in self.played)


def _check(
    result: object, server: Server, *, max_retries: int, retry_unknown: bool, key: str | None
) -> None:
    played = server.played
    assert 1 <= len(played) <= max_retries + 1
    # I1
    assert isinstance(result, Refund | PreoError), f"escaped: {type(result).__name__}: {result}"
    # one key and one body on every attempt that left
    assert len(set(server.sent)) <= 1, "attempts differed in key or body"
    sent_key = server.sent[0][0] if server.sent else key
    # no double refund by our own retries (this server does not honour idempotency keys)
    if not retry_unknown:
        assert server.refunds <= 1, f"{server.refunds} refunds from one call"
        assert sum(step.may_have_refunded for step in played) <= 1
    # a 409/422 on a key the caller supplied: a request with that key may have made it earlier
    conflict = key is not None and any(
        step.kind == "answer" and step.status in (409, 422) for step in played
    )
    maybe = conflict or any(step.may_have_refunded for step in played)
    if isinstance(result, PreoError):
        # I2, both ways
        if maybe:
            assert isinstance(result, RefundOutcomeUnknownError), repr(result)
            assert result.idempotency_key == sent_key
            assert sent_key
            assert repr(sent_key) in str(result)
        else:
            assert not isinstance(result, RefundOutcomeUnknownError), repr(result)
        # I3: a readable 2xx is never raised
        assert not played[-1].readable_refund, f"readable 2xx raised: {result!r}"
    else:
        assert isinstance(result, Refund)
        assert 200 <= played[-1].status < 300
        # every field readable, and the exported views agree with the amount
        for name in (
            "id", "amount", "edition_id", "requested_by", "pickup_point", "created", "modified",
            "can_approve", "can_reject", "organization", "scope", "status", "comment",
            "service_response", "refund_date", "extra",
        ):  # fmt: skip
            getattr(result, name)
        repr(result)
        assert isinstance(result.amount, Decimal)


def _sync_call(server: Server, max_retries: int, retry_unknown: bool, key: str | None) -> object:
    http = httpx.Client(transport=httpx.MockTransport(server.handle))
    with PreoClient(
        api_key="sk_test_invariants",
        http_client=http,
        max_retries=max_retries,
        retry_unknown_outcome=retry_unknown,
        backoff=Backoff(0, 0),
    ) as client:
        client._sleep = lambda seconds: None
        try:
            return client.purchases.refund(
                "pur_1", reason="compensation", amount="12.30", idempotency_key=key
            )
        except Exception as exc:
            return exc
        finally:
            http.close()


async def _async_call(
    server: Server, max_retries: int, retry_unknown: bool, key: str | None
) -> object:
    async def no_sleep(seconds: float) -> None:
        return None

    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handle)) as http:
        client = AsyncPreoClient(
            api_key="sk_test_invariants",
            http_client=http,
            max_retries=max_retries,
            retry_unknown_outcome=retry_unknown,
            backoff=Backoff(0, 0),
        )
        client._sleep = no_sleep
        try:
            return await client.purchases.refund(
                "pur_1", reason="compensation", amount="12.30", idempotency_key=key
            )
        except Exception as exc:
            return exc


def _with_watchdog(fn: Any, *args: Any) -> object:
    """Run ``fn(*args)`` in a thread; a call still running after WATCHDOG seconds fails."""
    box: list[object] = []
    thread = threading.Thread(target=lambda: box.append(fn(*args)), daemon=True)
    thread.start()
    thread.join(WATCHDOG)
    assert not thread.is_alive(), "the call hung"
    assert box, "the call died without an outcome"
    return box[0]


SCRIPTS = st.lists(attempt(), min_size=1, max_size=4)
KEYS = st.one_of(st.none(), st.from_regex(r"[!-~]{1,40}", fullmatch=True))


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(script=SCRIPTS, max_retries=st.integers(0, 3), retry_unknown=st.booleans(), key=KEYS)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_any_server_behaviour_ends_in_a_refund_or_our_error(
    kind: str, script: list[Attempt], max_retries: int, retry_unknown: bool, key: str | None
) -> None:
    server = Server(script)
    if kind == "sync":
        result = _with_watchdog(_sync_call, server, max_retries, retry_unknown, key)
    else:
        result = _with_watchdog(
            lambda *a: asyncio.run(_async_call(*a)), server, max_retries, retry_unknown, key
        )
    _check(result, server, max_retries=max_retries, retry_unknown=retry_unknown, key=key)
