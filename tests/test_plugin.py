"""The pytest11 plugin: a partner suite gets the fixtures just by installing the package."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preo_client import AsyncPreoClient, PreoClient, RateLimitError
from preo_client._retry import Backoff
from preo_client.testing import FakePreo, Fault

pytest_plugins = ["pytester"]

PARTNER_TEST = Path(__file__).parent / "partner" / "test_partner_style.py"
WATCHDOG = 120  # seconds: a hung inner pytest run fails this test instead of blocking CI


def _partner_suite(pytester: pytest.Pytester, ini: str | None) -> None:
    pytester.makefile(".py", test_partner=PARTNER_TEST.read_text(encoding="utf-8"))
    if ini is not None:
        pytester.makeini(ini)


def test_partner_suite_runs_with_pytest_asyncio_auto_mode(pytester: pytest.Pytester) -> None:
    _partner_suite(pytester, "[pytest]\nasyncio_mode = auto\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", timeout=WATCHDOG)
    result.assert_outcomes(passed=2)


def test_partner_suite_runs_with_pytest_asyncio_strict_mode(pytester: pytest.Pytester) -> None:
    """Strict mode leaves the unmarked coroutine test alone: the plugin runs it."""
    _partner_suite(pytester, "[pytest]\nasyncio_mode = strict\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", timeout=WATCHDOG)
    result.assert_outcomes(passed=2)


def test_partner_suite_runs_without_any_async_plugin(pytester: pytest.Pytester) -> None:
    """As in a fresh project with only preo-client and pytest: no pytest-asyncio, no anyio."""
    _partner_suite(pytester, None)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:asyncio", "-p", "no:anyio", "-q", "-W", "error",
        timeout=WATCHDOG,
    )  # fmt: skip
    result.assert_outcomes(passed=2)
    assert "coroutine" not in result.stdout.str()  # no "async def functions are not natively
    # supported" skip, no "coroutine was never awaited" warning


def test_a_failing_async_test_fails_without_any_async_plugin(pytester: pytest.Pytester) -> None:
    """The plugin really runs the coroutine: an assertion inside it fails the test."""
    pytester.makepyfile(
        test_fails="""
        async def test_fails(fake_preo, async_preo):
            fake_preo.add_purchase("pur_1", price="5.00")
            refund = await async_preo.purchases.refund("pur_1", reason="sold_out")
            assert refund.amount == 0, "reached"
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:asyncio", "-p", "no:anyio", "-q", timeout=WATCHDOG
    )  # fmt: skip
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: reached*"])


def test_the_readme_shows_the_partner_test() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    body = PARTNER_TEST.read_text(encoding="utf-8").split('"""', 2)[2].strip()
    assert body in readme


def test_preo_fixture_never_sleeps_it_records_the_waits(
    fake_preo: FakePreo, preo: PreoClient
) -> None:
    fake_preo.add_purchase("pur_1", price="5.00")
    fake_preo.inject(*[Fault.http_status(429, retry_after="1")] * 3)
    with pytest.raises(RateLimitError):
        preo.purchases.refund("pur_1", reason="sold_out")
    assert fake_preo.slept == [1.0, 1.0]  # the two waits between the three attempts
    assert len(fake_preo.requests) == 3
    assert fake_preo.refunds == []


async def test_async_preo_fixture_never_sleeps(
    fake_preo: FakePreo, async_preo: AsyncPreoClient
) -> None:
    fake_preo.add_purchase("pur_1", price="5.00")
    fake_preo.inject(*[Fault.http_status(503, retry_after="7")] * 2)
    refund = await asyncio.wait_for(
        async_preo.purchases.refund("pur_1", reason="sold_out"), timeout=WATCHDOG
    )  # a real 14 s sleep would still pass; the recorded waits are the proof
    assert refund.amount == 5
    assert fake_preo.slept == [7.0, 7.0]


def test_virtual_sleep_advances_the_sandbox_clock() -> None:
    fake = FakePreo()
    before = fake.clock()
    fake.virtual_sleep(3600)
    assert fake.clock() - before >= 3600
    assert fake.slept == [3600]


def test_real_sleep_opts_out_of_the_virtual_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    from preo_client import _client as client_module

    real: list[float] = []
    monkeypatch.setattr(client_module, "_sleep", real.append)  # stands in for time.sleep
    fake = FakePreo()
    fake.add_purchase("pur_1", price="5.00")
    fake.inject(Fault.http_status(429, retry_after="2"))
    with fake.client(real_sleep=True) as client:
        client.purchases.refund("pur_1", reason="sold_out")
    assert (real, fake.slept) == ([2.0], [])


def test_fake_clients_own_and_close_the_http_client_they_create() -> None:
    fake = FakePreo()
    client = fake.client()
    assert client._owns_http
    client.close()
    assert client._http.is_closed

    async def run() -> httpx.AsyncClient:
        async_client = fake.async_client()
        assert async_client._owns_http
        await async_client.aclose()
        return async_client._http

    assert asyncio.run(run()).is_closed


def test_an_injected_http_client_stays_the_callers() -> None:
    fake = FakePreo()
    http = httpx.Client(transport=fake.transport())
    client = fake.client(http_client=http)
    assert not client._owns_http
    client.close()
    assert not http.is_closed
    http.close()


@settings(max_examples=50, deadline=None)
@given(
    waits=st.lists(st.integers(min_value=1, max_value=60), max_size=2),
    status=st.sampled_from([429, 503]),
)
def test_every_server_wait_is_recorded_never_slept(waits: list[int], status: int) -> None:
    """Whatever Retry-After the server sends (up to the client's 60 s cap), the fake's client
    records exactly those waits, and the sandbox clock moves by them."""
    fake = FakePreo()
    fake.add_purchase("pur_1", price="5.00")
    fake.inject(*[Fault.http_status(status, retry_after=str(w)) for w in waits])
    before = fake.clock()
    with fake.client(backoff=Backoff(base=0, cap=0)) as client:
        refund = client.purchases.refund("pur_1", reason="sold_out")
    assert refund.amount == 5
    assert fake.slept == [float(w) for w in waits]
    assert fake.clock() - before >= sum(waits)
    assert len(fake.refunds) == 1
