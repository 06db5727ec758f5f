"""Every example runs against the sandbox (no key, no network) and prints real results."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(name: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREO_")}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_quickstart() -> None:
    out = run("quickstart.py")
    assert "against the embedded sandbox (no PREO_API_KEY set)" in out
    assert "scope:    purchase_full" in out
    assert "amount:   51.50" in out
    assert "status:   requested" in out


def test_compensation() -> None:
    out = run("compensation.py")
    assert "1.25 on pur_demo_beer (Late bar opening)" in out


def test_event_cancelled() -> None:
    out = run("event_cancelled.py")
    assert "pur_demo_ticket: rr_" in out
    assert "56.50 (transaction_full)" in out
    assert "refunded 86.50 in 2 transaction(s)" in out
    assert "sandbox ledger: 2 refund(s)" in out


def test_error_handling() -> None:
    out = run("error_handling.py")
    assert "invalid reason: reason: unknown value 'sold-out'" in out
    assert "Did you mean 'sold_out'?" in out
    assert "no such purchase (request req_" in out
    assert "refunded 20.00" in out
    assert "exceeds the refundable balance 10.00" in out
    assert "rate limited, retry after 120.0s" in out


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("[!_]*.py")))
def test_every_example_is_tested(name: str) -> None:
    assert f'run("{name}")' in Path(__file__).read_text(encoding="utf-8")
