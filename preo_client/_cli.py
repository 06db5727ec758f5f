"""The ``preo`` command line (extra ``cli``): one refund, bulk refunds, the sandbox server."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

try:
    import click
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.table import Table
except ImportError as exc:  # pragma: no cover - exercised by hand without the extra
    raise SystemExit(
        "The preo command needs the 'cli' extra: pip install 'preo-client[cli]'"
    ) from exc

import httpx

from ._bulk import BulkSummary, InvalidItem, RefundItem, RefundOutcome
from ._client import AsyncPreoClient, PreoClient
from ._config import ConfigurationError
from ._exceptions import APIError, AuthenticationError, PreoError, RefundValidationError
from ._models import Refund
from ._policy import REASONS, SCOPES, plan_refund

__all__ = ["main"]

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_AUTH = 0, 1, 2, 3
ITEM_FIELDS = (
    "purchase_id",
    "reason",
    "scope",
    "amount",
    "comment",
    "pickup_point_id",
    "reference",
)
_F = TypeVar("_F", bound=Callable[..., Any])

stderr = Console(stderr=True)


def _connection_options(command: _F) -> _F:
    """--api-key / --base-url / --sandbox, on every command."""
    command = click.option(
        "--sandbox",
        is_flag=True,
        help="Run against an in-process sandbox with demo purchases (no key, no network).",
    )(command)
    command = click.option(
        "--base-url", envvar="PREO_BASE_URL", help="API base URL [env: PREO_BASE_URL]."
    )(command)
    return click.option(
        "--api-key",
        envvar="PREO_API_KEY",
        show_envvar=False,
        help="API key [env: PREO_API_KEY]. Never printed.",
    )(command)


def _fail(code: int, message: str) -> NoReturn:
    stderr.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    sys.exit(code)


def _client_options(api_key: str | None, base_url: str | None) -> dict[str, Any]:
    return {"api_key": api_key, "base_url": base_url}


def _money(value: Decimal) -> str:
    return f"{value:.2f}" if value == value.quantize(Decimal("0.01")) else str(value)


def refund_to_dict(refund: Refund) -> dict[str, Any]:
    """A refund as JSON-ready data (amount as an exact decimal string)."""
    data = {k: v for k, v in refund.to_dict(mode="json").items() if k != "amount"}
    return {
        **data,
        "amount": _money(refund.amount),
        "idempotency_key": refund.idempotency_key,
        "request_id": refund.request_id,
        "replayed": refund.replayed,
    }


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="preo-client", prog_name="preo")
def cli() -> None:
    """Create Preo refund requests from the command line."""


@cli.command()
@click.argument("purchase_id")
@click.option("--reason", required=True, help=f"One of: {', '.join(REASONS)}.")
@click.option("--scope", help=f"One of: {', '.join(SCOPES)} (default: derived from reason).")
@click.option("--amount", help="Exact amount for the custom scopes, e.g. 12.50.")
@click.option("--comment", help="Comment explaining the refund.")
@click.option("--pickup-point", "pickup_point_id", help="Pickup point id.")
@click.option("--idempotency-key", help="Key making a retry of this command safe.")
@click.option("--json", "as_json", is_flag=True, help="Print the refund as JSON.")
@_connection_options
def refund(
    purchase_id: str,
    reason: str,
    scope: str | None,
    amount: str | None,
    comment: str | None,
    pickup_point_id: str | None,
    idempotency_key: str | None,
    as_json: bool,
    api_key: str | None,
    base_url: str | None,
    sandbox: bool,
) -> None:
    """Create one refund request for PURCHASE_ID and print it."""
    try:
        client = _sync_client(api_key, base_url, sandbox)
        with client:
            result = client.purchases.refund(
                purchase_id,
                reason=reason,  # type: ignore[arg-type]  # checked at run time, like any str
                scope=scope,  # type: ignore[arg-type]
                amount=amount,
                comment=comment,
                pickup_point_id=pickup_point_id,
                idempotency_key=idempotency_key,
            )
    except (RefundValidationError, ConfigurationError) as exc:
        _fail(EXIT_USAGE, str(exc))
    except AuthenticationError as exc:
        _fail(EXIT_AUTH, str(exc))
    except APIError as exc:
        _fail(EXIT_FAILURES, str(exc))
    if as_json:
        click.echo(json.dumps(refund_to_dict(result), indent=2, default=str))
        return
    table = Table(title=f"Refund request for {purchase_id}", show_header=False)
    for key, value in refund_to_dict(result).items():
        table.add_row(key, "" if value is None else str(value))
    Console().print(table)


def _sync_client(api_key: str | None, base_url: str | None, sandbox: bool) -> PreoClient:
    if sandbox:
        from .testing import FakePreo

        return FakePreo.demo(auto_purchases=True).client()
    return PreoClient(**_client_options(api_key, base_url))


def _async_client(api_key: str | None, base_url: str | None, sandbox: bool) -> AsyncPreoClient:
    if sandbox:
        from .testing import FakePreo

        return FakePreo.demo(auto_purchases=True).async_client()
    try:  # the `fast` extra, when installed: much faster at high concurrency
        from ._aiohttp import AiohttpTransport
    except ImportError:
        return AsyncPreoClient(**_client_options(api_key, base_url))
    return AsyncPreoClient(
        **_client_options(api_key, base_url),
        http_client=httpx.AsyncClient(transport=AiohttpTransport(), follow_redirects=False),
    )


# -- bulk --------------------------------------------------------------------------------


def _read_items(stream: IO[str]) -> Iterator[RefundItem | InvalidItem]:
    """Items from CSV (header with purchase_id) or JSON lines, read lazily; a bad row becomes
    an :class:`InvalidItem`, reported as a failure without stopping the run."""
    first = stream.readline()
    while first and not first.strip():
        first = stream.readline()
    if not first:
        return
    if first.lstrip().startswith("{"):
        for number, line in enumerate(_chain(first, stream), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                yield InvalidItem(f"line {number}", "not valid JSON")
                continue
            yield _item(row, f"line {number}")
        return
    reader = csv.DictReader(_chain(first, stream))
    if reader.fieldnames is None or "purchase_id" not in reader.fieldnames:
        raise RefundValidationError("FILE", "CSV needs a header line with a purchase_id column")
    unknown = set(reader.fieldnames) - set(ITEM_FIELDS)
    if unknown:
        raise RefundValidationError(
            "FILE", f"unknown CSV columns {sorted(unknown)}; allowed: {', '.join(ITEM_FIELDS)}"
        )
    for number, row in enumerate(reader, start=2):
        yield _item(row, f"line {number}")


def _chain(first: str, rest: IO[str]) -> Iterator[str]:
    yield first
    yield from rest


def _item(row: object, where: str) -> RefundItem | InvalidItem:
    if not isinstance(row, dict):
        return InvalidItem(where, "expected an object with a purchase_id")
    values = {k: None if v in ("", None) else str(v) for k, v in row.items() if k in ITEM_FIELDS}
    purchase_id = values.get("purchase_id")
    if not purchase_id:
        return InvalidItem(where, "no purchase_id")
    return RefundItem(
        purchase_id,
        reason=values.get("reason"),
        scope=values.get("scope"),
        amount=values.get("amount"),
        comment=values.get("comment"),
        pickup_point_id=values.get("pickup_point_id"),
        reference=values.get("reference"),
    )


def _count_lines(path: Path) -> int | None:
    try:
        with path.open("rb") as data:
            lines = sum(1 for line in data if line.strip())
    except OSError:
        return None
    with path.open(encoding="utf-8") as text:
        first = text.readline().lstrip()
    return lines if first.startswith("{") else max(lines - 1, 0)


def _result_line(outcome: RefundOutcome) -> dict[str, Any]:
    refund = outcome.refund
    return {
        "purchase_id": outcome.item.purchase_id,
        "reference": outcome.item.reference,
        "ok": outcome.ok,
        "skipped": outcome.skipped,
        "refund_id": refund.id if refund else None,
        "amount": _money(refund.amount) if refund else None,
        "scope": getattr(refund.scope, "value", refund.scope) if refund else None,
        "status": getattr(refund.status, "value", refund.status) if refund else None,
        "error": type(outcome.error).__name__ if outcome.error else None,
        "message": str(outcome.error) if outcome.error else None,
        "attempts": outcome.attempts,
        "idempotency_key": outcome.idempotency_key,
    }


class _Reporter:
    """A live progress bar on a terminal; plain periodic lines otherwise."""

    def __init__(self, total: int | None, *, interval: float = 2.0) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self._last = self.started
        self._interval = interval
        self._progress: Progress | None = None
        if stderr.is_terminal:
            self._progress = Progress(
                TextColumn("refunds"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.completed}/{task.total} · {task.fields[rate]:.0f}/s"),
                TextColumn("· [red]{task.fields[failed]} failed"),
                TimeRemainingColumn(),
                console=stderr,
            )
            self._task = self._progress.add_task("refunds", total=total, rate=0.0, failed=0)
            self._progress.start()

    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-9)

    def update(self, outcome: RefundOutcome) -> None:
        self.done += 1
        self.failed += 0 if outcome.ok else 1
        if self._progress is not None:
            self._progress.update(
                self._task, completed=self.done, rate=self.rate(), failed=self.failed
            )
            return
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self.line()

    def line(self) -> None:
        total = self.total if self.total is not None else "?"
        eta = ""
        if self.total:
            left = (self.total - self.done) / max(self.rate(), 1e-9)
            eta = f", eta {left:.0f}s"
        click.echo(
            f"progress: {self.done}/{total} done, {self.rate():.0f}/s, {self.failed} failed{eta}",
            err=True,
        )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def _summary_table(summary: BulkSummary, elapsed: float) -> Table:
    table = Table(title="Bulk refund summary")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    table.add_row("succeeded", str(summary.succeeded))
    table.add_row("skipped (done before)", str(summary.skipped))
    for name, count in sorted(summary.failed.items()):
        table.add_row(f"failed: {name}", str(count))
    table.add_row("total", str(summary.total))
    table.add_row("amount refunded", _money(summary.total_amount))
    table.add_row("elapsed", f"{elapsed:.1f}s")
    return table


@cli.command("refund-bulk")
@click.argument("file")
@click.option("--reason", help="Reason for rows without one.")
@click.option("--scope", help="Scope for rows without one (default: derived from reason).")
@click.option("--concurrency", default=16, show_default=True, type=click.IntRange(1, 512))
@click.option("--journal", type=click.Path(dir_okay=False), help="Journal file to resume from.")
@click.option(
    "--results",
    type=click.Path(dir_okay=False),
    help="JSON-lines results file [default: FILE.results.jsonl, or preo-results.jsonl].",
)
@_connection_options
def refund_bulk(
    file: str,
    reason: str | None,
    scope: str | None,
    concurrency: int,
    journal: str | None,
    results: str | None,
    api_key: str | None,
    base_url: str | None,
    sandbox: bool,
) -> None:
    """Refund every purchase in FILE (CSV with a purchase_id column, or JSON lines; - for
    stdin). Re-run with the same --journal to resume: done items are skipped and in-flight
    ones resent with their recorded idempotency key."""
    if reason is not None and reason not in REASONS:
        try:
            plan_refund(reason)  # refused: its message names the reasons and a close match
        except RefundValidationError as exc:
            _fail(EXIT_USAGE, str(exc))
    results_path = Path(
        results or (f"{file}.results.jsonl" if file != "-" else "preo-results.jsonl")
    )
    total = None if file == "-" else _count_lines(Path(file))
    try:
        client = _async_client(api_key, base_url, sandbox)
    except ConfigurationError as exc:
        _fail(EXIT_USAGE, str(exc))
    with ExitStack() as stack:
        try:
            source = sys.stdin if file == "-" else stack.enter_context(open(file, encoding="utf-8"))
        except OSError as exc:
            _fail(EXIT_USAGE, f"cannot read {file}: {exc.strerror}")
        out = stack.enter_context(results_path.open("w", encoding="utf-8"))
        reporter = _Reporter(total)
        stack.callback(reporter.close)
        try:
            summary, auth_error = asyncio.run(
                _run_bulk(client, source, reason, scope, concurrency, journal, out, reporter)
            )
        except (RefundValidationError, ValueError) as exc:
            _fail(EXIT_USAGE, str(exc))
        elapsed = time.monotonic() - reporter.started
    if not stderr.is_terminal:
        reporter.line()
    Console().print(_summary_table(summary, elapsed))
    click.echo(f"results: {results_path}")
    if auth_error is not None:
        _fail(EXIT_AUTH, f"authentication failed, run stopped: {auth_error}")
    sys.exit(EXIT_FAILURES if summary.failures else EXIT_OK)


async def _run_bulk(
    client: AsyncPreoClient,
    source: IO[str],
    reason: str | None,
    scope: str | None,
    concurrency: int,
    journal: str | None,
    out: io.TextIOBase | IO[str],
    reporter: _Reporter,
) -> tuple[BulkSummary, PreoError | None]:
    async with client:
        run = client.purchases.refund_many(
            _read_items(source),
            reason=reason,  # type: ignore[arg-type]  # checked at run time, like any str
            scope=scope,  # type: ignore[arg-type]
            concurrency=concurrency,
            journal=journal,
        )
        async for outcome in run:
            out.write(json.dumps(_result_line(outcome)) + "\n")
            reporter.update(outcome)
            if isinstance(outcome.error, AuthenticationError):
                return run.summary, outcome.error
    return run.summary, None


# -- sandbox -----------------------------------------------------------------------------


@cli.group()
def sandbox() -> None:
    """The Preo sandbox (FakePreo) as a server on loopback."""


@sandbox.command(
    "serve",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def sandbox_serve(args: tuple[str, ...]) -> None:
    """Serve the demo sandbox until interrupted (API key: sk_sandbox_demo); --help for options
    (--host, --port, --quiet, --server, --rate-limit, --burst, --latency, ...)."""
    from .testing.__main__ import main as serve_main

    sys.exit(serve_main(["serve", *args], prog="preo sandbox"))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``preo`` script."""
    cli.main(args=argv, prog_name="preo")
