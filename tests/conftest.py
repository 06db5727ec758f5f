"""Suite-wide fixtures: every request the SDK sends and every answer the sandbox gives is
checked against openapi/preo.yaml (the contract), whichever test sends it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from preo_client.testing import FakePreo
from preo_client.testing import _fake as fake_module
from tests._contract import OPERATION_PATH, check_request, check_response
from tests._wheel import WheelEnv, build_wheel_env

CHECKED: dict[str, int] = {"requests": 0, "responses": 0}


@pytest.fixture(autouse=True)
def _contract(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validate each refund request at send time and each sandbox answer it computes."""
    sync_send = httpx.Client.send
    async_send = httpx.AsyncClient.send

    def send(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        if "/v1/purchases/" in request.url.path:
            check_request(request)
            CHECKED["requests"] += 1
        return sync_send(self, request, **kwargs)

    async def asend(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> Any:
        if "/v1/purchases/" in request.url.path:
            check_request(request)
            CHECKED["requests"] += 1
        return await async_send(self, request, **kwargs)

    process = fake_module.FakePreo._process

    def checked_process(self: FakePreo, request: httpx.Request) -> httpx.Response:
        response = process(self, request)
        if request.method == "POST" and OPERATION_PATH.fullmatch(request.url.path):
            check_response(response)
            CHECKED["responses"] += 1
        return response

    monkeypatch.setattr(httpx.Client, "send", send)
    monkeypatch.setattr(httpx.AsyncClient, "send", asend)
    monkeypatch.setattr(fake_module.FakePreo, "_process", checked_process)


@pytest.fixture
def no_contract_request_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests that send deliberately off-contract requests (e.g. to the sandbox directly)."""
    monkeypatch.setattr("tests.conftest.check_request", lambda request: None)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(
        f"contract: {CHECKED['requests']} requests and {CHECKED['responses']} sandbox "
        "responses validated against openapi/preo.yaml"
    )


@pytest.fixture(scope="session")
def wheel_env(tmp_path_factory: pytest.TempPathFactory) -> WheelEnv:
    """The built wheel alone in a fresh venv (built once per run)."""
    return build_wheel_env(tmp_path_factory.mktemp("wheel"))
