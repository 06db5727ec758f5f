"""The README's Python snippets run as pasted, from the built wheel, in a fresh venv.

A snippet that needs the API runs against ``python -m preo_client.testing serve`` (from the
same wheel, with its defaults) through ``PREO_API_KEY`` / ``PREO_BASE_URL``; an async one
wraps itself in ``asyncio.run`` (top-level ``await`` is a SyntaxError in a script); a
pytest-style snippet is saved in a fresh project and run by pytest with no async plugin (only
preo-client's own). What a snippet leaves on disk (a journal's files) is what the README says.
Every run has a timeout.
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


def journal_files_after_a_clean_end(journal: str) -> set[str]:
    """The files the README says a journal leaves after a clean end (``PATH`` is its name)."""
    prose = " ".join(README.split())  # the sentence may wrap
    said = re.search(r"After a clean end ((?:`[^`]+`(?:, | and )?)+) (?:is|are) left", prose)
    assert said, "the README no longer says which journal files a clean end leaves"
    return {name.replace("PATH", journal) for name in re.findall(r"`([^`]+)`", said[1])}


@pytest.fixture(scope="module")
def sandbox_url(wheel_env: WheelEnv) -> Iterator[str]:
    """``python -m preo_client.testing serve`` from the wheel; by default it creates unknown
    purchases on first use, as the README's examples need."""
    server = subprocess.Popen(
        [str(wheel_env.python), "-m", "preo_client.testing", "serve", "--port", "0", "--quiet"],
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
    assert len(SNIPPETS) >= 5
    assert any("FakePreo.demo().client()" in code for code in SNIPPETS)
    assert any("def test_" in code for code in SNIPPETS)
    assert sum("AsyncPreoClient(" in code for code in SNIPPETS) >= 3
    assert any("journal=" in code for code in SNIPPETS)


@pytest.mark.parametrize("code", SNIPPETS, ids=lambda c: c.splitlines()[0][:40])
def test_every_snippet_is_valid_python_as_pasted(code: str) -> None:
    """No top-level ``await`` / ``async with`` (a SyntaxError in a script): an async snippet
    defines a coroutine and runs it with ``asyncio.run``."""
    compile(code, "<snippet>", "exec", dont_inherit=True)
    if ("async with" in code or "await " in code) and "def test_" not in code:
        assert "asyncio.run(" in code  # a test module's async tests are run by the plugin


@pytest.mark.parametrize(
    "code", [c for c in SNIPPETS if "def test_" not in c], ids=lambda c: c.splitlines()[0][:40]
)
def test_snippet_runs_from_the_wheel(
    code: str, wheel_env: WheelEnv, sandbox_url: str, tmp_path: Path
) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(code, encoding="utf-8")
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
    for journal in re.findall(r'journal="([^"]+)"', code):
        left = {p.name for p in tmp_path.iterdir() if p.name.startswith(journal)}
        assert left == journal_files_after_a_clean_end(journal)
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
