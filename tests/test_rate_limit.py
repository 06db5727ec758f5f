"""The sandbox's rate limit: token buckets per API key, on a clock the tests move by hand."""

from __future__ import annotations

import math

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preo_client import ConfigurationError, RateLimitError
from preo_client.testing import DEMO_API_KEY, FakePreo
from preo_client.testing._ratelimit import RateLimiter, TokenBucket, retry_after_header
from tests._contract import check_response

URL = "https://sandbox.preo.test/v1/purchases/{}/refund"
EPS = 1e-9


class Clock:
    """A clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def post(fake: FakePreo, purchase: str, key: str = DEMO_API_KEY, n: int = 0) -> httpx.Response:
    request = httpx.Request(
        "POST",
        URL.format(purchase),
        headers={"authorization": f"Bearer {key}", "idempotency-key": f"k-{purchase}-{n}"},
        json={"reason": "compensation", "scope": "purchase_custom", "amount": "0.01"},
    )
    return fake.handle(request)


def most_in_any_window(times: list[float], width: float) -> int:
    """The most of the sorted ``times`` inside any closed window of length ``width``."""
    best = 0
    j = 0
    for i, start in enumerate(times):
        j = max(j, i)
        while j < len(times) and times[j] <= start + width + EPS:
            j += 1
        best = max(best, j - i)
    return best


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=200),
    burst=st.integers(min_value=1, max_value=20),
    gaps=st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=150),
)
def test_granted_requests_never_exceed_rate_times_window_plus_burst(
    rate: float, burst: int, gaps: list[float]
) -> None:
    now = 0.0
    granted: list[float] = []
    bucket = TokenBucket(rate, burst, now)
    for gap in gaps:
        now += gap
        if bucket.take(now) == 0:
            granted.append(now)
    for a in granted:  # every window that starts at a granted request (the worst ones)
        for b in granted:
            if b >= a:
                inside = sum(1 for t in granted if a <= t <= b)
                assert inside <= rate * (b - a) + burst + EPS


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=200),
    burst=st.integers(min_value=1, max_value=20),
    gaps=st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=60),
)
def test_a_refused_request_is_granted_after_the_wait_it_was_told(
    rate: float, burst: int, gaps: list[float]
) -> None:
    now = 0.0
    bucket = TokenBucket(rate, burst, now)
    for gap in gaps:
        now += gap
        wait = bucket.take(now)
        if wait > 0:
            assert wait <= 1 / rate + EPS  # never longer than one token's refill
            now += wait + EPS
            assert bucket.take(now) == 0


def test_bucket_starts_full_then_refills_at_rate() -> None:
    bucket = TokenBucket(2, 3, 0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0, 0, 0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.25) == pytest.approx(0.25)  # half a token refilled
    assert bucket.take(0.5) == 0
    assert bucket.take(100.0) == 0  # refills, but to `burst` at most
    assert [bucket.take(100.0) for _ in range(3)] == [0, 0, pytest.approx(0.5)]


def test_buckets_are_per_key() -> None:
    clock = Clock()
    limiter = RateLimiter(1, 1, clock)
    assert limiter.take("a") == 0
    assert limiter.take("a") > 0
    assert limiter.take("b") == 0


@pytest.mark.parametrize(
    ("wait", "header"), [(0.001, "1"), (0.5, "1"), (1.0, "1"), (1.01, "2"), (2.5, "3")]
)
def test_retry_after_is_whole_seconds_rounded_up(wait: float, header: str) -> None:
    assert retry_after_header(wait) == header


@settings(max_examples=100, deadline=None)
@given(
    rate=st.sampled_from([0.5, 1, 3, 10]),
    burst=st.integers(min_value=1, max_value=5),
    schedule=st.lists(
        st.tuples(st.floats(min_value=0, max_value=2), st.sampled_from(["sk_a", "sk_b"])),
        min_size=1,
        max_size=40,
    ),
)
def test_the_sandbox_throttles_per_key_and_keeps_an_honest_ledger(
    rate: float, burst: int, schedule: list[tuple[float, str]]
) -> None:
    clock = Clock()
    fake = FakePreo(api_key="sk_a", rate_limit=rate, burst=burst, clock=clock)
    fake.add_purchase("pur_a", price="1000.00")
    granted: dict[str, list[float]] = {"sk_a": [], "sk_b": []}
    statuses = []
    for n, (gap, key) in enumerate(schedule):
        clock.now += gap
        response = post(fake, "pur_a", key=key, n=n)
        statuses.append(response.status_code)
        if response.status_code == 429:
            check_response(response)  # the documented shape: ErrorDetail, Retry-After
            assert response.json()["detail"].startswith("Request was throttled.")
            retry_after = int(response.headers["retry-after"])
            assert retry_after >= 1
        else:
            granted[key].append(clock.now)
            assert response.status_code == (201 if key == "sk_a" else 401)
    assert fake.throttled == statuses.count(429)
    assert len(fake.refunds) == statuses.count(201)  # a 429 creates nothing
    assert len(fake.requests) == len(schedule)  # every request is listed, throttled or not
    for times in granted.values():
        for width in (0.0, 0.5, 1.0, 3.0):
            assert most_in_any_window(times, width) <= rate * width + burst + EPS


def test_no_retry_after_header_when_disabled() -> None:
    clock = Clock()
    fake = FakePreo(rate_limit=1, burst=1, send_retry_after=False, clock=clock)
    fake.add_purchase("pur_1", price="10.00")
    assert post(fake, "pur_1").status_code == 201
    refused = post(fake, "pur_1", n=1)
    assert refused.status_code == 429
    assert "retry-after" not in refused.headers
    check_response(refused)


def test_settable_later_and_removable() -> None:
    clock = Clock()
    fake = FakePreo(clock=clock)
    fake.add_purchase("pur_1", price="10.00")
    assert all(post(fake, "pur_1", n=n).status_code == 201 for n in range(20))
    fake.set_rate_limit(1, burst=2)
    assert [post(fake, "pur_1", n=n).status_code for n in range(20, 23)] == [201, 201, 429]
    clock.now += 1
    assert post(fake, "pur_1", n=23).status_code == 201
    fake.set_rate_limit(None)
    assert all(post(fake, "pur_1", n=n).status_code == 201 for n in range(24, 40))
    assert fake.throttled == 1


def test_a_client_waits_out_the_limit_on_the_virtual_clock() -> None:
    """Retry-After is slept virtually, which advances the sandbox clock: the retry passes."""
    fake = FakePreo(rate_limit=1, burst=1)
    fake.add_purchase("pur_1", price="10.00")
    with fake.client() as client:
        for n in range(3):
            client.purchases.refund("pur_1", reason="compensation", amount=f"0.0{n + 1}")
    assert len(fake.refunds) == 3
    assert fake.throttled == len(fake.slept) >= 2
    assert all(wait == 1.0 for wait in fake.slept)


def test_a_client_without_retries_sees_rate_limit_error() -> None:
    fake = FakePreo(rate_limit=0.001, burst=1)
    fake.add_purchase("pur_1", price="10.00")
    with fake.client(max_retries=0) as client:
        client.purchases.refund("pur_1", reason="compensation", amount="1.00")
        with pytest.raises(RateLimitError) as info:
            client.purchases.refund("pur_1", reason="compensation", amount="1.00")
    assert info.value.retry_after == 1000
    assert len(fake.refunds) == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rate_limit": 0}, "rate_limit"),
        ({"rate_limit": -1.0}, "rate_limit"),
        ({"rate_limit": math.nan}, "rate_limit"),
        ({"rate_limit": math.inf}, "rate_limit"),
        ({"rate_limit": True}, "rate_limit"),
        ({"rate_limit": 1, "burst": 0}, "burst"),
        ({"rate_limit": 1, "burst": 1.5}, "burst"),
        ({"latency": -0.1}, "latency"),
        ({"latency": math.inf}, "latency"),
        ({"latency_jitter": -1}, "latency_jitter"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError, match=f"^{field} must be"):
        FakePreo(**kwargs)  # type: ignore[arg-type]
