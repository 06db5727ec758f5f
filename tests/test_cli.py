"""The preo command line: in-process (click's runner) and as a real subprocess against the
loopback sandbox, including resume after kill -9 with zero duplicates."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from preo_client._cli import cli
from preo_client.testing import DEMO_API_KEY, FakePreo, Fault, serve

PREO = str(Path(sys.executable).with_name("preo"))


@pytest.fixture
def invoke() -> CliRunner:
    return CliRunner()


def env_for(url: str, key: str = DEMO_API_KEY) -> dict[str, str]:
    return {**os.environ, "PREO_API_KEY": key, "PREO_BASE_URL": url}


@pytest.mark.parametrize(
    "args",
    [[], ["refund"], ["refund-bulk"], ["sandbox"], ["sandbox", "serve"]],
)
def test_help_on_every_command(invoke: CliRunner, args: list[str]) -> None:
    result = invoke.invoke(cli, [*args, "--help"])
    assert result.exit_code == 0
    assert "Usage: " in result.output


def test_single_refund_in_the_sandbox_as_json(invoke: CliRunner) -> None:
    result = invoke.invoke(
        cli,
        ["refund", "pur_demo_beer", "--reason", "compensation", "--amount", "1.25",
         "--comment", "Late bar", "--json", "--sandbox"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["amount"] == "1.25"
    assert data["scope"] == "purchase_custom"
    assert data["comment"] == "Late bar"
    assert data["status"] == "requested"


def test_single_refund_table(invoke: CliRunner) -> None:
    result = invoke.invoke(cli, ["refund", "pur_demo_ticket", "--reason", "sold_out", "--sandbox"])
    assert result.exit_code == 0
    assert "51.50" in result.output
    assert "purchase_full" in result.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--reason", "sold-out"], "Did you mean 'sold_out'?"),
        (["--reason", "compensation"], "amount: is required"),
        (["--reason", "compensation", "--amount", "1.005"], "at most 2 decimal places"),
        (["--reason", "sold_out", "--idempotency-key", "a b"], "idempotency_key"),
    ],
)
def test_validation_errors_exit_2_without_traceback(
    invoke: CliRunner, args: list[str], words: str
) -> None:
    result = invoke.invoke(cli, ["refund", "pur_demo_ticket", *args, "--sandbox"])
    assert result.exit_code == 2
    assert words in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_no_key_is_a_usage_error_naming_both_ways(invoke: CliRunner) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREO_")}
    result = invoke.invoke(cli, ["refund", "p", "--reason", "sold_out"], env=env)
    assert result.exit_code == 2
    assert "PREO_API_KEY" in result.output


def test_auth_error_exits_3_and_never_prints_the_key() -> None:
    fake = FakePreo.demo()
    with serve(fake) as server:
        secret = "sk_live_do_not_print_me"
        result = subprocess.run(
            [PREO, "refund", "pur_demo_ticket", "--reason", "sold_out"],
            env=env_for(server.url, secret),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 3
    assert "401" in result.stderr
    assert secret not in result.stdout + result.stderr


def test_bulk_csv_with_partial_failures_exits_1(tmp_path: Path) -> None:
    fake = FakePreo.demo()
    fake.add_purchase("pur_a", price="10.00", transaction_id="tx_a")
    fake.add_purchase("pur_b", price="20.00", deposit="2.00")
    source = tmp_path / "cancel.csv"
    source.write_text(
        "purchase_id,reason,amount,reference\n"
        "pur_a,,,\n"
        "pur_b,,,\n"
        "pur_missing,,,\n"
        "pur_demo_beer,compensation,1.005,\n"
        ",,,\n"
    )
    with serve(fake) as server:
        result = subprocess.run(
            [PREO, "refund-bulk", str(source), "--reason", "event_cancelled",
             "--concurrency", "2"],
            env=env_for(server.url),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "succeeded" in result.stdout
    lines = [
        json.loads(x) for x in (tmp_path / "cancel.csv.results.jsonl").read_text().splitlines()
    ]
    by_id = {x["purchase_id"]: x for x in lines}
    assert by_id["pur_a"]["ok"]
    assert by_id["pur_a"]["amount"] == "10.00"
    assert by_id["pur_b"]["amount"] == "22.00"
    assert by_id["pur_missing"]["error"] == "NotFoundError"
    assert by_id["pur_demo_beer"]["error"] == "RefundValidationError"
    assert by_id["line 6"]["error"] == "RefundValidationError"
    assert "progress: 5/5 done" in result.stderr  # plain lines when not a terminal
    assert sorted(r.purchase_id for r in fake.refunds) == ["pur_a", "pur_b"]


def test_bulk_jsonl_from_stdin(tmp_path: Path) -> None:
    fake = FakePreo.demo()
    rows = [
        {"purchase_id": "pur_demo_cup", "reason": "deposit_reclaim"},
        {"purchase_id": "pur_demo_locker", "reason": "rental_return",
         "scope": "purchase_custom", "amount": "7.50", "reference": "locker-7"},
    ]  # fmt: skip
    with serve(fake) as server:
        result = subprocess.run(
            [PREO, "refund-bulk", "-", "--results", str(tmp_path / "out.jsonl")],
            input="".join(json.dumps(r) + "\n" for r in rows),
            env=env_for(server.url),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(r.amount for r in fake.refunds) == [Decimal("2.00"), Decimal("7.50")]
    assert "9.50" in result.stdout  # amount refunded, in the summary table


def test_bulk_auth_error_exits_3(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("purchase_id\n" + "".join("pur_demo_ticket\n" for _ in range(3)))
    with serve(FakePreo.demo()) as server:
        result = subprocess.run(
            [PREO, "refund-bulk", str(source), "--reason", "sold_out"],
            env=env_for(server.url, "sk_wrong"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 3
    assert "authentication failed" in result.stderr


def test_bulk_sandbox_flag(invoke: CliRunner, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("purchase_id\n" + "".join(f"pur_{i}\n" for i in range(25)))
    result = invoke.invoke(
        cli, ["refund-bulk", str(source), "--reason", "event_cancelled", "--sandbox"]
    )
    assert result.exit_code == 0, result.output
    assert "712.50" in result.output  # 25 x (25.00 + 2.00 + 1.50)


def _journal_lines(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


def test_resume_after_kill_9_refunds_every_purchase_exactly_once(tmp_path: Path) -> None:
    count = 400
    fake = FakePreo()
    for i in range(count):
        fake.add_purchase(f"pur_{i}", price="10.00", fees="0.50")
    source = tmp_path / "cancel.csv"
    source.write_text("purchase_id\n" + "".join(f"pur_{i}\n" for i in range(count)))
    journal = tmp_path / "cancel.journal"
    command = [PREO, "refund-bulk", str(source), "--reason", "event_cancelled",
               "--concurrency", "8", "--journal", str(journal)]  # fmt: skip
    # Every 40th request dies after the refund was recorded, so some items are in flight
    # (outcome unknown) whenever the process is killed.
    fake.chaos(0.05, seed=7, faults=[Fault.read_timeout()])
    with serve(fake) as server:
        kills = 0
        for threshold in (60, 250, 500):  # kill -9 at three different points of the run
            proc = subprocess.Popen(
                command,
                env=env_for(server.url),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 60
            while _journal_lines(journal) < threshold and proc.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.005)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
            proc.wait(timeout=30)
        fake.chaos(0.0, seed=0)
        final = subprocess.run(
            command, env=env_for(server.url), capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
    assert kills >= 1
    assert final.returncode == 0, final.stdout + final.stderr
    per_purchase = collections.Counter(r.purchase_id for r in fake.refunds)
    assert per_purchase == {f"pur_{i}": 1 for i in range(count)}, "duplicates or gaps"
    assert sum(r.amount for r in fake.refunds) == count * 10.5


def test_progress_bar_on_a_terminal(
    invoke: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from rich.console import Console

    from preo_client import _cli

    screen = io.StringIO()
    monkeypatch.setattr(_cli, "stderr", Console(file=screen, force_terminal=True, width=120))
    source = tmp_path / "in.csv"
    source.write_text("purchase_id\n" + "".join(f"pur_{i}\n" for i in range(30)))
    result = invoke.invoke(cli, ["refund-bulk", str(source), "--reason", "sold_out", "--sandbox"])
    assert result.exit_code == 0, result.output
    drawn = screen.getvalue()
    assert "refunds" in drawn
    assert "30/30" in drawn  # done/total
    assert "0 failed" in drawn
    assert "progress:" not in result.output  # no plain lines when a bar is drawn
