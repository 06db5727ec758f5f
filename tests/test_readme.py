"""The README's Python snippets run as written from the built wheel, in a fresh venv.

A snippet that needs the API runs against ``preo sandbox serve`` (from the same wheel) through
``PREO_API_KEY`` / ``PREO_BASE_URL``; one with top-level ``await`` runs inside ``asyncio.run``
as it would in a partner's coroutine; a pytest-style snippet is saved in a fresh project and
run by pytest with no async plugin (only preo-client's own). Every run has a timeout.
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._wheel import WheelEnv

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SNIPPETS = [
    textwrap.dedent(code)
    for code in re.findall(r"^ *```python\n(.*?)^ *```", README, flags=re.DOTALL | re.MULTILINE)
]


def _has_top_level_await(code: str) -> bool:
    try:
        compile(code, "<snippet>", "exec", dont_inherit=True)
    except SyntaxError:
        return True  # `async with` / `await` outside a function
    return False


def _runnable(code: str) -> str:
    if not _has_top_level_await(code):
        return code
    body = textwrap.indent(code, "    ")
    return f"import asyncio\n\n\nasync def _snippet():\n{body}\n\nasyncio.run(_snippet())\n"


@pytest.fixture(scope="module")
def sandbox_url(wheel_env: WheelEnv) -> Iterator[str]:
    """``python -m preo_client.testing serve`` from the wheel, creating purchases on first use."""
    server = subprocess.Popen(
        [str(wheel_env.python), "-m", "preo_client.testing", "serve", "--port", "0", "--quiet",
         "--auto-purchases"],
        stdout=subprocess.PIPE,
        text=True,
        env=wheel_env.environ(),
        cwd=wheel_env.root,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        first = server.stdout.readline().strip()
        assert first.startswith("serving on http://"), first
        yield first.removeprefix("serving on ")
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stdout is not None:
            server.stdout.close()


def test_every_python_snippet_is_covered() -> None:
    assert len(SNIPPETS) >= 3
    assert any("FakePreo.demo().client()" in code for code in SNIPPETS)
    assert any("def test_" in code for code in SNIPPETS)


@pytest.mark.parametrize(
    "code", [c for c in SNIPPETS if "def test_" not in c], ids=lambda c: c.splitlines()[0][:40]
)
def test_snippet_runs_from_the_wheel(
    code: str, wheel_env: WheelEnv, sandbox_url: str, tmp_path: Path
) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(_runnable(code), encoding="utf-8")
    environ = wheel_env.environ(PREO_API_KEY="sk_sandbox_demo", PREO_BASE_URL=sandbox_url)
    result = subprocess.run(
        [str(wheel_env.python), str(script)],
        capture_output=True,
        text=True,
        env=environ,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    if "FakePreo.demo().client()" in code:
        assert re.fullmatch(
            r"Refund\(id='rr_\w+', amount=Decimal\('51\.50'\), scope='purchase_full', "
            r"status='requested', request_id='req_\w+', replayed=False\)\n",
            result.stdout,
        ), result.stdout


@pytest.mark.parametrize("async_plugin", ["none", "pytest-asyncio"])
def test_partner_test_snippet_runs_in_a_fresh_project(
    wheel_env: WheelEnv, tmp_path: Path, async_plugin: str
) -> None:
    (code,) = [c for c in SNIPPETS if "def test_" in c]
    (tmp_path / "test_partner.py").write_text(code, encoding="utf-8")
    flags = ["-p", "no:asyncio", "-p", "no:anyio"] if async_plugin == "none" else [
        "-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function"
    ]  # fmt: skip
    result = subprocess.run(
        [str(wheel_env.python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *flags,
         "-W", "error", "test_partner.py"],
        capture_output=True,
        text=True,
        env=wheel_env.environ(),
        cwd=tmp_path,
        timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    tests = len(re.findall(r"^(?:async )?def test_", code, flags=re.MULTILINE))
    assert f"{tests} passed" in result.stdout, result.stdout
    assert os.sep + "venv" + os.sep not in result.stdout  # no traceback paths
