"""The pytest plugin (entry point ``pytest11``): sandbox fixtures for partners' test suites."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .._client import AsyncPreoClient, PreoClient
from .._retry import Backoff
from ._fake import FakePreo

__all__ = ["async_preo", "fake_preo", "preo"]


@pytest.fixture
def fake_preo() -> FakePreo:
    """A fresh, empty :class:`FakePreo`; add purchases with ``fake_preo.add_purchase``."""
    return FakePreo()


@pytest.fixture
def preo(fake_preo: FakePreo) -> Iterator[PreoClient]:
    """A :class:`PreoClient` wired to ``fake_preo`` (no network, no backoff sleeps)."""
    client = fake_preo.client(backoff=Backoff(base=0, cap=0))
    yield client
    client._http.close()


@pytest.fixture
def async_preo(fake_preo: FakePreo) -> AsyncPreoClient:
    """An :class:`AsyncPreoClient` wired to ``fake_preo`` (no network, no backoff sleeps).

    Its in-memory transport holds no sockets, so it needs no async teardown.
    """
    return fake_preo.async_client(backoff=Backoff(base=0, cap=0))
