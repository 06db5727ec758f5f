"""The wheel: builds, carries the typed package, the generated code and the plugin, installs
into a clean venv and imports there; its public API is fully typed (pyright) and documented."""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import pydoc
import re
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import attrs
import pytest

import preo_client
from preo_client import (
    AsyncBulkRun,
    AsyncPreoClient,
    BulkRun,
    BulkSummary,
    PreoClient,
    Refund,
    RefundItem,
    RefundOutcome,
)
from preo_client._generated.models import RefundReason, RefundScope, RefundStatus
from preo_client._resources import AsyncPurchases, Purchases
from tests._wheel import WheelEnv

ROOT = Path(__file__).resolve().parent.parent
# Seconds pyright may take (about 2 s here): past that it is killed and the test fails.
PYRIGHT_TIMEOUT = 300.0
GENERATED = (RefundReason, RefundScope, RefundStatus)


def test_wheel_builds_installs_and_imports(wheel_env: WheelEnv, tmp_path: Path) -> None:
    wheel = wheel_env.wheel
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(n for n in names if n.endswith("METADATA"))
        meta = archive.read(metadata).decode()
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt")))
    for expected in (
        "preo_client/py.typed",
        "preo_client/_generated/api/purchases/create_purchase_refund.py",
        "preo_client/testing/_plugin.py",
    ):
        assert expected in names
    assert not any(n.startswith("tests/") for n in names)
    assert "Requires-Python: >=3.10" in meta
    runtime = sorted(
        line.split(" ", 1)[1].split(";")[0]
        for line in meta.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    )
    assert runtime == ["attrs>=23.1", "httpx<1,>=0.27", "python-dateutil>=2.8"]
    assert b"preo_client = preo_client.testing._plugin" in entry_points

    # A clean venv: the wheel alone (no network); its dependencies come from this
    # environment's site-packages through PYTHONPATH, which does not see our editable install.
    python = wheel_env.python
    env_dir = python.parent.parent
    code = (
        "import preo_client, pathlib; from preo_client import PreoClient, plan_refund;"
        "print(pathlib.Path(preo_client.__file__).parent);"
        "print(plan_refund('sold_out').scope)"
    )
    result = subprocess.run(
        [str(python), "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env=wheel_env.environ(),
        cwd=tmp_path,
    )
    where, scope = result.stdout.split()
    assert Path(where).is_relative_to(env_dir)
    assert scope == "purchase_full"


def clip(text: str, keep: int = 1500) -> str:
    """The start and the end of a long output (the cause is often first, the trace last)."""
    return text if len(text) <= 2 * keep else f"{text[:keep]}\n[...]\n{text[-keep:]}"


def run_bounded(
    command: list[str], *, env: dict[str, str], cwd: Path, timeout: float
) -> tuple[int, str, str]:
    """Run ``command``; past ``timeout`` kill its whole process group (node included) and fail."""
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(
                f"{command[:4]} did not finish within {timeout:.0f} s (killed): pyright may be "
                f"waiting for a download of Node.js or of its npm package.\nstderr: {clip(stderr)}",
                pytrace=False,
            )
        return process.returncode, stdout, stderr


def test_a_hanging_check_is_killed_and_fails(tmp_path: Path) -> None:
    """The watchdog: a command that hangs (with a child holding its output open, like node
    under pyright's wrapper) fails the test instead of blocking the run."""
    hang = (
        "import subprocess, sys, time;"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']);"
        "time.sleep(120)"
    )
    with pytest.raises(pytest.fail.Exception, match="did not finish within 1 s"):
        run_bounded([sys.executable, "-c", hang], env=dict(os.environ), cwd=tmp_path, timeout=1)


@pytest.mark.skipif(
    importlib.util.find_spec("pyright") is None,
    reason="pyright is not installed (it is in the dev group: pip install -e . --group dev)",
)
def test_installed_package_is_fully_typed(wheel_env: WheelEnv, tmp_path: Path) -> None:
    """``pyright --verifytypes`` on the wheel as a user installs it: every public symbol (and
    every symbol they reference) has a known, unambiguous type."""
    env = wheel_env.environ(PYRIGHT_PYTHON_IGNORE_WARNINGS="1")
    # --verifytypes resolves the package with the first `python` on PATH: the wheel's venv.
    env["PATH"] = f"{wheel_env.python.parent}{os.pathsep}{env.get('PATH', '')}"
    for name in ("PYRIGHT_PYTHON_FORCE_VERSION", "PYRIGHT_PYTHON_PYLANCE_VERSION"):
        env.pop(name, None)  # the pinned release, the one the dev group installs
    command = [
        sys.executable, "-m", "pyright", "--verifytypes", "preo_client", "--ignoreexternal",
        "--outputjson", "--pythonpath", str(wheel_env.python),
    ]  # fmt: skip
    code, stdout, stderr = run_bounded(command, env=env, cwd=tmp_path, timeout=PYRIGHT_TIMEOUT)
    try:
        report: dict[str, Any] = json.loads(stdout)
        completeness = report["typeCompleteness"]
    except (ValueError, KeyError):
        pytest.fail(
            f"pyright gave no type completeness report (exit code {code}); it needs Node.js "
            "(the dev group installs pyright[nodejs]).\n"
            f"stdout: {clip(stdout)}\nstderr: {clip(stderr)}",
            pytrace=False,
        )
    root = completeness["packageRootDirectory"]
    assert root, report["generalDiagnostics"]
    assert Path(root).is_relative_to(wheel_env.python.parent.parent), root  # the wheel's copy
    problems = [
        f"{symbol['name']}: {diagnostic['message']}"
        for symbol in completeness["symbols"]
        for diagnostic in symbol["diagnostics"]
        if diagnostic["severity"] == "error"
    ]
    counts = completeness["exportedSymbolCounts"]
    assert counts["withKnownType"] >= 60, counts  # the public API was really seen
    assert completeness["completenessScore"] == 1.0, "\n".join(problems)
    assert code == 0, stdout[-2000:]


# -- what help() shows ---------------------------------------------------------------------


def help_text(thing: object) -> str:
    return pydoc.render_doc(thing, renderer=pydoc.plaintext)


def documented_names(doc: str | None) -> set[str]:
    """Names a docstring documents: each one written as ``name``."""
    return set(re.findall(r"``([a-z_][a-z0-9_]*)``", doc or ""))


def public_members(cls: type) -> dict[str, Any]:
    """Public methods and properties of ``cls`` and its private preo_client bases."""
    members: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        own = klass is cls or klass.__name__.startswith("_")
        if own and klass.__module__.startswith("preo_client"):
            for name, value in vars(klass).items():
                if not name.startswith("_"):
                    members[name] = value
    return {
        name: value.fget if isinstance(value, property) else value
        for name, value in members.items()
        if isinstance(value, property) or inspect.isfunction(value)
    }


def test_help_shows_every_default_readably() -> None:
    client = PreoClient(api_key="sk_test", base_url="https://preo.test")
    with client:
        things = [
            preo_client, PreoClient, AsyncPreoClient, client.purchases, client.purchases.refund,
            client.purchases.refund_many, Refund, RefundItem, RefundOutcome, BulkSummary,
            BulkRun, AsyncBulkRun,
        ]  # fmt: skip
        for thing in things:
            text = help_text(thing)
            assert "object at 0x" not in text, re.findall(r".*object at 0x.*", text)


def test_public_classes_document_their_methods_and_properties() -> None:
    for name in preo_client.__all__:
        value = getattr(preo_client, name)
        if not isinstance(value, type) or value in GENERATED:
            continue  # re-exported as openapi-python-client generates them
        assert vars(value).get("__doc__"), name
        for member, function in public_members(value).items():
            assert function.__doc__, f"{name}.{member}"
    for cls in (Purchases, AsyncPurchases):
        for member, function in public_members(cls).items():
            assert function.__doc__, f"{cls.__name__}.{member}"


@pytest.mark.parametrize("cls", [RefundItem, RefundOutcome, BulkSummary])
def test_bulk_records_document_every_field(cls: type) -> None:
    fields = {field.alias for field in attrs.fields(cls) if not field.name.startswith("_")}
    properties = {n for n, v in vars(cls).items() if isinstance(v, property)}
    missing = (fields | properties) - documented_names(cls.__doc__)
    assert not missing, f"{cls.__name__} does not document {sorted(missing)}"


@pytest.mark.parametrize("cls", [BulkRun, AsyncBulkRun])
def test_bulk_runs_document_their_attributes(cls: type) -> None:
    missing = {"summary", "run_id", "pacer"} - documented_names(cls.__doc__)
    assert not missing, f"{cls.__name__} does not document {sorted(missing)}"


@pytest.mark.parametrize("cls", [PreoClient, AsyncPreoClient])
def test_clients_document_every_setting(cls: type) -> None:
    settings = set(inspect.signature(cls).parameters)
    missing = settings - documented_names(cls.__doc__)
    assert not missing, f"{cls.__name__} does not document {sorted(missing)}"


def test_refund_documents_every_argument_once_for_both_clients() -> None:
    doc = Purchases.refund.__doc__
    assert doc is not None
    assert AsyncPurchases.refund.__doc__ == doc  # written out twice for IDEs: kept identical
    arguments = set(inspect.signature(Purchases.refund).parameters) - {"self"}
    assert arguments == set(inspect.signature(AsyncPurchases.refund).parameters) - {"self"}
    missing = arguments - documented_names(doc)
    assert not missing, f"refund() does not document {sorted(missing)}"
    for method in (Purchases.refund_many, AsyncPurchases.refund_many):
        assert method.__doc__
