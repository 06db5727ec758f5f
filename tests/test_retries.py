"""Safe retries: the fault matrix, sync and async, against the sandbox's ledger.

For every fault: the exact exception class (or success), the number of attempts, that every
attempt sent the same idempotency key and the same body bytes, and never more than one refund
per call.
"""

from __future__ import annotations

import asyncio
import email.utils
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import respx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preo_client import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AsyncPreoClient,
    AuthenticationError,
    Backoff,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    PreoClient,
    RateLimitError,
    Refund,
    RefundOutcomeUnknownError,
    UnprocessableEntityError,
    idempotency_key_for,
)
from preo_client import _client as client_module
from preo_client._retry import parse_retry_after
from preo_client.testing import FakePreo, Fault
from tests.helpers import KEY, created

NO_WAIT = Backoff(base=0, cap=0)


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the waits between attempts instead of sleeping them."""
    recorded: list[float] = []

    async def async_sleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(client_module, "_sleep", recorded.append)
    monkeypatch.setattr(client_module, "_async_sleep", async_sleep)
    # the sandbox's clients wait on its virtual clock: record those waits here too
    monkeypatch.setattr(FakePreo, "virtual_sleep", lambda self, s: recorded.append(s))
    monkeypatch.setattr(FakePreo, "async_virtual_sleep", lambda self, s: async_sleep(s))
    return recorded


def http_date(seconds_from_now: int) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


def refund_once(fake: FakePreo, kind: str, **options: Any) -> Refund | APIError:
    """One refund call of ``pur_1`` (reason sold_out); returns the refund or the error."""
    options.setdefault("backoff", NO_WAIT)
    if kind == "sync":
        with fake.client(**options) as client:
            try:
                return client.purchases.refund("pur_1", reason="sold_out")
            except APIError as exc:
                return exc

    async def go() -> Refund | APIError:
        async with fake.async_client(**options) as client:
            try:
                return await client.purchases.refund("pur_1", reason="sold_out")
            except APIError as exc:
                return exc

    return asyncio.run(go())


def unknown(cls: type[APIError]) -> Callable[[object], bool]:
    return lambda r: isinstance(r, cls) and isinstance(r, RefundOutcomeUnknownError)


def known(cls: type[APIError]) -> Callable[[object], bool]:
    return lambda r: isinstance(r, cls) and not isinstance(r, RefundOutcomeUnknownError)


def ok(r: object) -> bool:
    return isinstance(r, Refund)


# (name, faults, options, check, attempts, refunds in the ledger)
MATRIX: list[tuple[str, list[Fault], dict[str, Any], Callable[[object], bool], int, int]] = [
    ("no fault", [], {}, ok, 1, 1),
    ("connect error", [Fault.connect_error()], {}, ok, 2, 1),
    ("connect error x3", [Fault.connect_error()] * 3, {}, known(APIConnectionError), 3, 0),
    ("connect timeout", [Fault.connect_timeout()], {}, ok, 2, 1),
    ("connect timeout x3", [Fault.connect_timeout()] * 3, {}, known(APITimeoutError), 3, 0),
    ("read timeout before commit", [Fault.read_timeout(after_commit=False)], {},
     unknown(APITimeoutError), 1, 0),
    ("read timeout after commit", [Fault.read_timeout()], {}, unknown(APITimeoutError), 1, 1),
    ("connection reset", [Fault.connection_reset()], {}, unknown(APIConnectionError), 1, 1),
    ("500 json", [Fault.http_status(500)], {}, unknown(InternalServerError), 1, 0),
    ("502 html", [Fault.html_502()], {}, unknown(InternalServerError), 1, 0),
    ("504", [Fault.http_status(504)], {}, unknown(InternalServerError), 1, 0),
    ("503 retry-after seconds", [Fault.http_status(503, retry_after="3")], {}, ok, 2, 1),
    ("503 retry-after http-date", [Fault.http_status(503, retry_after=http_date(30))], {},
     ok, 2, 1),
    ("503 x3", [Fault.http_status(503, retry_after="1")] * 3, {}, known(InternalServerError),
     3, 0),
    ("429", [Fault.http_status(429)], {}, ok, 2, 1),
    ("429 huge retry-after", [Fault.http_status(429, retry_after="86400")], {},
     known(RateLimitError), 1, 0),
    ("429 bad retry-after", [Fault.http_status(429, retry_after=v) for v in ("-10", "abc")],
     {}, ok, 3, 1),
    ("400", [Fault.http_status(400, body=b'{"amount": ["bad"]}')], {}, known(BadRequestError),
     1, 0),
    ("401", [Fault.http_status(401)], {}, known(AuthenticationError), 1, 0),
    ("403", [Fault.http_status(403)], {}, known(PermissionDeniedError), 1, 0),
    ("404", [Fault.http_status(404)], {}, known(NotFoundError), 1, 0),
    ("409", [Fault.http_status(409)], {}, known(ConflictError), 1, 0),
    ("422", [Fault.http_status(422)], {}, known(UnprocessableEntityError), 1, 0),
    ("201 malformed json", [Fault.malformed_json()], {}, unknown(APIResponseValidationError),
     1, 1),
    ("201 truncated json", [Fault.truncated_json()], {}, unknown(APIResponseValidationError),
     1, 1),
    ("201 text/html", [Fault.with_body(b"<html>ok</html>", content_type="text/html")], {},
     unknown(APIResponseValidationError), 1, 1),
    ("201 missing id", [Fault.edit_json(drop=("id",))], {},
     unknown(APIResponseValidationError), 1, 1),
    ("201 missing created", [Fault.edit_json(drop=("created",))], {},
     lambda r: isinstance(r, Refund) and r.created is None and "created" in r.invalid_fields,
     1, 1),
    ("201 unknown enum", [Fault.edit_json(status="on_hold", scope="edition_full")], {},
     lambda r: isinstance(r, Refund) and (r.status, r.scope) == ("on_hold", "edition_full"),
     1, 1),
    ("307 redirect", [Fault.http_status(307, headers={"location": "https://evil.example/x"})],
     {}, lambda r: type(r) is APIStatusError and r.status_code == 307, 1, 0),
    ("max_retries=0", [Fault.connect_error()], {"max_retries": 0}, known(APIConnectionError),
     1, 0),
    # With retry_unknown_outcome=True the same key makes these safe to resend.
    ("unknown: read timeout after commit", [Fault.read_timeout()],
     {"retry_unknown_outcome": True}, lambda r: isinstance(r, Refund) and r.replayed, 2, 1),
    ("unknown: connection reset", [Fault.connection_reset()], {"retry_unknown_outcome": True},
     lambda r: isinstance(r, Refund) and r.replayed, 2, 1),
    ("unknown: 500 then ok", [Fault.http_status(500)], {"retry_unknown_outcome": True}, ok, 2, 1),
    ("unknown: 502 x3", [Fault.html_502()] * 3, {"retry_unknown_outcome": True},
     unknown(InternalServerError), 3, 0),
    ("unknown: timeouts x3", [Fault.read_timeout()] * 3, {"retry_unknown_outcome": True},
     unknown(APITimeoutError), 3, 1),
    # Found by the state machine: once an attempt may have landed, the final error says so,
    # even when the last attempt's own failure (connect error, 503) was a clean one.
    ("unknown then connect errors", [Fault.read_timeout(), *[Fault.connect_error()] * 2],
     {"retry_unknown_outcome": True}, unknown(APIConnectionError), 3, 1),
    ("unknown then 503s", [Fault.connection_reset(), *[Fault.http_status(503)] * 2],
     {"retry_unknown_outcome": True}, unknown(InternalServerError), 3, 1),
    ("unknown then malformed", [Fault.read_timeout(after_commit=False), Fault.malformed_json()],
     {"retry_unknown_outcome": True}, lambda r: isinstance(r, Refund) and r.replayed, 3, 1),
]  # fmt: skip


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(
    ("name", "faults", "options", "check", "attempts", "refunds"),
    MATRIX,
    ids=[case[0] for case in MATRIX],
)
def test_fault_matrix(
    kind: str,
    name: str,
    faults: list[Fault],
    options: dict[str, Any],
    check: Callable[[object], bool],
    attempts: int,
    refunds: int,
) -> None:
    fake = FakePreo()
    fake.add_purchase("pur_1", price="10.00", fees="1.00")
    fake.inject(*faults)
    result = refund_once(fake, kind, **options)
    assert check(result), f"{name}: got {result!r}"
    assert len(fake.requests) == attempts
    assert len(fake.refunds) == refunds
    keys = {r.headers["idempotency-key"] for r in fake.requests}
    bodies = {r.content for r in fake.requests}
    assert len(keys) == 1, "every attempt must send the same idempotency key"
    assert len(bodies) == 1, "every attempt must send the same body bytes"
    key = keys.pop()
    assert uuid.UUID(key).version == 4
    if isinstance(result, APIError):
        assert result.idempotency_key == key
    if isinstance(result, RefundOutcomeUnknownError):
        assert f"retry with idempotency_key={key!r}" in str(result)
    if refunds:
        assert fake.refunds[0].idempotency_key == key


def test_retry_after_is_honoured(sleeps: list[float]) -> None:
    fake = FakePreo()
    fake.add_purchase("pur_1", price="10.00")
    fake.inject(
        Fault.http_status(503, retry_after="3"),
        Fault.http_status(429, retry_after=http_date(30)),
    )
    assert isinstance(refund_once(fake, "sync", max_retries=2), Refund)
    assert sleeps[0] == 3.0
    assert 28 <= sleeps[1] <= 31


def test_retry_after_above_the_cap_is_raised_with_the_value(sleeps: list[float]) -> None:
    fake = FakePreo()
    fake.add_purchase("pur_1", price="10.00")
    fake.inject(Fault.http_status(503, retry_after="61"))
    result = refund_once(fake, "sync")
    assert isinstance(result, InternalServerError)
    assert result.retry_after == 61.0
    assert sleeps == []


@settings(max_examples=200, deadline=None)
@given(
    base=st.floats(0, 10),
    cap=st.floats(0, 60),
    attempt=st.integers(1, 12),
    retry_after=st.one_of(st.none(), st.floats(0, 100)),
)
def test_a_server_wait_is_honoured_but_never_below_the_backoff_floor(
    base: float, cap: float, attempt: int, retry_after: float | None
) -> None:
    backoff = Backoff(base=base, cap=cap)
    floor = backoff.floor(attempt)
    assert floor == min(cap, base * 2 ** (attempt - 1)) / 2
    delay = backoff.delay(attempt, retry_after)
    if retry_after is None:
        assert 0 <= delay <= 2 * floor
    elif retry_after >= floor:
        assert delay == retry_after  # the server's wait, exactly
    else:  # Retry-After: 0 or a tiny value: the backoff, never a hot loop
        assert floor <= delay <= 2 * floor


@pytest.mark.parametrize("kind", ["sync", "async"])
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    status=st.sampled_from([503, 429]),
    value=st.sampled_from(["0", "00", " 0", "0\t"]),  # "0.001" is not delay-seconds
    count=st.integers(1, 9),
)
def test_retry_after_zero_waits_the_backoff_floor_between_attempts(
    sleeps: list[float], kind: str, status: int, value: str, count: int
) -> None:
    """Issue 16 reproduction 12: a 503 with Retry-After: 0 was retried nine times with no
    wait at all. Each wait is now at least the backoff's floor for its attempt (virtual
    sleeps: nothing is timed)."""
    sleeps.clear()
    fake = FakePreo()
    fake.add_purchase("pur_1", price="10.00")
    fake.inject(*[Fault.http_status(status, retry_after=value)] * count)
    backoff = Backoff()  # the default: base 0.5 s, cap 8 s
    result = refund_once(fake, kind, max_retries=9, backoff=backoff)
    assert isinstance(result, Refund)
    assert len(fake.requests) == count + 1
    assert len(sleeps) == count
    for attempt, slept in enumerate(sleeps, start=1):
        assert slept >= backoff.floor(attempt) > 0, (attempt, sleeps)


def test_spent_retries_keep_retry_after() -> None:
    fake = FakePreo()
    fake.add_purchase("pur_1", price="10.00")
    fake.inject(*[Fault.http_status(429, retry_after="2")] * 3)
    result = refund_once(fake, "async")
    assert isinstance(result, RateLimitError)
    assert result.retry_after == 2.0
    assert len(fake.requests) == 3


def test_backoff_is_exponential_with_jitter_and_capped(sleeps: list[float]) -> None:
    fake = FakePreo()
    fake.add_purchase("pur_1", price="10.00")
    fake.inject(*[Fault.connect_error()] * 6)
    result = refund_once(fake, "sync", max_retries=5, backoff=Backoff(base=1.0, cap=3.0))
    assert isinstance(result, APIConnectionError)
    assert len(sleeps) == 5
    for attempt, slept in enumerate(sleeps, start=1):
        assert 0 <= slept <= min(3.0, 2 ** (attempt - 1))
    assert Backoff(0, 0).delay(1) == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        ("0", 0.0),
        (" \t7\t ", 7.0),
        ("2.5", None),  # delay-seconds is 1*DIGIT: no fraction
        ("-10", None),
        ("+5", None),
        ("1e1", None),
        ("1_0", None),
        ("\u0663", None),  # Arabic-Indic three
        ("\uff13", None),  # fullwidth three
        ("\u0669\u0669", None),
        ("\u0967\u0966\u0966", None),  # Devanagari 100
        ("\u00b2", None),  # superscript two
        ("\xa03", None),  # a no-break space is not optional whitespace
        ("Wed, 2_1 Oct 2099 07:28:00 GMT", None),
        ("Wed, \u0662\u0661 Oct 2099 07:28:00 GMT", None),
        ("9" * 400, sys.float_info.max),
        ("abc", None),
        ("", None),
        (None, None),
        ("inf", None),
        ("nan", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),  # in the past
        ("99999999999999999999", 1e20),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


NUMERAL_PARTS = st.sampled_from(
    ["0", "1", "7", "9", "+", "-", "_", ".", "e", "E", " ", "\t", "\u0663", "\uff13",
     "\u0669", "\u0967", "\u00b2", "\u2167", "\U0001d7d9", "\xa0", "inf", "nan", "0x1"]
)  # fmt: skip


@given(st.lists(NUMERAL_PARTS, min_size=1, max_size=6).map("".join))
def test_only_ascii_digits_are_seconds(value: str) -> None:
    """A Retry-After of ASCII digits (optional blanks around) is that many seconds; any
    other numeral Python would read (Unicode digits, "_", exponents, signs, fractions, hex)
    is unusable: the backoff applies."""
    text = value.strip(" \t")
    seconds = parse_retry_after(value)
    if text and all(c in "0123456789" for c in text):
        assert seconds == float(text)
    else:
        assert seconds is None


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("value", ["\u0663", "\uff13", "1_0", "1e1", "+5", "\u0669\u0669", "2.5"])
def test_a_numeral_that_is_not_delay_seconds_waits_the_backoff(
    kind: str, value: str, sleeps: list[float]
) -> None:
    """End to end: the 429 is retried after the backoff (never the numeral's value, and a
    large one such as "99" never raises at once)."""
    backoff = Backoff(base=0.5, cap=8.0)
    answers = iter(
        [
            httpx.Response(429, headers=[(b"retry-after", value.encode())], content=b"{}"),
            created(),
        ]
    )
    transport = httpx.MockTransport(lambda request: next(answers))
    if kind == "sync":
        with PreoClient(
            api_key=KEY, http_client=httpx.Client(transport=transport), backoff=backoff
        ) as client:
            refund = client.purchases.refund("pur_1", reason="sold_out")
    else:

        async def go() -> Refund:
            http = httpx.AsyncClient(transport=transport)
            async with AsyncPreoClient(api_key=KEY, http_client=http, backoff=backoff) as client:
                return await client.purchases.refund("pur_1", reason="sold_out")

        refund = asyncio.run(go())
    assert isinstance(refund, Refund)
    assert len(sleeps) == 1
    assert 0 <= sleeps[0] <= 2 * backoff.floor(1)  # the backoff, not the header


def test_caller_key_is_reused_across_attempts() -> None:
    fake = FakePreo()
    fake.add_purchase("pur_1", price="10.00")
    fake.inject(Fault.connect_error(), Fault.http_status(503))
    key = idempotency_key_for("pur_1", "cancellation-2026-07")
    with fake.client(backoff=NO_WAIT) as client:
        client.purchases.refund("pur_1", reason="sold_out", idempotency_key=key)
    assert [r.headers["idempotency-key"] for r in fake.requests] == [key] * 3
    assert key == idempotency_key_for("pur_1", "cancellation-2026-07")
    assert key != idempotency_key_for("pur_1", "cancellation-2026-08")
    assert key != idempotency_key_for("pur_2", "cancellation-2026-07")


def test_a_restarted_process_resends_the_same_key_and_gets_the_stored_refund() -> None:
    fake = FakePreo()
    fake.add_purchase("pur_1", price="10.00")
    key = idempotency_key_for("pur_1", "ticket-99")
    fake.inject(Fault.read_timeout())  # the first process dies without an answer
    with fake.client(backoff=NO_WAIT) as first, pytest.raises(RefundOutcomeUnknownError):
        first.purchases.refund("pur_1", reason="sold_out", idempotency_key=key)
    with fake.client(backoff=NO_WAIT) as second:  # "after a restart"
        refund = second.purchases.refund("pur_1", reason="sold_out", idempotency_key=key)
    assert refund.replayed
    assert len(fake.refunds) == 1
    assert refund.id == fake.refunds[0].id


def test_redirects_are_not_followed_so_the_key_cannot_leak() -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock.post("https://api.preo.dev/v1/purchases/pur_1/refund").mock(
            return_value=httpx.Response(
                307, headers={"location": "https://evil.example/v1/purchases/pur_1/refund"}
            )
        )
        evil = mock.post(url__startswith="https://evil.example").mock(return_value=created())
        with PreoClient(api_key=KEY, backoff=NO_WAIT) as client:
            with pytest.raises(APIStatusError) as info:
                client.purchases.refund("pur_1", reason="sold_out")
            # even a caller's httpx client that follows redirects is not allowed to
            injected = httpx.Client(follow_redirects=True)
            with (
                PreoClient(api_key=KEY, http_client=injected) as other,
                pytest.raises(APIStatusError),
            ):
                other.purchases.refund("pur_1", reason="sold_out")
            injected.close()
    assert info.value.status_code == 307
    assert evil.call_count == 0


def test_pool_timeout_is_retried() -> None:
    with respx.mock() as mock:
        route = mock.post("https://api.preo.dev/v1/purchases/pur_1/refund").mock(
            side_effect=[httpx.PoolTimeout("pool"), httpx.WriteTimeout("write"), created()]
        )
        with (
            PreoClient(api_key=KEY, backoff=NO_WAIT) as client,
            pytest.raises(APITimeoutError) as info,
        ):
            client.purchases.refund("pur_1", reason="sold_out")
    assert isinstance(info.value, RefundOutcomeUnknownError)  # a write timeout may have landed
    assert route.call_count == 2


def test_per_call_timeout_overrides_the_client() -> None:
    with respx.mock() as mock:
        route = mock.post("https://api.preo.dev/v1/purchases/pur_1/refund").mock(
            return_value=created()
        )
        with PreoClient(api_key=KEY, timeout=httpx.Timeout(20.0, connect=4.0)) as client:
            client.purchases.refund("pur_1", reason="sold_out")
            client.purchases.refund("pur_1", reason="sold_out", timeout=1.5)
    first, second = (call.request.extensions["timeout"] for call in route.calls)
    assert first == {"connect": 4.0, "read": 20.0, "write": 20.0, "pool": 20.0}
    assert second == {"connect": 1.5, "read": 1.5, "write": 1.5, "pool": 1.5}


def test_default_timeouts() -> None:
    client = PreoClient(api_key=KEY)
    assert client.timeout == httpx.Timeout(30.0, connect=5.0)
    assert client.max_retries == 2
    client.close()
