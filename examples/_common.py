"""Shared by the examples: a client for the real API or, with no PREO_API_KEY, the sandbox."""

from __future__ import annotations

import os

from preo_client import AsyncPreoClient, PreoClient
from preo_client.testing import FakePreo


def sandbox_or_real() -> tuple[PreoClient, FakePreo | None]:
    """A PreoClient for the real API when PREO_API_KEY is set, else for a demo sandbox."""
    if os.environ.get("PREO_API_KEY"):
        return PreoClient(), None
    fake = FakePreo.demo()
    return fake.client(), fake


def async_sandbox_or_real() -> tuple[AsyncPreoClient, FakePreo | None]:
    """The async twin of :func:`sandbox_or_real`."""
    if os.environ.get("PREO_API_KEY"):
        return AsyncPreoClient(), None
    fake = FakePreo.demo()
    return fake.async_client(), fake
