"""The pytest plugin (entry point ``pytest11``): sandbox fixtures for partners' test suites.

Fixtures: ``fake_preo`` (a fresh :class:`FakePreo`), ``preo`` and ``async_preo`` (clients on
it). Neither client ever really sleeps: retry waits (``Retry-After``, backoff) are recorded
in ``fake_preo.slept`` and advance the sandbox's virtual clock.

``async def`` tests that use ``async_preo`` run without any async plugin: when no other plugin
(pytest-asyncio, anyio, ...) has taken such a test, this plugin runs it with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from typing import Any

import pytest

from .._client import AsyncPreoClient, PreoClient
from .._retry import Backoff
from ._fake import FakePreo

__all__ = ["async_preo", "fake_preo", "preo", "pytest_pyfunc_call"]


@pytest.fixture
def fake_preo() -> FakePreo:
    """A fresh, empty :class:`FakePreo`; add purchases with ``fake_preo.add_purchase``."""
    return FakePreo()


@pytest.fixture
def preo(fake_preo: FakePreo) -> Iterator[PreoClient]:
    """A :class:`PreoClient` wired to ``fake_preo`` (no network; waits are virtual)."""
    client = fake_preo.client(backoff=Backoff(base=0, cap=0))
    yield client
    client.close()


@pytest.fixture
def async_preo(fake_preo: FakePreo) -> AsyncPreoClient:
    """An :class:`AsyncPreoClient` wired to ``fake_preo`` (no network; waits are virtual).

    Its in-memory transport holds no sockets, so it needs no async teardown.
    """
    return fake_preo.async_client(backoff=Backoff(base=0, cap=0))


@pytest.hookimpl
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a coroutine test that uses ``async_preo`` when no async plugin has taken it.

    pytest-asyncio and anyio turn the tests they run into plain functions (or answer this hook
    first), so a test still a coroutine function here would otherwise be skipped by pytest.
    """
    function = pyfuncitem.obj
    if not inspect.iscoroutinefunction(function) or "async_preo" not in pyfuncitem.fixturenames:
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs: dict[str, Any] = {name: pyfuncitem.funcargs[name] for name in names}
    asyncio.run(function(**kwargs))
    return True
