"""The pytest11 plugin: a partner suite gets the fixtures just by installing the package."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

PARTNER_TEST = Path(__file__).parent / "partner" / "test_partner_style.py"


def test_partner_suite_runs_with_only_the_plugin_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makefile(".py", test_partner=PARTNER_TEST.read_text(encoding="utf-8"))
    pytester.makeini("[pytest]\nasyncio_mode = auto\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=2)


def test_the_readme_shows_the_partner_test() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    body = PARTNER_TEST.read_text(encoding="utf-8").split('"""', 2)[2].strip()
    assert body in readme
