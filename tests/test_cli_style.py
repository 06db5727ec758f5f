"""The command line in one style: every option documented, the policy's values as choices
(shell completion included), ``sandbox serve`` as a click command reachable two ways, and the
README's ``preo refund pur_123`` line working against it."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from preo_client._cli import cli
from preo_client._policy import REASONS, SCOPES
from preo_client.testing import DEMO_API_KEY
from preo_client.testing.__main__ import main as sandbox_main
from tests.test_sandbox_server import Served

ROOT = Path(__file__).resolve().parent.parent
PREO = str(Path(sys.executable).with_name("preo"))
WATCHDOG = 60.0


def commands(group: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of every command under ``group`` (the group itself included)."""
    yield path
    if isinstance(group, click.Group):
        for name, command in group.commands.items():
            yield from commands(command, (*path, name))


def command_at(root: click.Command, path: tuple[str, ...]) -> click.Command:
    for name in path:
        assert isinstance(root, click.Group)
        root = root.commands[name]
    return root


ALL = [(cli, p) for p in commands(cli)] + [(sandbox_main, p) for p in commands(sandbox_main)]


def test_every_command_is_walked() -> None:
    paths = {" ".join(p) for _, p in ALL}
    assert {"", "refund", "refund-bulk", "sandbox", "sandbox serve", "serve"} <= paths


@pytest.mark.parametrize(("root", "path"), ALL, ids=[" ".join(p) or "(top)" for _, p in ALL])
def test_every_option_of_every_command_has_help(root: click.Command, path: tuple[str, ...]) -> None:
    command = command_at(root, path)
    assert command.help, f"{' '.join(path)} has no description"
    undocumented = [
        param.opts[0]
        for param in command.params
        if isinstance(param, click.Option) and not (param.help or "").strip()
    ]
    assert not undocumented, f"{' '.join(path) or 'preo'}: no help for {undocumented}"


@pytest.mark.parametrize(("root", "path"), ALL, ids=[" ".join(p) or "(top)" for _, p in ALL])
def test_help_style_is_clicks_everywhere(root: click.Command, path: tuple[str, ...]) -> None:
    """``-h`` and ``--help`` on every command, click's layout, each option listed."""
    runner = CliRunner()
    for flag in ("-h", "--help"):
        result = runner.invoke(root, [*path, flag])
        assert result.exit_code == 0, result.output
        assert result.output.startswith("Usage: ")
        assert "\nOptions:\n" in result.output
    command = command_at(root, path)
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.opts[0] in result.output


def test_the_two_spellings_of_sandbox_serve_are_one_command() -> None:
    assert command_at(cli, ("sandbox", "serve")) is command_at(sandbox_main, ("serve",))
    helps = [
        subprocess.run(
            [*command, "--help"], capture_output=True, text=True, timeout=WATCHDOG, check=True
        ).stdout
        for command in (
            [PREO, "sandbox", "serve"],
            [sys.executable, "-m", "preo_client.testing", "serve"],
        )
    ]
    assert helps[0].replace("preo sandbox serve", "python -m preo_client.testing serve") == helps[1]
    for flag in ("--latency", "--latency-jitter", "--rate-limit", "--auto-purchases"):
        assert flag in helps[0]


def complete(words: str) -> list[str]:
    """What bash completion offers after ``words`` (the real ``preo`` script, click's protocol:
    ``_PREO_COMPLETE=bash_complete``)."""
    parts = shlex.split(words) + ([""] if words.endswith(" ") else [])
    result = subprocess.run(
        [PREO],
        env={
            **os.environ,
            "_PREO_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(parts) - 1),
        },
        capture_output=True,
        text=True,
        timeout=WATCHDOG,
        check=True,
    )
    return [line.split(",", 1)[1] for line in result.stdout.splitlines()]


def test_shell_completion_offers_the_ten_reasons() -> None:
    assert complete("preo refund pur_1 --reason ") == list(REASONS)
    assert len(REASONS) == 10
    assert complete("preo refund-bulk cancel.csv --reason event_") == ["event_cancelled"]
    assert complete("preo refund pur_1 --scope transaction_") == [
        "transaction_full",
        "transaction_custom",
    ]
    assert "--latency-jitter" in complete("preo sandbox serve --lat")


@settings(max_examples=40, deadline=None)
@given(prefix=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", max_size=6))
def test_completion_is_exactly_the_reasons_with_that_prefix(prefix: str) -> None:
    """In process, click's own ``shell_complete``: every reason starting with the prefix, in
    the policy's order, and nothing else."""
    context = cli.make_context("preo", ["refund", "pur_1"], resilient_parsing=True)
    refund = command_at(cli, ("refund",))
    (reason,) = [p for p in refund.params if p.name == "reason"]
    offered = [item.value for item in reason.shell_complete(context, prefix)]
    assert offered == [r for r in REASONS if r.startswith(prefix)]


@settings(max_examples=60, deadline=None)
@given(value=st.text(max_size=20))
def test_reason_and_scope_accept_exactly_the_policys_values(value: str) -> None:
    """Any other value is a usage error (exit 2) naming the flag and the allowed values,
    before anything is sent (no key needed to get it)."""
    runner = CliRunner()
    for flag, allowed in (("--reason", REASONS), ("--scope", SCOPES)):
        args = ["refund", "pur_1", "--reason", "other", flag, value, "--amount", "1.00"]
        result = runner.invoke(cli, args, env={"PREO_API_KEY": "", "PREO_BASE_URL": ""})
        assert result.exit_code == 2, result.output
        if value in allowed:
            assert f"'{flag}'" not in result.output  # past parsing: refused for the missing key
        else:
            assert f"Invalid value for '{flag}'" in result.output
            assert "allowed: " + ", ".join(allowed) in " ".join(result.output.split())
            assert "Traceback" not in result.output


def readme_line(command: str) -> list[str]:
    """The README's example line starting with ``preo COMMAND`` (in the command-line block)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (line,) = re.findall(rf"^preo {command} pur_123 .*$", readme, flags=re.MULTILINE)
    return [arg for arg in shlex.split(line.split("#", 1)[0]) if arg != "[--json]"]


def test_the_readme_pur_123_example_works_against_sandbox_serve(
    no_contract_request_check: None,
) -> None:
    """The same default as --sandbox: an unknown purchase is created on first use."""
    args = readme_line("refund")
    assert args[:3] == ["preo", "refund", "pur_123"]
    served = Served("--port", "0", "--quiet")
    try:
        env = {**os.environ, "PREO_API_KEY": DEMO_API_KEY, "PREO_BASE_URL": served.url}
        over_http = subprocess.run(
            [PREO, *args[1:], "--json"], env=env, capture_output=True, text=True,
            timeout=WATCHDOG, check=False,
        )  # fmt: skip
    finally:
        assert served.stop() == 0
    in_process = CliRunner().invoke(cli, [*args[1:], "--json", "--sandbox"])
    assert over_http.returncode == 0, over_http.stderr
    assert in_process.exit_code == 0, in_process.output
    for output in (over_http.stdout, in_process.output):
        assert '"amount": "12.50"' in output
        assert '"scope": "purchase_custom"' in output


def test_no_auto_purchases_answers_404_for_an_unknown_purchase(
    no_contract_request_check: None,
) -> None:
    served = Served("--port", "0", "--quiet", "--no-auto-purchases")
    try:
        assert served.post("pur_123", reason="sold_out").status_code == 404
        assert served.post("pur_demo_ticket", reason="sold_out").status_code == 201
    finally:
        assert served.stop() == 0


def test_without_the_cli_extra_the_sandbox_command_says_what_to_install() -> None:
    """The command needs click (extra ``cli``); without it, one message naming the extra and
    the way to serve from Python, no traceback."""
    code = (
        "import runpy, sys; sys.modules['click'] = None; "
        "runpy.run_module('preo_client.testing', run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "serve"], capture_output=True, text=True,
        timeout=WATCHDOG, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "pip install 'preo-client[cli]'" in result.stderr
    assert "preo_client.testing.serve()" in result.stderr
    assert "Traceback" not in result.stderr
