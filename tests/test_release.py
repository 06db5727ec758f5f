"""What a partner installs: the sdist and wheel's metadata and contents, the licence, the
changelog's version policy, the install commands the README and CI give, a quiet test command."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import preo_client
from tests._wheel import WheelEnv

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (the dev group installs tomli there)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
README = (ROOT / "README.md").read_text(encoding="utf-8")
INSTALL_FOR_WORK = "pip install -e '.[cli,fast]' --group dev"


def wheel_metadata(wheel: Path) -> tuple[set[str], dict[str, list[str]]]:
    """The wheel's file names, and its METADATA headers (name -> every value)."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        message = Parser().parsestr(archive.read(metadata).decode("utf-8"))
    headers: dict[str, list[str]] = {}
    for key, value in message.items():
        headers.setdefault(key, []).append(value)
    return names, headers


def test_the_wheel_publishes_no_dev_extra_and_names_the_project(wheel_env: WheelEnv) -> None:
    _, headers = wheel_metadata(wheel_env.wheel)
    extras = set(headers.get("Provides-Extra", []))
    assert "dev" not in extras
    assert {"cli", "fast"} <= extras
    dev_tools = ("pytest", "mypy", "ruff", "bandit", "schemathesis", "hypothesis", "pyright")
    for requirement in headers.get("Requires-Dist", []):
        assert not requirement.startswith(dev_tools), requirement
    urls = dict(value.split(", ", 1) for value in headers.get("Project-URL", []))
    assert "API" in urls  # the repository's own address is not settled (CHANGELOG.md)
    assert all(url.startswith("https://") for url in urls.values()), urls
    assert urls == PYPROJECT["project"]["urls"]
    assert headers["License-Expression"] == ["MIT"]
    assert headers["License-File"] == ["LICENSE"]
    assert headers["Version"] == [preo_client.__version__]
    assert headers["Requires-Python"] == [">=3.10"]


def test_the_dev_tools_are_a_dependency_group_not_an_extra() -> None:
    """PEP 735: a group is for working on the project and is never published."""
    assert "dev" not in PYPROJECT["project"]["optional-dependencies"]
    group = PYPROJECT["dependency-groups"]["dev"]
    names = {re.split(r"[\[<>=~! ]", requirement, maxsplit=1)[0] for requirement in group}
    assert {"pytest", "mypy", "ruff", "bandit", "schemathesis", "build", "hypothesis"} <= names
    assert "preo-client" not in names  # a group cannot install the project: `-e .[...]` does


def test_the_wheel_holds_the_package_its_types_and_licence_and_no_tests(
    wheel_env: WheelEnv,
) -> None:
    names, _ = wheel_metadata(wheel_env.wheel)
    (dist_info,) = {n.split("/", 1)[0] for n in names if ".dist-info/" in n}
    licence = f"{dist_info}/licenses/LICENSE"
    assert licence in names
    with zipfile.ZipFile(wheel_env.wheel) as archive:
        assert archive.read(licence) == (ROOT / "LICENSE").read_bytes()
    for expected in ("preo_client/py.typed", "preo_client/_generated/py.typed"):
        assert expected in names
    top = {n.split("/", 1)[0] for n in names}
    assert top == {"preo_client", dist_info}  # no tests/, benchmarks/, scripts/ or examples/
    shipped = {n for n in names if n.startswith("preo_client/") and n.endswith(".py")}
    in_tree = {str(p.relative_to(ROOT)) for p in (ROOT / "preo_client").rglob("*.py")}
    assert shipped == in_tree


def test_the_sdist_holds_what_building_and_testing_need(wheel_env: WheelEnv) -> None:
    """The suite's wheel is built from this sdist (``tests/_wheel.py``); here, what it holds."""
    with tarfile.open(wheel_env.sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for needed in (
        "pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "PKG-INFO",
        "preo_client/__init__.py", "preo_client/py.typed", "preo_client/_generated/py.typed",
        "openapi/preo.yaml", "generator_config.yaml", "scripts/test.py", "tests/conftest.py",
        "examples/quickstart.py", "benchmarks/run.py",
    ):  # fmt: skip
        assert needed in names, needed
    assert not [n for n in names if n.startswith((".venv/", ".schemathesis/", "dist/"))]
    assert not [n for n in names if "__pycache__" in n]


def test_the_licence_is_mit_as_the_metadata_says() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in text
    assert PYPROJECT["project"]["license"] == "MIT"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]


def test_the_changelog_states_the_version_policy_and_this_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    policy = text.split("## Version policy", 1)[1].split("\n## ", 1)[0]
    for promise in (
        "preo_client.__all__", "preo_client.testing.__all__", "exit codes", "journal",
        "PATCH", "MINOR", "MAJOR", "Before 1.0", "private",
    ):  # fmt: skip
        assert promise in policy, promise
    assert re.search(rf"^## {re.escape(preo_client.__version__)}\b", text, flags=re.MULTILINE)


def test_readme_says_how_to_install_today_and_once_published() -> None:
    install = README.split("## Install and a first refund", 1)[1].split("\n## ", 1)[0]
    assert "pip install preo-client" in install  # for when it is published
    assert "on no package index" in install  # said plainly
    for way in ("git+", "python -m build", ".whl", "a checkout"):
        assert way in install, way


def test_readme_and_ci_install_the_same_way() -> None:
    """The README's second command and ``.ci/run`` both install with the dev group, after
    upgrading pip (``--group`` needs pip >= 25.1)."""
    first, second = README.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    assert first.endswith("examples/quickstart.py")
    assert second.startswith("python3 -m venv .venv && ")
    assert "-m pip install --upgrade pip" in second
    assert INSTALL_FOR_WORK in second
    assert second.endswith("scripts/test.py")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "-m pip install --quiet --upgrade pip" in ci
    assert INSTALL_FOR_WORK.replace("pip install", "pip install --quiet") in ci
    assert "[dev]" not in ci + README


def test_a_schemathesis_cache_is_never_tracked() -> None:
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert ".schemathesis/" in ignored
    if (ROOT / ".git").exists():  # a checkout (an unpacked sdist has no git metadata)
        tracked = subprocess.run(
            ["git", "ls-files", ".schemathesis"], cwd=ROOT, capture_output=True, text=True,
            timeout=60, check=True,
        ).stdout  # fmt: skip
        assert tracked == ""


@pytest.mark.skipif(importlib.util.find_spec("bandit") is None, reason="bandit not installed")
def test_bandit_runs_quietly() -> None:
    """The test command's bandit step prints nothing when it passes: a ``# nosec`` comment
    names its test ids only (``# nosec B101  # why``); prose after them was read as ids."""
    result = subprocess.run(
        [sys.executable, "-m", "bandit", "-q", "-r", "preo_client", "-x", "preo_client/_generated"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout
    assert result.stdout + result.stderr == ""
