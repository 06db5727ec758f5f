"""The preo command line: in-process (click's runner) and as a real subprocess against the
loopback sandbox, including resume after kill -9 with zero duplicates."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

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


def run_cli(args: list[str], url: str, key: str = DEMO_API_KEY, **kw: Any) -> Any:
    """The real ``preo`` in a subprocess, with a watchdog: a hang fails the test."""
    return subprocess.run(
        [PREO, *args], env=env_for(url, key), capture_output=True, text=True, timeout=60,
        check=False, **kw,
    )  # fmt: skip


def in_process(invoke: CliRunner, args: list[str], url: str, key: str = DEMO_API_KEY) -> Any:
    return invoke.invoke(cli, args, env={"PREO_API_KEY": key, "PREO_BASE_URL": url})


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
        "pur_demo_beer,compensation,1.00,\n"
    )
    with serve(fake) as server:
        result = run_cli(["refund-bulk", str(source), "--reason", "event_cancelled",
                          "--concurrency", "2"], server.url)  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "succeeded" in result.stdout
    assert "line 4: Error code: 404" in result.stdout  # failed rows with line numbers
    lines = [
        json.loads(x) for x in (tmp_path / "cancel.csv.results.jsonl").read_text().splitlines()
    ]
    by_id = {x["purchase_id"]: x for x in lines}
    assert by_id["pur_a"]["ok"]
    assert by_id["pur_a"]["amount"] == "10.00"
    assert by_id["pur_b"]["amount"] == "22.00"
    assert by_id["pur_missing"]["error"] == "NotFoundError"
    assert by_id["pur_missing"]["line"] == 4
    assert by_id["pur_demo_beer"]["amount"] == "1.00"
    assert "progress: 4/4 done" in result.stderr  # plain lines when not a terminal
    assert sorted(r.purchase_id for r in fake.refunds) == ["pur_a", "pur_b", "pur_demo_beer"]


def test_invalid_rows_are_refused_before_anything_is_sent(
    invoke: CliRunner, tmp_path: Path
) -> None:
    fake = FakePreo.demo()
    source = tmp_path / "in.csv"
    source.write_text(
        "purchase_id,reason,amount\npur_demo_cup,,\npur_demo_beer,compensation,1.005\n,,\n"
    )
    with serve(fake) as server:
        result = in_process(invoke, ["refund-bulk", str(source), "--reason", "sold_out"],
                            server.url)  # fmt: skip
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "2 invalid row(s), nothing was sent" in text
    assert "line 3: amount" in text
    assert "line 4: no purchase_id" in text
    assert fake.requests == []


def test_bulk_jsonl_from_stdin(tmp_path: Path) -> None:
    fake = FakePreo.demo()
    rows = [
        {"purchase_id": "pur_demo_cup", "reason": "deposit_reclaim"},
        {"purchase_id": "pur_demo_locker", "reason": "rental_return",
         "scope": "purchase_custom", "amount": 7.50, "reference": "locker-7"},
    ]  # fmt: skip
    with serve(fake) as server:
        result = run_cli(["refund-bulk", "-", "--results", str(tmp_path / "out.jsonl")],
                         server.url, input="".join(json.dumps(r) + "\n" for r in rows))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(r.amount for r in fake.refunds) == [Decimal("2.00"), Decimal("7.50")]
    assert "9.50" in result.stdout  # amount refunded, in the summary table


def test_stdin_stops_cleanly_with_a_summary_on_a_bad_line(tmp_path: Path) -> None:
    fake = FakePreo.demo()
    data = b'{"purchase_id": "pur_demo_cup"}\n{"purchase_id": "pur_\xff"}\n'
    with serve(fake) as server:
        result = subprocess.run(
            [PREO, "refund-bulk", "-", "--reason", "deposit_reclaim", "--results",
             str(tmp_path / "out.jsonl")],
            input=data, env=env_for(server.url), capture_output=True, timeout=60, check=False,
        )  # fmt: skip
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 2, stdout + stderr
    assert "Traceback" not in stderr
    assert "line 2: not valid UTF-8" in stderr
    assert "Bulk refund summary" in stdout
    assert len(fake.refunds) == 1


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_utf8_bom_is_accepted(invoke: CliRunner, tmp_path: Path, fmt: str) -> None:
    """Regression: a CSV with a BOM was refused as having no purchase_id column."""
    source = tmp_path / f"in.{fmt}"
    body = "purchase_id\npur_demo_cup\n" if fmt == "csv" else '{"purchase_id": "pur_demo_cup"}\n'
    source.write_bytes(b"\xef\xbb\xbf" + body.encode())
    result = invoke.invoke(cli, ["refund-bulk", str(source), "--reason", "deposit_reclaim",
                                 "--sandbox"])  # fmt: skip
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("bad_line", [2, 2853])
def test_a_non_utf8_file_is_a_clear_error_before_sending(
    invoke: CliRunner, tmp_path: Path, bad_line: int
) -> None:
    """Regression: a traceback, or exit 2 after 2,852 refunds when the bad byte was deep."""
    fake = FakePreo()
    source = tmp_path / "in.csv"
    rows = [b"purchase_id"] + [f"pur_{i}".encode() for i in range(1, 3000)]
    rows[bad_line - 1] = b"pur_caf\xe9"
    source.write_bytes(b"\n".join(rows) + b"\n")
    with serve(fake) as server:
        result = in_process(invoke, ["refund-bulk", str(source), "--reason", "sold_out"],
                            server.url)  # fmt: skip
    assert result.exit_code == 2
    assert f"line {bad_line}: not valid UTF-8 (byte 0xe9" in result.output
    assert "Traceback" not in result.output
    assert fake.requests == []


def test_missing_reason_is_one_usage_error(invoke: CliRunner, tmp_path: Path) -> None:
    """Regression: 999 per-row failures instead of one usage error."""
    source = tmp_path / "in.csv"
    source.write_text("purchase_id\n" + "".join(f"pur_{i}\n" for i in range(999)))
    result = invoke.invoke(cli, ["refund-bulk", str(source), "--sandbox"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "--reason is required: 999 row(s) have no reason" in text
    assert text.count("error:") == 1


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--journal", "{tmp}/no/such/dir/j"], "journal"),
        (["--results", "{tmp}/no/such/dir/r.jsonl"], "cannot write results file"),
        (["--journal", "{tmp}/garbage"], "not a preo journal"),
        (["--journal", "{tmp}/old.journal"], "old JSON-lines format"),
        (["--reason", "sold-out"], "Did you mean 'sold_out'?"),
        (["--scope", "purchase-full"], "--scope"),
        (["--batch-id", " "], "--batch-id must not be empty"),
    ],
)
def test_bulk_user_errors_exit_2_without_traceback(
    invoke: CliRunner, tmp_path: Path, extra: list[str], words: str
) -> None:
    (tmp_path / "garbage").write_bytes(b"\x00garbage" * 100)
    (tmp_path / "old.journal").write_text(
        '{"event":"start","purchase_id":"p","idempotency_key":"k"}\n'
    )
    source = tmp_path / "in.csv"
    source.write_text("purchase_id\npur_demo_cup\n")
    args = ["refund-bulk", str(source), "--reason", "deposit_reclaim", "--sandbox"]
    result = invoke.invoke(cli, args + [e.format(tmp=tmp_path) for e in extra])
    assert result.exit_code == 2, result.output
    assert words in " ".join(result.output.split())
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_results_are_never_silently_overwritten(invoke: CliRunner, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("purchase_id\npur_demo_cup\n")
    results = tmp_path / "in.csv.results.jsonl"
    args = ["refund-bulk", str(source), "--reason", "deposit_reclaim", "--sandbox"]
    assert invoke.invoke(cli, args).exit_code == 0
    first = results.read_text()
    again = invoke.invoke(cli, args)
    assert again.exit_code == 2
    assert "--overwrite" in again.output
    assert results.read_text() == first
    assert invoke.invoke(cli, [*args, "--overwrite"]).exit_code == 0
    journal = ["--journal", str(tmp_path / "j")]
    results.unlink()
    assert invoke.invoke(cli, args + journal).exit_code == 0
    assert invoke.invoke(cli, args + journal).exit_code == 0  # resuming appends
    lines = [json.loads(x) for x in results.read_text().splitlines()]
    assert [x["skipped"] for x in lines] == [False, True]


def test_dry_run_prints_the_plan_and_sends_nothing(invoke: CliRunner, tmp_path: Path) -> None:
    fake = FakePreo.demo()
    source = tmp_path / "in.csv"
    source.write_text("purchase_id,reason,amount\npur_a,,\npur_b,,\npur_c,compensation,2.50\n"
                      "pur_d,overcharge,1.25\n")  # fmt: skip
    with serve(fake) as server:
        result = in_process(invoke, ["refund-bulk", str(source), "--reason", "sold_out",
                                     "--dry-run"], server.url)  # fmt: skip
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "sold_out │ purchase_full │ 2" in text
    assert "compensation │ purchase_custom │ 1" in text
    assert "custom amounts │ │ 3.75" in text
    assert fake.requests == []
    assert not (tmp_path / "in.csv.results.jsonl").exists()


def test_bulk_auth_error_exits_3_promptly_whatever_the_row_count(tmp_path: Path) -> None:
    """Regression: a wrong key on 200 rows hung instead of exiting 3."""
    source = tmp_path / "in.csv"
    source.write_text("purchase_id\n" + "".join(f"pur_{i}\n" for i in range(200)))
    fake = FakePreo.demo(auto_purchases=True)
    with serve(fake) as server:
        result = run_cli(["refund-bulk", str(source), "--reason", "sold_out"], server.url,
                         "sk_wrong")  # fmt: skip
    assert result.returncode == 3
    assert "authentication failed" in result.stderr
    assert "Bulk refund summary" in result.stdout
    assert len(fake.requests) <= 16 + 16


def test_changed_row_on_resume_is_refused(invoke: CliRunner, tmp_path: Path) -> None:
    """Regression: a changed amount on resume gave 422 on every re-run with no hint why."""
    fake = FakePreo.demo()
    source = tmp_path / "in.csv"
    source.write_text("purchase_id,amount\npur_demo_beer,1.00\npur_demo_locker,2.00\n")
    args = ["refund-bulk", str(source), "--reason", "compensation", "--journal",
            str(tmp_path / "j")]  # fmt: skip
    with serve(fake) as server:
        assert in_process(invoke, args, server.url).exit_code == 0
        source.write_text("purchase_id,amount\npur_demo_beer,1.00\npur_demo_locker,2.50\n")
        sent = len(fake.requests)
        result = in_process(invoke, args, server.url)
    assert result.exit_code == 2
    assert "line 3: input item 2 differs from journal" in result.output
    assert "amount was '2.00', now '2.50'" in result.output
    assert len(fake.requests) == sent


def test_two_rows_for_one_purchase_are_both_sent(invoke: CliRunner, tmp_path: Path) -> None:
    """Regression: the second row for one purchase was 'skipped (done before)'."""
    fake = FakePreo.demo()
    source = tmp_path / "in.csv"
    source.write_text("purchase_id,reason,amount,reference\n"
                      "pur_demo_locker,compensation,5.00,T-1\n"
                      "pur_demo_locker,overcharge,3.00,T-1\n")  # fmt: skip
    args = ["refund-bulk", str(source), "--journal", str(tmp_path / "j")]
    with serve(fake) as server:
        assert in_process(invoke, args, server.url).exit_code == 0
        assert in_process(invoke, args, server.url).exit_code == 0
    assert sorted(r.amount for r in fake.refunds) == [Decimal("3.00"), Decimal("5.00")]


def test_the_readme_flow_with_and_without_transaction_ids(
    invoke: CliRunner, tmp_path: Path
) -> None:
    """Regression: event_cancelled on two purchases of one transaction exited 1, unexplained."""
    source = tmp_path / "in.csv"
    source.write_text("purchase_id\npur_demo_ticket\npur_demo_cup\n")
    args = ["refund-bulk", str(source), "--reason", "event_cancelled", "--sandbox",
            "--concurrency", "1", "--overwrite"]  # fmt: skip
    without = invoke.invoke(cli, args)
    assert without.exit_code == 1
    assert "give each row its transaction_id" in " ".join(without.output.split())
    source.write_text("purchase_id,transaction_id\npur_demo_ticket,tx_demo\npur_demo_cup,tx_demo\n")
    with_ids = invoke.invoke(cli, args)
    assert with_ids.exit_code == 0, with_ids.output
    assert "covered (by its transaction's refund) │ 1" in " ".join(with_ids.output.split())


def test_bulk_sandbox_flag(invoke: CliRunner, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("purchase_id\n" + "".join(f"pur_{i}\n" for i in range(25)))
    result = invoke.invoke(
        cli, ["refund-bulk", str(source), "--reason", "event_cancelled", "--sandbox"]
    )
    assert result.exit_code == 0, result.output
    assert "712.50" in result.output  # 25 x (25.00 + 2.00 + 1.50)


def test_cli_speaks_cli(invoke: CliRunner, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREO_")}
    source = tmp_path / "in.csv"
    source.write_text("purchase_id\npur_demo_cup\n")
    for args in (["refund", "p", "--reason", "sold_out"],
                 ["refund-bulk", str(source), "--reason", "sold_out"]):  # fmt: skip
        result = invoke.invoke(cli, args, env=env)
        assert result.exit_code == 2
        assert "pass --api-key, set PREO_API_KEY, or use --sandbox" in result.output
        insecure = invoke.invoke(cli, [*args, "--api-key", "k", "--base-url", "http://preo.example"],
                                 env=env)  # fmt: skip
        assert insecure.exit_code == 2
        assert "--allow-insecure-http" in insecure.output
        assert "allow_insecure_http" not in insecure.output
    as_json = invoke.invoke(cli, ["refund", "p", "--reason", "sold_out", "--json"], env=env)
    assert as_json.exit_code == 2
    assert json.loads(as_json.output)["error"]["exit_code"] == 2


def test_no_hard_wrap_when_not_a_terminal(invoke: CliRunner, tmp_path: Path) -> None:
    long_dir = tmp_path / ("d" * 150)
    result = invoke.invoke(cli, ["refund-bulk", str(long_dir / "in.csv"), "--reason",
                                 "sold_out", "--sandbox"])  # fmt: skip
    assert result.exit_code == 2
    assert any(str(long_dir) in line for line in result.output.splitlines())


def test_bulk_json_summary(invoke: CliRunner, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("purchase_id\npur_demo_cup\npur_demo_beer\n")
    result = invoke.invoke(cli, ["refund-bulk", str(source), "--reason", "deposit_reclaim",
                                 "--sandbox", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output.strip().splitlines()[-1])
    assert data["succeeded"] == 2
    assert data["amount_refunded"] == "3.00"


def test_bulk_json_errors_are_one_json_document(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("purchase_id\n" + "".join(f"pur_{i}\n" for i in range(20)))
    with serve(FakePreo.demo(auto_purchases=True)) as server:
        result = run_cli(["refund-bulk", str(source), "--reason", "sold_out", "--json"],
                         server.url, "sk_wrong")  # fmt: skip
    assert result.returncode == 3
    (document,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert document["exit_code"] == 3
    assert "authentication failed" in document["error"]["message"]
    assert "Bulk refund summary" not in result.stdout + result.stderr


@pytest.mark.parametrize("key", [DEMO_API_KEY, "sk_wrong"])
def test_no_unclosed_session_warnings(tmp_path: Path, key: str) -> None:
    """The fast extra's aiohttp session is closed on every path (warnings are errors here)."""
    source = tmp_path / "in.csv"
    source.write_text("purchase_id\npur_demo_cup\npur_demo_beer\n")
    with serve(FakePreo.demo()) as server:
        result = subprocess.run(
            [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c",
             "from preo_client._cli import main; main()", "refund-bulk", str(source),
             "--reason", "deposit_reclaim"],
            env=env_for(server.url, key), capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
    assert result.returncode in (0, 3), result.stderr
    assert "Unclosed" not in result.stderr
    assert "ResourceWarning" not in result.stderr


def _journal_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return int(db.execute("SELECT count(*) FROM items").fetchone()[0])
    except sqlite3.Error:
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
    # Some requests die after the refund was recorded, so some items are in flight (outcome
    # unknown) whenever the process is killed.
    fake.chaos(0.05, seed=7, faults=[Fault.read_timeout()])
    fake.set_latency(0.01)  # so that a run cannot end before its kill point (8 workers)
    rng = random.Random(os.environ.get("PYTEST_XDIST_WORKER", "kill") + str(time.time_ns()))
    thresholds = sorted(rng.sample(range(20, count), 3))  # random kill -9 points of the run
    with serve(fake) as server:
        kills = 0
        for threshold in thresholds:
            proc = subprocess.Popen(command, env=env_for(server.url), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)  # fmt: skip
            deadline = time.monotonic() + 60
            while _journal_rows(journal) < threshold and proc.poll() is None:
                assert time.monotonic() < deadline, "the run hung"
                time.sleep(0.005)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
            proc.wait(timeout=30)
        fake.chaos(0.0, seed=0)
        fake.set_latency(0.0)
        final = subprocess.run(command, env=env_for(server.url), capture_output=True, text=True,
                               timeout=120, check=False)  # fmt: skip
    assert kills >= 1, thresholds
    assert final.returncode == 0, final.stdout + final.stderr
    per_purchase = collections.Counter(r.purchase_id for r in fake.refunds)
    assert per_purchase == {f"pur_{i}": 1 for i in range(count)}, ("duplicates or gaps",
                                                                   thresholds)  # fmt: skip
    assert sum(r.amount for r in fake.refunds) == count * 10.5


def test_two_concurrent_runs_on_one_journal_never_pay_twice(tmp_path: Path) -> None:
    """Regression: two runs at once on one journal both exited 0, 292 of 300 paid twice.

    Each answer waits 20 ms so the first run still holds the journal when the second starts
    (on a loaded machine a fast run could end before the second process is up)."""
    count = 300
    fake = FakePreo(latency=0.02)
    for i in range(count):
        fake.add_purchase(f"pur_{i}", price="10.00")
    source = tmp_path / "cancel.csv"
    source.write_text("purchase_id\n" + "".join(f"pur_{i}\n" for i in range(count)))
    journal = tmp_path / "cancel.journal"
    with serve(fake) as server:
        procs = [
            subprocess.Popen(
                [
                    PREO,
                    "refund-bulk",
                    str(source),
                    "--reason",
                    "sold_out",
                    "--journal",
                    str(journal),
                    "--results",
                    str(tmp_path / f"r{n}.jsonl"),
                ],
                env=env_for(server.url),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in range(2)
        ]
        outputs = [p.communicate(timeout=120) for p in procs]
        codes = sorted(p.returncode for p in procs)
        resumed = run_cli(["refund-bulk", str(source), "--reason", "sold_out", "--journal",
                           str(journal), "--results", str(tmp_path / "r2.jsonl")],
                          server.url)  # fmt: skip
    assert codes == [0, 2], outputs
    assert any("in use by another run (pid" in err for _, err in outputs)
    assert resumed.returncode == 0
    assert collections.Counter(r.purchase_id for r in fake.refunds) == {
        f"pur_{i}": 1 for i in range(count)
    }


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


def test_ctrl_c_stops_with_a_summary_and_resumes_cleanly(tmp_path: Path) -> None:
    fake = FakePreo()
    for i in range(50):
        fake.add_purchase(f"pur_{i}", price="10.00")
    fake.inject(Fault.http_status(429, retry_after="200"))  # the run pauses for 200 s
    source = tmp_path / "in.csv"
    source.write_text("purchase_id\n" + "".join(f"pur_{i}\n" for i in range(50)))
    command = [PREO, "refund-bulk", str(source), "--reason", "sold_out", "--journal",
               str(tmp_path / "j"), "--concurrency", "4"]  # fmt: skip
    with serve(fake) as server:
        proc = subprocess.Popen(command, env=env_for(server.url), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 30
        while not fake.requests:
            assert time.monotonic() < deadline, "no request was sent"
            time.sleep(0.01)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)  # a hang fails here
        resumed = run_cli(command[1:], server.url)
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted; resume with the same --journal" in stderr
    assert "Traceback" not in stderr
    assert "Bulk refund summary" in stdout
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert collections.Counter(r.purchase_id for r in fake.refunds) == {
        f"pur_{i}": 1 for i in range(50)
    }


def test_stdin_is_read_off_the_event_loop() -> None:
    """A slow producer on stdin must not block the loop (in-flight requests would time out)."""
    import asyncio
    import threading

    from preo_client._cli import _StdinRows

    released = threading.Event()

    def lines() -> Iterator[bytes]:
        yield b"purchase_id\n"
        yield b"pur_1\n"
        # blocks until the event loop runs the task below: deadlock if reading blocked the loop
        if not released.wait(10):
            raise AssertionError("the event loop was blocked by the stdin read")
        yield b"pur_2\n"

    async def go() -> list[str]:
        async def release() -> None:
            await asyncio.sleep(0.01)
            released.set()

        task = asyncio.ensure_future(release())
        items = [item.purchase_id async for item in _StdinRows(lines(), "sold_out", None)]
        await task
        return items

    assert asyncio.run(asyncio.wait_for(go(), 30)) == ["pur_1", "pur_2"]


def test_a_too_long_server_pause_stops_the_run_with_exit_1(
    invoke: CliRunner, tmp_path: Path
) -> None:
    fake = FakePreo.demo(auto_purchases=True)
    fake.inject(*[Fault.http_status(429, retry_after="3600")] * 100)
    source = tmp_path / "in.csv"
    source.write_text("purchase_id\n" + "".join(f"pur_{i}\n" for i in range(100)))
    with serve(fake) as server:
        result = in_process(invoke, ["refund-bulk", str(source), "--reason", "sold_out",
                                     "--max-pause", "60", "--concurrency", "4"],
                            server.url)  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "run stopped" in result.output
    assert len(fake.requests) <= 8  # stopped, not 100 refusals


def test_batch_id_gives_the_same_keys_without_a_journal(invoke: CliRunner, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("purchase_id\npur_demo_cup\npur_demo_beer\npur_demo_cup\n")
    keys = []
    for n in range(2):
        result = invoke.invoke(cli, ["refund-bulk", str(source), "--reason", "deposit_reclaim",
                                     "--sandbox", "--batch-id", "cancel-7", "--results",
                                     str(tmp_path / f"r{n}.jsonl")])  # fmt: skip
        assert result.exit_code == 1  # the second cup row: its deposit is already refunded
        lines = [json.loads(x) for x in (tmp_path / f"r{n}.jsonl").read_text().splitlines()]
        keys.append({x["line"]: x["idempotency_key"] for x in lines})
    assert keys[0] == keys[1]
    assert len(set(keys[0].values())) == 3


# -- regressions of the adversarial review of the journal and refund-bulk ----------------


def test_a_journal_moved_after_kill_9_is_refused_not_restarted(tmp_path: Path) -> None:
    """Regression: the main file moved alone after kill -9 resumed as a NEW journal (new run
    id, every key new): 143 purchases refunded twice, exit 0."""
    count = 300
    fake = FakePreo(latency=0.02, auto_purchases=True)  # still running when killed, under load
    source = tmp_path / "in.csv"
    source.write_text("purchase_id,amount\n" + "".join(f"pur_{i},0.50\n" for i in range(count)))
    journal = tmp_path / "run" / "cancel.journal"
    journal.parent.mkdir()
    moved = tmp_path / "moved" / "cancel.journal"
    moved.parent.mkdir()

    def command(path: Path) -> list[str]:
        return [PREO, "refund-bulk", str(source), "--reason", "compensation", "--journal",
                str(path), "--json", "--overwrite", "--concurrency", "4"]  # fmt: skip

    with serve(fake) as server:
        proc = subprocess.Popen(command(journal), env=env_for(server.url),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 60
        while _journal_rows(journal) < 30 and proc.poll() is None:
            assert time.monotonic() < deadline, "the run hung"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert Path(f"{journal}-wal").exists()
        os.replace(journal, moved)  # moved as one would any file: the -wal stays behind
        sent = -1
        while sent != len(fake.requests):  # requests of the killed run still being served
            assert time.monotonic() < deadline, "the server never settled"
            sent = len(fake.requests)
            time.sleep(0.3)
        refused = run_cli(command(moved)[1:], server.url)
        assert len(fake.requests) == sent, refused.stdout + refused.stderr
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{journal}{suffix}", f"{moved}{suffix}")
        resumed = run_cli(command(moved)[1:], server.url)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    (document,) = [json.loads(line) for line in refused.stdout.splitlines()]
    assert "-wal file is missing" in document["error"]["message"]
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    per_purchase = collections.Counter(r.purchase_id for r in fake.refunds)
    assert per_purchase == {f"pur_{i}": 1 for i in range(count)}


@pytest.mark.parametrize("alias", ["symlink", "hardlink"])
def test_one_journal_through_two_names_is_refused(
    invoke: CliRunner, tmp_path: Path, alias: str
) -> None:
    """Regression: the lock was on NAME.lock: two runs held one journal through two names."""
    from preo_client._journal import Journal

    journal = tmp_path / "cancel.journal"
    other = tmp_path / "alias.journal"
    source = tmp_path / "in.csv"
    source.write_text("purchase_id\npur_demo_cup\n")
    holder = Journal(journal)  # a run holding it
    try:
        if alias == "symlink":
            other.symlink_to(journal)
        else:
            os.link(journal, other)
        result = invoke.invoke(cli, ["refund-bulk", str(source), "--reason", "deposit_reclaim",
                                     "--sandbox", "--journal", str(other), "--json"])  # fmt: skip
    finally:
        holder.close()
    assert result.exit_code == 2, result.output
    message = json.loads(result.output)["error"]["message"]
    assert ("in use by another run" if alias == "symlink" else "2 hard links") in message


@pytest.mark.parametrize("as_json", [False, True])
def test_a_damaged_journal_is_one_line_exit_2(
    invoke: CliRunner, tmp_path: Path, as_json: bool
) -> None:
    """Regression: one flipped byte gave a raw sqlite3 OperationalError traceback, exit 1."""
    source = tmp_path / "in.csv"
    source.write_text("purchase_id\npur_1\npur_2\npur_3\n")
    journal = tmp_path / "j"
    args = ["refund-bulk", str(source), "--reason", "sold_out", "--sandbox", "--journal",
            str(journal), "--overwrite"]  # fmt: skip
    assert invoke.invoke(cli, args).exit_code == 0
    data = bytearray(journal.read_bytes())
    data[data.rfind(b"rr_") + 5] ^= 0xFF
    journal.write_bytes(bytes(data))
    result = invoke.invoke(cli, args + (["--json"] if as_json else []))
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    if as_json:
        (document,) = [json.loads(line) for line in result.output.splitlines()]
        assert "is damaged" in document["error"]["message"]
    else:
        assert len(result.output.strip().splitlines()) == 1
        assert "is damaged" in result.output


def _stray_quote_files() -> dict[str, tuple[str, str]]:
    rows = "".join(f"pur_{i},compensation,5.00,ok\n" for i in range(6, 300))
    head = "purchase_id,reason,amount,comment\n" + "".join(
        f"pur_{i},compensation,5.00,ok\n" for i in range(1, 5)
    )
    big = "".join(f"pur_{i},ok\n" for i in range(2, 12000))
    return {
        "open at the end": (head + 'pur_5,compensation,5.00,"Late bar opening\n' + rows,
                            "line 6: a quoted field opened"),
        "larger than the csv field limit": ('purchase_id,comment\npur_1,"oops\n' + big,
                                            r"line 2: .* not closed within 131,072 characters"),
        "closed by a later stray quote": (
            head + 'pur_5,compensation,5.00,"Late bar\n' + rows + 'pur_9,compensation,1.00,x"\n',
            "line 6: a quoted field opened here swallows line 7"),
        "text after a closing quote": (head + 'pur_5,compensation,5.00,"Late" bar\n',
                                       "line 6: malformed CSV"),
    }  # fmt: skip


@pytest.mark.parametrize("case", sorted(_stray_quote_files()))
def test_a_stray_quote_is_refused_naming_its_line(
    invoke: CliRunner, tmp_path: Path, case: str
) -> None:
    """Regression: a stray quote swallowed rows 6-300 into one comment (5 of 300 refunded,
    exit 0); with a longer tail, a _csv.Error traceback."""
    text, words = _stray_quote_files()[case]
    source = tmp_path / "in.csv"
    source.write_text(text)
    fake = FakePreo.demo(auto_purchases=True)
    with serve(fake) as server:
        result = in_process(invoke, ["refund-bulk", str(source), "--reason", "compensation",
                                     "--json"], server.url)  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    (document,) = [json.loads(line) for line in result.output.splitlines()]
    assert re.search(words, document["error"]["message"]), document
    assert fake.requests == []


def test_a_multi_line_comment_is_still_accepted(invoke: CliRunner, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text('purchase_id,amount,comment\npur_demo_beer,1.00,"Late bar,\nsorry, really"\n'
                      'pur_demo_locker,2.00,"He said ""wait"""\n')  # fmt: skip
    result = invoke.invoke(cli, ["refund-bulk", str(source), "--reason", "compensation",
                                 "--sandbox", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["succeeded"] == 2
    lines = (tmp_path / "in.csv.results.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["line"] for x in lines) == [2, 4]


@pytest.mark.parametrize("as_json", [False, True])
def test_ctrl_c_while_reading_the_file_exits_130(tmp_path: Path, as_json: bool) -> None:
    """Regression: Ctrl-C during the first pass over a big file printed click's "Aborted!"
    and exited 1 (no JSON document). The file is a FIFO we keep open, so the command is
    surely still reading it when the signal arrives."""
    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)
    fake = FakePreo.demo(auto_purchases=True)
    with serve(fake) as server:
        proc = subprocess.Popen(
            [PREO, "refund-bulk", str(fifo), "--reason", "sold_out", "--journal",
             str(tmp_path / "j"), *(["--json"] if as_json else [])],
            env=env_for(server.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:  # until the command opens the file (a watchdog, not a blocking open)
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the command never opened its FILE"
                try:
                    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                    break
                except OSError:  # ENXIO: no reader yet
                    time.sleep(0.01)
            os.set_blocking(fd, True)
            with os.fdopen(fd, "w") as writer:
                writer.write("purchase_id\n" + "".join(f"pur_{i}\n" for i in range(1000)))
                writer.flush()
                time.sleep(0.2)  # the command reads it all, then waits for more
                proc.send_signal(signal.SIGINT)
                stdout, stderr = proc.communicate(timeout=30)  # a hang fails here
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, stdout + stderr
    assert "Aborted" not in stdout + stderr
    assert "Traceback" not in stderr
    if as_json:
        (document,) = [json.loads(line) for line in stdout.splitlines()]
        assert {k: document["error"][k] for k in ("exit_code", "message", "type")} == {
            "exit_code": 130,
            "message": "interrupted before anything was sent",
            "type": "KeyboardInterrupt",
        }
    else:
        assert "interrupted before anything was sent" in stderr
    assert fake.requests == []


def test_dry_run_counts_the_requests_the_run_sends(invoke: CliRunner, tmp_path: Path) -> None:
    """Regression: 3 rows of one transaction were planned as 'custom amounts 15.00' while the
    run refunds 5.00 (1 sent, 2 covered); --dry-run --json printed a table."""
    source = tmp_path / "in.csv"
    source.write_text("purchase_id,transaction_id,amount\n"
                      "pur_1,tx1,5.00\npur_2,tx1,5.00\npur_3,tx1,5.00\n")  # fmt: skip
    args = ["refund-bulk", str(source), "--reason", "compensation", "--scope",
            "transaction_custom", "--sandbox"]  # fmt: skip
    plan = invoke.invoke(cli, [*args, "--dry-run", "--json"])
    assert plan.exit_code == 0, plan.output
    document = json.loads(plan.output)
    assert document["requests"] == 1
    assert document["covered"] == 2
    assert document["custom_amount"] == "5.00"
    table = " ".join(invoke.invoke(cli, [*args, "--dry-run"]).output.split())
    assert "requests to send │ │ 1" in table
    assert "custom amounts │ │ 5.00" in table
    run = json.loads(invoke.invoke(cli, [*args, "--json"]).output.strip().splitlines()[-1])
    assert (run["succeeded"], run["covered"], run["amount_refunded"]) == (1, 2, "5.00")


_PLAN_ROWS = st.lists(
    st.tuples(st.sampled_from(["tx", "solo", "tx_no_id"]), st.integers(0, 2)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=40, deadline=None)
@given(rows=_PLAN_ROWS)
def test_the_plan_is_what_the_run_does(rows: list[tuple[str, int]]) -> None:
    """Hypothesis over inputs: the dry-run plan's requests, covered rows and amount are
    exactly what a run sends, covers and refunds (every refund succeeding)."""
    import threading

    from preo_client import RefundItem
    from preo_client._cli import _plan

    fake = FakePreo()
    items = []
    amounts = ["1.00", "2.50", "0.75"]
    for i, (kind, tx) in enumerate(rows):
        server_tx = f"tx{tx}" if kind == "tx" else f"solo{i}"
        fake.add_purchase(f"p{i}", price="10.00", transaction_id=server_tx)
        if kind == "solo":
            items.append(RefundItem(f"p{i}", scope="purchase_custom", amount="1.00"))
        else:
            grouped = server_tx if kind == "tx" else None
            items.append(RefundItem(f"p{i}", scope="transaction_custom", amount=amounts[tx],
                                    transaction_id=grouped))  # fmt: skip
    plan = _plan(items, "compensation", None)
    result: list[Any] = []

    def run() -> None:
        with fake.client() as client:
            result.append(client.purchases.refund_many(items, reason="compensation",
                                                       concurrency=4).run())  # fmt: skip

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)
    assert result, "the run hung"
    summary = result[0]
    assert summary.failures == 0, summary
    assert plan.requests == len(fake.requests)
    assert plan.covered == summary.covered
    assert plan.custom_amount == summary.total_amount
    assert sum(plan.rows.values()) == len(items)


def test_rows_done_earlier_carry_their_refund_in_the_results(
    invoke: CliRunner, tmp_path: Path
) -> None:
    """Issue 18 (via 16): a resumed run's results give rows finished earlier their refund id,
    amount and request id from the journal; the summary has this run's and the journal's
    totals; each row appears once per run."""
    fake = FakePreo.demo()
    source = tmp_path / "in.csv"
    source.write_text("purchase_id,amount\npur_demo_beer,1.00\npur_demo_locker,2.00\n")
    results = tmp_path / "out.jsonl"
    args = ["refund-bulk", str(source), "--reason", "compensation", "--journal",
            str(tmp_path / "j"), "--results", str(results), "--json"]  # fmt: skip
    with serve(fake) as server:
        fake.inject(Fault.read_timeout())  # the first row's answer is lost after the commit
        first = in_process(invoke, args, server.url)
        assert first.exit_code == 1
        second = in_process(invoke, args, server.url)
    assert second.exit_code == 0, second.output
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(lines) == 4  # two rows, two runs
    resumed = lines[2:]
    done_before = next(line for line in resumed if line["skipped"])
    made = {r.id: r for r in fake.refunds}
    assert done_before["refund_id"] in made
    assert done_before["amount"] == f"{made[done_before['refund_id']].amount:.2f}"
    assert done_before["request_id"]
    summary = json.loads(second.output.strip().splitlines()[-1])
    assert summary["journal_amount_refunded"] == "3.00"
    assert summary["amount_refunded"] != summary["journal_amount_refunded"]


def test_a_huge_refund_amount_is_printed_exactly(invoke: CliRunner, tmp_path: Path) -> None:
    """Repro cli_huge_amount_traceback.py: a 201 for 1e26 is printed exactly, no traceback."""
    fake = FakePreo.demo()
    source = tmp_path / "in.csv"
    source.write_text("purchase_id\npur_demo_beer\n")
    with serve(fake) as server:
        fake.inject(Fault.edit_json(amount=10**26))
        bulk = in_process(
            invoke, ["refund-bulk", str(source), "--reason", "sold_out", "--json"], server.url
        )
        fake.inject(Fault.edit_json(amount=10**26))
        single = in_process(
            invoke, ["refund", "pur_demo_locker", "--reason", "sold_out", "--json"], server.url
        )
    assert bulk.exception is None or isinstance(bulk.exception, SystemExit), bulk.output
    summary = json.loads(bulk.output.strip().splitlines()[-1])
    assert summary["amount_refunded"] == "100000000000000000000000000.00"
    assert single.exception is None or isinstance(single.exception, SystemExit), single.output
    assert "100000000000000000000000000.00" in single.output


def test_rows_asking_one_transaction_for_different_amounts_are_refused(
    invoke: CliRunner, tmp_path: Path
) -> None:
    fake = FakePreo.demo()
    source = tmp_path / "in.csv"
    source.write_text(
        "purchase_id,scope,amount,transaction_id\n"
        "pur_demo_beer,transaction_custom,1.00,tx_9\n"
        "pur_demo_locker,transaction_custom,2.00,tx_9\n"
    )
    with serve(fake) as server:
        result = in_process(
            invoke, ["refund-bulk", str(source), "--reason", "compensation"], server.url
        )
    assert result.exit_code == 2
    assert "line 3" in result.output
    assert "by line 2" in result.output
    assert fake.requests == []
