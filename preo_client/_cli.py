"""The ``preo`` command line (extra ``cli``): one refund, bulk refunds, the sandbox server."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
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

import attrs
import httpx

from ._amounts import amount_text
from ._bulk import (
    DEFAULT_MAX_PAUSE,
    AsyncBulkRun,
    BulkSummary,
    InvalidItem,
    JournalError,
    RefundItem,
    RefundOutcome,
    canonical_request,
    group_of_request,
)
from ._bulk_core import Transactions, check_transaction
from ._bulk_input import ITEM_FIELDS, InputError, Row, read_rows
from ._client import AsyncPreoClient, PreoClient
from ._config import ConfigurationError, resolve_base_url
from ._error_document import error_document
from ._exceptions import (
    AuthenticationError,
    PermissionDeniedError,
    PreoError,
    RefundValidationError,
)
from ._journal_reader import EXPORT_FIELDS, JournalReport, journal_report
from ._models import Refund
from ._pacing import AdaptivePacer
from ._policy import REASONS, SCOPES, plan_refund
from .testing._serve_command import serve_command

__all__ = ["ITEM_FIELDS", "main"]

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_AUTH, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
SHOWN_ERRORS = 20
_F = TypeVar("_F", bound=Callable[..., Any])


def _console(*, err: bool) -> Console:
    """A console that never hard-wraps when it is not a terminal (CI logs are grepped)."""
    console = Console(stderr=err, soft_wrap=True, highlight=False)
    if console.is_terminal:
        return console
    return Console(stderr=err, soft_wrap=True, highlight=False, width=1000)


stderr = _console(err=True)
_OUTPUT = {"json": False}  # --json on the running command: errors are JSON too


def _connection_options(command: _F) -> _F:
    """--api-key / --base-url / --allow-insecure-http / --sandbox, on every API command."""
    command = click.option(
        "--sandbox",
        is_flag=True,
        help="Run against an in-process sandbox with demo purchases (no key, no network).",
    )(command)
    command = click.option(
        "--allow-insecure-http",
        is_flag=True,
        help="Allow a plain http:// --base-url on a non-loopback host (sends the key in clear).",
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


def _printable(text: str) -> str:
    """Text safe for any terminal encoding (a lone surrogate in input must not crash output)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _fail(code: int, message: str, error: BaseException | None = None) -> NoReturn:
    """Exit with ``code``: the message on stderr, or with --json the error document."""
    message = _printable(message)
    if _OUTPUT["json"]:
        click.echo(json.dumps({"error": error_document(code, message, error)}))
    else:
        stderr.print(f"[bold red]error:[/] {_escape(message)}", markup=True)
    sys.exit(code)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _cli_words(message: str) -> str:
    """A client message in the command line's words: flags, not constructor arguments."""
    for word, flag in (
        ("allow_insecure_http=True", "--allow-insecure-http"),
        ("base_url", "--base-url"),
        ("api_key", "--api-key"),
    ):
        message = message.replace(word, flag)
    return message


def _check_connection(
    api_key: str | None, base_url: str | None, sandbox: bool, allow_insecure_http: bool
) -> None:
    """Refuse a missing key or an unsafe URL before anything else, naming the flags."""
    if sandbox:
        return
    if not api_key:
        _fail(EXIT_USAGE, "no API key: pass --api-key, set PREO_API_KEY, or use --sandbox")
    try:
        resolve_base_url(base_url, allow_insecure_http=allow_insecure_http)
    except ConfigurationError as exc:
        if base_url and base_url.lower().startswith("http://"):
            _fail(
                EXIT_USAGE,
                f"--base-url {base_url} is plain http:// (the API key would travel in clear "
                "text): use https://, a loopback host, or pass --allow-insecure-http",
            )
        _fail(EXIT_USAGE, _cli_words(str(exc)), exc)


def _money(value: Decimal) -> str:
    return amount_text(value)  # exact at any size: never rounded, never InvalidOperation


def refund_to_dict(refund: Refund) -> dict[str, Any]:
    """A refund as JSON-ready data: ``to_dict(mode="json")`` (the amount as its exact decimal
    string, the one rule of :func:`amount_text`) and how it came back."""
    plain = refund.to_dict(mode="json")
    amount = plain.pop("amount")
    return {
        **plain,
        "amount": amount,
        "idempotency_key": refund.idempotency_key,
        "request_id": refund.request_id,
        "replayed": refund.replayed,
    }


class _PolicyChoice(click.Choice[str]):
    """A choice among the refund policy's values (help and shell completion list them); an
    unknown value is refused with the policy's message, which names a close match."""

    def __init__(self, values: Sequence[str], check: Callable[[str], object]) -> None:
        super().__init__(values)
        self._check = check

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value not in self.choices:
            try:
                self._check(value)
            except RefundValidationError as exc:
                message = str(exc).split(": ", 1)[1]
                raise click.BadParameter(message, ctx=ctx, param=param) from exc
        return super().convert(value, param, ctx)


_REASON = _PolicyChoice(REASONS, check=plan_refund)
_SCOPE = _PolicyChoice(SCOPES, check=lambda scope: plan_refund("other", scope))


class _JsonUsageError(click.UsageError):
    """A usage error click found while parsing, shown as the ``--json`` error document."""

    def __init__(self, original: click.UsageError) -> None:
        super().__init__(original.format_message(), original.ctx)
        param = getattr(original, "param", None)
        self.field = None if param is None else param.name
        # the policy's own error when it refused the value (_PolicyChoice): its type and field
        cause = original.__cause__
        self.error = cause if isinstance(cause, RefundValidationError) else None

    def show(self, file: IO[Any] | None = None) -> None:
        message = _printable(self.format_message())
        document = error_document(self.exit_code, message, self.error)
        if self.field and not document["field_errors"]:
            document["field_errors"] = {self.field: [message]}
        click.echo(json.dumps({"error": document}))


class _Group(click.Group):
    """The ``preo`` group: with ``--json``, even a usage error click finds while parsing (an
    unknown ``--reason``, ``--concurrency 0``) is one JSON error document, exit 2."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            ctx = super().make_context(info_name, list(args), parent, **extra)
        except click.UsageError as exc:
            raise _JsonUsageError(exc) if "--json" in args else exc from None
        ctx.meta["preo.json"] = "--json" in args
        return ctx

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _JsonUsageError:
            raise
        except click.UsageError as exc:
            if ctx.meta.get("preo.json"):
                raise _JsonUsageError(exc) from None
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="preo-client", prog_name="preo")
def cli() -> None:
    """Create Preo refund requests from the command line."""


@cli.command()
@click.argument("purchase_id")
@click.option(
    "--reason",
    required=True,
    type=_REASON,
    metavar="REASON",
    help=f"Why the refund is made: {', '.join(REASONS)}.",
)
@click.option(
    "--scope",
    type=_SCOPE,
    metavar="SCOPE",
    help=f"What is refunded: {', '.join(SCOPES)} [default: derived from --reason].",
)
@click.option("--amount", help="Exact amount for the custom scopes, e.g. 12.50.")
@click.option("--comment", help="Comment explaining the refund.")
@click.option("--pickup-point", "pickup_point_id", help="Pickup point id.")
@click.option("--idempotency-key", help="Key making a retry of this command safe.")
@click.option("--json", "as_json", is_flag=True, help="Print the refund (or the error) as JSON.")
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
    allow_insecure_http: bool,
    sandbox: bool,
) -> None:
    """Create one refund request for PURCHASE_ID and print it."""
    _OUTPUT["json"] = as_json
    _check_connection(api_key, base_url, sandbox, allow_insecure_http)
    try:
        client = _sync_client(api_key, base_url, sandbox, allow_insecure_http)
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
    except ConfigurationError as exc:
        _fail(EXIT_USAGE, _cli_words(str(exc)), exc)
    except RefundValidationError as exc:
        _fail(EXIT_USAGE, str(exc), exc)
    except (AuthenticationError, PermissionDeniedError) as exc:
        _fail(EXIT_AUTH, str(exc), exc)
    except PreoError as exc:
        _fail(EXIT_FAILURES, str(exc), exc)
    if as_json:
        click.echo(json.dumps(refund_to_dict(result), indent=2, default=str))
        return
    table = Table(title=f"Refund request for {purchase_id}", show_header=False)
    for key, value in refund_to_dict(result).items():
        table.add_row(key, "" if value is None else str(value))
    _console(err=False).print(table)


def _sync_client(
    api_key: str | None, base_url: str | None, sandbox: bool, allow_insecure_http: bool = False
) -> PreoClient:
    if sandbox:
        from .testing import FakePreo

        return FakePreo.demo(auto_purchases=True).client()
    return PreoClient(api_key=api_key, base_url=base_url, allow_insecure_http=allow_insecure_http)


def _async_client(
    api_key: str | None, base_url: str | None, sandbox: bool, allow_insecure_http: bool = False
) -> tuple[AsyncPreoClient, httpx.AsyncClient | None]:
    """The client, and the HTTP client the command must close itself (an injected one)."""
    if sandbox:
        from .testing import FakePreo

        fake = FakePreo.demo(auto_purchases=True)
        http = httpx.AsyncClient(transport=fake.async_transport())
        return fake.async_client(http_client=http), http
    options: dict[str, Any] = {
        "api_key": api_key,
        "base_url": base_url,
        "allow_insecure_http": allow_insecure_http,
    }
    try:  # the `fast` extra, when installed: much faster at high concurrency
        from ._aiohttp import AiohttpTransport
    except ImportError:
        return AsyncPreoClient(**options), None
    http = httpx.AsyncClient(transport=AiohttpTransport(), follow_redirects=False)
    try:
        return AsyncPreoClient(**options, http_client=http), http
    except BaseException:
        asyncio.run(http.aclose())  # closes the aiohttp session: no "Unclosed" warning
        raise


# -- bulk --------------------------------------------------------------------------------


def _with_defaults(item: RefundItem, reason: str | None, scope: str | None) -> RefundItem:
    return attrs.evolve(item, reason=item.reason or reason, scope=item.scope or scope)


def _problem(row: Row, reason: str | None, scope: str | None) -> str | None:
    """Why ``row`` cannot be sent (None: it can), in words naming its line and field."""
    if isinstance(row.item, InvalidItem):
        return f"line {row.line}: {row.item.problem}"
    try:
        canonical_request(_with_defaults(row.item, reason, scope))
    except RefundValidationError as exc:
        return f"line {row.line}: {exc}"
    return None


def _missing_reason(rows: Sequence[Row], reason: str | None) -> None:
    if reason is not None:
        return
    lines = [r.line for r in rows if isinstance(r.item, RefundItem) and r.item.reason is None]
    if lines:
        shown = ", ".join(map(str, lines[:5])) + (", ..." if len(lines) > 5 else "")
        _fail(
            EXIT_USAGE,
            f"--reason is required: {len(lines)} row(s) have no reason (lines {shown}); pass "
            f"--reason ({', '.join(REASONS)}) or add a reason column. Nothing was sent.",
        )


def _validate(rows: Sequence[Row], reason: str | None, scope: str | None) -> None:
    """The first pass over a file: every row checked before anything is sent."""
    _missing_reason(rows, reason)
    problems = [p for row in rows if (p := _problem(row, reason, scope)) is not None]
    transactions: Transactions = {}
    for row in rows if not problems else ():  # rows of one transaction asking other amounts
        assert isinstance(row.item, RefundItem)  # nosec B101  # checked above
        try:
            canonical = canonical_request(_with_defaults(row.item, reason, scope))
            check_transaction(transactions, canonical, f"line {row.line}")
        except RefundValidationError as exc:
            problems.append(f"line {row.line}: {exc}")
    if problems:
        more = len(problems) - SHOWN_ERRORS
        listing = "\n  ".join(problems[:SHOWN_ERRORS]) + (
            f"\n  ... and {more} more" if more > 0 else ""
        )
        _fail(
            EXIT_USAGE,
            f"{len(problems)} invalid row(s), nothing was sent:\n  {listing}",
        )


class _StdinRows:
    """Rows of standard input, checked as they are read: a bad row stops the run cleanly."""

    def __init__(self, lines: Iterable[bytes], reason: str | None, scope: str | None) -> None:
        self.line_of: list[int] = []
        self._rows = read_rows(lines)
        self._reason = reason
        self._scope = scope

    def __iter__(self) -> Iterator[RefundItem]:
        for row in self._rows:
            problem = _problem(row, self._reason, self._scope)
            if problem is not None:
                raise InputError(row.line, problem.split(": ", 1)[1])
            assert isinstance(row.item, RefundItem)  # nosec B101  # _problem checked it
            self.line_of.append(row.line)
            yield row.item

    async def __aiter__(self) -> AsyncIterator[RefundItem]:
        """The rows, read by a daemon thread: a slow producer never blocks the event loop
        (which would stall in-flight requests until their timeouts fire)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[RefundItem | None, BaseException | None]] = asyncio.Queue(64)

        def hand(entry: tuple[RefundItem | None, BaseException | None]) -> bool:
            try:
                asyncio.run_coroutine_threadsafe(queue.put(entry), loop).result()
            except BaseException:
                return False
            return True

        def pump() -> None:
            try:
                for item in self:
                    if not hand((item, None)):
                        return
            except Exception as exc:
                hand((None, exc))
                return
            hand((None, None))

        threading.Thread(target=pump, name="preo-stdin", daemon=True).start()
        while True:
            item, error = await queue.get()
            if error is not None:
                raise error
            if item is None:
                return
            yield item


@attrs.frozen
class _Plan:
    """What a run over valid items will do: rows per reason and scope, requests, covered."""

    rows: dict[tuple[str, str], int]
    requests: int
    covered: int
    custom_amount: Decimal

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": True,
            "exit_code": EXIT_OK,
            "rows": sum(self.rows.values()),
            "requests": self.requests,
            "covered": self.covered,
            "custom_amount": _money(self.custom_amount),
            "plans": [
                {"reason": reason, "scope": scope, "rows": count}
                for (reason, scope), count in sorted(self.rows.items())
            ],
        }


def _plan(items: Sequence[RefundItem], reason: str | None, scope: str | None) -> _Plan:
    """The plan of a run, as the run groups it: an item with a transaction_id and a
    transaction scope sends one request per transaction and transaction request (reason,
    scope, amount); the other rows of the group are covered by it (and add no amount)."""
    rows: collections.Counter[tuple[str, str]] = collections.Counter()
    groups: set[str] = set()
    requests = covered = 0
    custom = Decimal(0)
    for item in items:
        full = _with_defaults(item, reason, scope)
        plan = plan_refund(full.reason or "", full.scope, full.amount)
        rows[(str(plan.reason), str(plan.scope))] += 1
        group = group_of_request(canonical_request(full))
        if group is not None:
            if group in groups:
                covered += 1
                continue
            groups.add(group)
        requests += 1
        custom += plan.amount or 0
    return _Plan(dict(rows), requests, covered, custom)


def _plan_table(plan: _Plan) -> Table:
    table = Table(title="Bulk refund plan (dry run: nothing sent)")
    table.add_column("reason")
    table.add_column("scope")
    table.add_column("rows", justify="right")
    for (reason_, scope_), count in sorted(plan.rows.items()):
        table.add_row(reason_, scope_, str(count))
    table.add_row("total", "", str(sum(plan.rows.values())))
    table.add_row("requests to send", "", str(plan.requests))
    table.add_row("covered (by their transaction's request)", "", str(plan.covered))
    table.add_row("custom amounts", "", _money(plan.custom_amount))
    return table


def _result_line(outcome: RefundOutcome, line_of: Sequence[int]) -> dict[str, Any]:
    refund = outcome.refund
    earlier = outcome.earlier  # a row an earlier run finished: what the journal recorded
    covered_by = outcome.covered_by
    return {
        "line": _line(outcome.position, line_of),
        "purchase_id": outcome.item.purchase_id,
        "reference": outcome.item.reference,
        "ok": outcome.ok,
        "skipped": outcome.skipped,
        "replayed": outcome.replayed,
        "covered_by_line": None if covered_by is None else _line(covered_by, line_of),
        "refund_id": refund.id if refund else (earlier.refund_id if earlier else None),
        "amount": _money(refund.amount) if refund else (earlier.amount if earlier else None),
        "request_id": refund.request_id if refund else (earlier.request_id if earlier else None),
        "amount_differs": outcome.amount_differs,
        "scope": getattr(refund.scope, "value", refund.scope) if refund else None,
        "status": getattr(refund.status, "value", refund.status) if refund else None,
        "error": type(outcome.error).__name__ if outcome.error else None,
        "message": str(outcome.error) if outcome.error else None,
        "note": outcome.note,
        "attempts": outcome.attempts,
        "idempotency_key": outcome.idempotency_key,
    }


def _line(position: int, line_of: Sequence[int]) -> int | None:
    return line_of[position] if 0 <= position < len(line_of) else None


class _Reporter:
    """A live progress bar on a terminal; plain periodic lines otherwise."""

    def __init__(
        self, total: int | None, *, interval: float = 2.0, pacer: AdaptivePacer | None = None
    ) -> None:
        self.total = total
        self.pacer = pacer
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
                TextColumn("· {task.fields[pace]}"),
                TimeRemainingColumn(),
                console=stderr,
            )
            self._task = self._progress.add_task(
                "refunds", total=total, rate=0.0, failed=0, pace=self.pace()
            )
            self._progress.start()

    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-9)

    def pace(self) -> str:
        """The send rate in force and the throttled share (``429``/``503`` of answers)."""
        if self.pacer is None:
            return "pace n/a"
        limit = self.pacer.rate
        rate = "unlimited" if limit is None else f"{limit:.0f}/s"
        return f"pace {rate}, {self.pacer.throttled_share:.1%} throttled"

    def update(self, outcome: RefundOutcome) -> None:
        self.done += 1
        self.failed += 0 if outcome.ok else 1
        if self._progress is not None:
            self._progress.update(
                self._task,
                completed=self.done,
                rate=self.rate(),
                failed=self.failed,
                pace=self.pace(),
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
            f"progress: {self.done}/{total} done, {self.rate():.0f}/s, {self.failed} failed{eta}"
            f", {self.pace()}",
            err=True,
        )

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _summary_table(summary: BulkSummary, elapsed: float) -> Table:
    table = Table(title="Bulk refund summary")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    table.add_row("succeeded", str(summary.succeeded))
    table.add_row("replayed (same refund as another row)", str(summary.replayed))
    table.add_row("covered (by its transaction's refund)", str(summary.covered))
    table.add_row("skipped (done before)", str(summary.skipped))
    for name, count in sorted(summary.failed.items()):
        table.add_row(f"failed: {name}", str(count))
    table.add_row("total", str(summary.total))
    if summary.unfinished:
        table.add_row("in flight at stop (resume to finish)", str(summary.unfinished))
    if summary.unread:
        table.add_row("never read (the run stopped)", str(summary.unread))
    if summary.amount_differs:
        table.add_row("refunded another amount than asked", str(summary.amount_differs))
    if summary.missing:
        table.add_row("in the journal, not in this input", ", ".join(summary.missing[:5]))
    table.add_row("amount refunded (this run)", _money(summary.total_amount))
    if summary.journal_total is not None:
        table.add_row("amount refunded (whole journal)", _money(summary.journal_total))
    table.add_row("elapsed", f"{elapsed:.1f}s")
    return table


def _failed_rows(summary: BulkSummary, line_of: Sequence[int]) -> list[dict[str, Any]]:
    return [
        {
            "line": _line(o.position, line_of),
            "purchase_id": o.item.purchase_id,
            "error": type(o.error).__name__,
            "message": str(o.error),
            "note": o.note,
        }
        for o in sorted(summary.failed_items, key=lambda o: o.position)
    ]


def _report(
    summary: BulkSummary,
    elapsed: float,
    line_of: Sequence[int],
    results_path: Path,
    run_id: str,
    code: int,
    error: dict[str, Any] | None,
) -> None:
    """The summary: a table and the failed rows, or one JSON document (with the error
    document of a stopped run)."""
    failed = _failed_rows(summary, line_of)
    if _OUTPUT["json"]:
        data = {
            "exit_code": code,
            "error": error,
            "succeeded": summary.succeeded,
            "replayed": summary.replayed,
            "covered": summary.covered,
            "skipped": summary.skipped,
            "failed": dict(summary.failed),
            "total": summary.total,
            "unfinished": summary.unfinished,
            "unread": summary.unread,
            "amount_differs": summary.amount_differs,
            "missing": summary.missing,
            "amount_refunded": _money(summary.total_amount),
            "journal_amount_refunded": (
                None if summary.journal_total is None else _money(summary.journal_total)
            ),
            "elapsed_s": round(elapsed, 3),
            "stopped": summary.stopped,
            "failed_rows": failed,
            "results": str(results_path),
            "batch_id": run_id,
        }
        click.echo(json.dumps(data))
        return
    out = _console(err=False)
    out.print(_summary_table(summary, elapsed))
    for row in failed[:SHOWN_ERRORS]:
        note = f" ({row['note']})" if row["note"] else ""
        out.print(_escape(_printable(f"line {row['line']}: {row['message']}{note}")))
    if len(failed) > SHOWN_ERRORS:
        out.print(f"... and {len(failed) - SHOWN_ERRORS} more failed rows in {results_path}")
    click.echo(f"results: {results_path}")
    click.echo(f"batch id: {run_id}")


def _results_file(path: Path, *, append: bool, overwrite: bool) -> IO[str]:
    if path.exists() and not append and not overwrite:
        _fail(
            EXIT_USAGE,
            f"results file {path} already exists; pass --overwrite to replace it, --results PATH "
            "to write elsewhere, or resume with the same --journal to append to it",
        )
    try:
        return path.open("a" if append else "w", encoding="utf-8")
    except OSError as exc:
        _fail(EXIT_USAGE, f"cannot write results file {path}: {exc.strerror}")


@cli.command("refund-bulk")
@click.argument("file")
@click.option(
    "--reason",
    type=_REASON,
    metavar="REASON",
    help=f"Reason for rows without one: {', '.join(REASONS)}.",
)
@click.option(
    "--scope",
    type=_SCOPE,
    metavar="SCOPE",
    help=f"Scope for rows without one: {', '.join(SCOPES)} [default: derived from the reason].",
)
@click.option(
    "--concurrency",
    default=16,
    show_default=True,
    type=click.IntRange(1, 512),
    help="Requests in flight at once (--max-rate and the server's limit may pace them further).",
)
@click.option(
    "--journal",
    type=click.Path(dir_okay=False),
    help="Journal (SQLite) to resume from; one run at a time.",
)
@click.option(
    "--batch-id",
    help="Fixes every idempotency key of the run: the same input and batch id send the same "
    "keys, even without the journal.",
)
@click.option(
    "--results",
    type=click.Path(dir_okay=False),
    help="JSON-lines results file [default: FILE.results.jsonl, or preo-results.jsonl].",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing results file.")
@click.option(
    "--max-pause",
    default=DEFAULT_MAX_PAUSE,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Longest server-asked pause (Retry-After, seconds) the run waits out; longer stops it.",
)
@click.option(
    "--max-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Cap on requests per second (your contract's limit); default: as fast as "
    "--concurrency allows until the server throttles, then its limit.",
)
@click.option(
    "--pacing",
    type=click.Choice(["adaptive", "fixed"]),
    default="adaptive",
    show_default=True,
    help="adaptive: follow the server's 429/503 (back off, probe up); fixed: exactly --max-rate.",
)
@click.option("--dry-run", is_flag=True, help="Check every row and print the plan; send nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary (or the error) as JSON.")
@_connection_options
def refund_bulk(
    file: str,
    reason: str | None,
    scope: str | None,
    concurrency: int,
    journal: str | None,
    batch_id: str | None,
    results: str | None,
    overwrite: bool,
    max_pause: float,
    max_rate: float | None,
    pacing: str,
    dry_run: bool,
    as_json: bool,
    api_key: str | None,
    base_url: str | None,
    allow_insecure_http: bool,
    sandbox: bool,
) -> None:
    """Refund every purchase in FILE (CSV with a purchase_id column, or JSON lines; - for
    stdin). Re-run with the same --journal to resume: done items are skipped and in-flight
    ones resent with their recorded idempotency key."""
    _OUTPUT["json"] = as_json
    with _before_sending():  # Ctrl-C while reading and checking: exit 130
        try:  # an unknown --reason / --scope: the message names the values and a close match
            if reason is not None and reason not in REASONS:
                plan_refund(reason)
            if scope is not None and scope not in SCOPES:
                plan_refund("other", scope)
        except RefundValidationError as exc:
            _fail(EXIT_USAGE, f"--{exc}", exc)
        if batch_id is not None and not batch_id.strip():
            _fail(EXIT_USAGE, "--batch-id must not be empty")
        items: Iterable[RefundItem] | _StdinRows
        if file == "-":
            stdin_rows = _StdinRows(_own_stdin(), reason, scope)
            items, line_of, total = stdin_rows, stdin_rows.line_of, None
        else:
            rows = _read_file(Path(file))
            _validate(rows, reason, scope)
            items = [r.item for r in rows if isinstance(r.item, RefundItem)]
            line_of, total = [r.line for r in rows], len(rows)
            if dry_run:
                plan = _plan(items, reason, scope)
                if as_json:
                    click.echo(json.dumps(plan.to_dict()))
                else:
                    _console(err=False).print(_plan_table(plan))
                sys.exit(EXIT_OK)
            _transaction_note(items, reason, scope)
        if dry_run:
            _fail(EXIT_USAGE, "--dry-run needs a FILE (standard input cannot be read twice)")
        _check_connection(api_key, base_url, sandbox, allow_insecure_http)
        results_path = Path(
            results or (f"{file}.results.jsonl" if file != "-" else "preo-results.jsonl")
        )
        resuming = journal is not None and Path(journal).is_file() and Path(journal).stat().st_size
        try:
            client, http = _async_client(api_key, base_url, sandbox, allow_insecure_http)
        except ConfigurationError as exc:
            _fail(EXIT_USAGE, _cli_words(str(exc)), exc)
    with contextlib.ExitStack() as stack:
        if http is not None:
            stack.callback(_close_quietly, http)
        with _before_sending():
            try:
                run = AsyncBulkRun(
                    client, items, reason=reason, scope=scope, concurrency=concurrency,
                    journal=journal, on_result=None, batch_id=batch_id, max_pause=max_pause,
                    max_rate=max_rate, pacing=pacing,
                )  # fmt: skip
            except JournalError as exc:
                _fail(EXIT_USAGE, _journal_message(exc, line_of), exc)
            except RefundValidationError as exc:
                _fail(EXIT_USAGE, f"--{_cli_words(str(exc)).replace('_', '-')}", exc)
            stack.callback(run.close)
            if total is not None:  # a file: every input line is known before the run
                try:
                    _record_inputs(run, line_of)
                except JournalError as exc:
                    _fail(EXIT_USAGE, _journal_message(exc, line_of), exc)
            out = stack.enter_context(
                _results_file(results_path, append=bool(resuming), overwrite=overwrite)
            )
            reporter = _Reporter(total, pacer=run.pacer)
            stack.callback(reporter.close)
        try:
            stop = asyncio.run(_drive(client, http, run, out, reporter, line_of))
        except KeyboardInterrupt:
            stop = KeyboardInterrupt()
        if total is None:  # standard input: its lines are known now
            with contextlib.suppress(JournalError):  # lines only inform the audit trail
                _record_inputs(run, line_of)
        reporter.close()
        elapsed = time.monotonic() - reporter.started
    if not stderr.is_terminal:
        reporter.line()
    code, error = _verdict(run.summary, stop, journal, line_of)
    document = None if error is None else error_document(code, _printable(error), stop)
    _report(run.summary, elapsed, line_of, results_path, run.run_id, code, document)
    if error is not None and not _OUTPUT["json"]:
        _fail(code, error)
    sys.exit(code)


@contextlib.contextmanager
def _before_sending() -> Iterator[None]:
    """Ctrl-C before the first request (reading, checking a big file): exit 130, one message
    (a JSON document with --json), never click's bare "Aborted!"."""
    try:
        yield
    except KeyboardInterrupt:
        _fail(EXIT_INTERRUPTED, "interrupted before anything was sent")


def _own_stdin() -> IO[bytes]:
    """Standard input as a reader of our own: the reading thread may still be blocked in it
    when the process exits, and must not hold the interpreter's ``sys.stdin`` lock then."""
    return open(sys.stdin.fileno(), "rb", closefd=False)  # lives as long as the run


def _journal_message(exc: JournalError, line_of: Sequence[int]) -> str:
    line = None if exc.position is None else _line(exc.position, line_of)
    return f"line {line}: {exc}" if line is not None else str(exc)


def _close_quietly(http: httpx.AsyncClient) -> None:
    if not http.is_closed:
        with contextlib.suppress(Exception):
            asyncio.run(http.aclose())


def _read_file(path: Path) -> list[Row]:
    try:
        with path.open("rb") as data:
            return list(read_rows(data))
    except InputError as exc:
        _fail(EXIT_USAGE, f"{path}: {exc}; nothing was sent", exc)
    except OSError as exc:
        _fail(EXIT_USAGE, f"cannot read {path}: {exc.strerror}")


def _transaction_note(items: Sequence[RefundItem], reason: str | None, scope: str | None) -> None:
    unguarded = 0
    for item in items:
        plan = plan_refund(item.reason or reason or "", item.scope or scope, item.amount)
        if str(plan.scope).startswith("transaction_") and item.transaction_id is None:
            unguarded += 1
    if unguarded > 1 and not _OUTPUT["json"]:
        stderr.print(
            f"note: {unguarded} rows use a transaction scope without a transaction_id column: "
            "a row whose transaction another row already refunded fails with 'Already "
            "refunded'. Add transaction_id to send one request per transaction."
        )


async def _drive(
    client: AsyncPreoClient,
    http: httpx.AsyncClient | None,
    run: AsyncBulkRun,
    out: IO[str],
    reporter: _Reporter,
    line_of: Sequence[int],
) -> BaseException | None:
    """Run to the end or to a systemic stop (returned); always closes every connection."""
    try:
        async with client, contextlib.aclosing(run.__aiter__()) as outcomes:  # type: ignore[type-var]
            try:
                async for outcome in outcomes:
                    out.write(json.dumps(_result_line(outcome, line_of)) + "\n")
                    reporter.update(outcome)
            except (PreoError, OSError) as exc:  # OSError: the results file (disk full)
                return exc
    finally:
        if http is not None:
            await http.aclose()
    return None


def _verdict(
    summary: BulkSummary, stop: BaseException | None, journal: str | None, line_of: Sequence[int]
) -> tuple[int, str | None]:
    """The exit code of a finished or stopped run, and the error message if any."""
    resume = f"; resume with the same --journal {journal}" if journal else ""
    if isinstance(stop, AuthenticationError | PermissionDeniedError):
        return EXIT_AUTH, f"authentication failed, run stopped: {stop}"
    if isinstance(stop, KeyboardInterrupt):
        return EXIT_INTERRUPTED, f"interrupted{resume}"
    if isinstance(stop, JournalError):
        return EXIT_USAGE, f"run stopped: {_journal_message(stop, line_of)}{resume}"
    if isinstance(stop, InputError):
        return EXIT_USAGE, f"run stopped: {stop}{resume}"
    if isinstance(stop, OSError):
        return EXIT_FAILURES, f"run stopped: cannot write results: {stop}{resume}"
    if stop is not None:
        return EXIT_FAILURES, f"run stopped: {stop}{resume}"
    return (EXIT_FAILURES if summary.failures else EXIT_OK), None


def _record_inputs(run: AsyncBulkRun, line_of: Sequence[int]) -> None:
    """Give the journal's audit trail each input position's line, so ``preo journal`` lists
    every input item (sent or not) with its line. (The one place the CLI reaches the run's
    journal: re-wire here if the bulk run's internals move.)"""
    journal = run._core.journal
    if journal is not None and line_of:
        journal.record_inputs(list(line_of))


# -- journal -----------------------------------------------------------------------------


@cli.group("journal")
def journal_group() -> None:
    """Read a refund-bulk journal: what was refunded, when, and what needs attention.
    Read-only: never writes to the journal; refused while a run holds it."""


def _journal_report(path: str) -> JournalReport:
    try:
        return journal_report(path)
    except JournalError as exc:
        _fail(EXIT_USAGE, str(exc), exc)


@journal_group.command("show")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report (or the error) as JSON.")
def journal_show(path: str, as_json: bool) -> None:
    """Counts by standing, the exact refunded total of every run, the runs, and the rows that
    need attention, of the journal at PATH."""
    _OUTPUT["json"] = as_json
    report = _journal_report(path)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    out = _console(err=False)
    counts = Table(title=f"Journal {path} (batch id {report.batch_id})")
    counts.add_column("standing")
    counts.add_column("items", justify="right")
    for standing, count in report.counts.items():
        counts.add_row(standing.replace("_", " "), str(count))
    counts.add_row("total", str(len(report.records)))
    counts.add_row("refunded (every run, exact)", _money(report.refunded_total))
    out.print(counts)
    runs = Table(title="Runs")
    for column in ("run", "started (UTC)", "ended (UTC)", "attempts", "refunds", "amount"):
        runs.add_column(column)
    for run in report.runs:
        runs.add_row(
            str(run.run), _when(run.started_at), _when(run.ended_at) or "killed or running",
            str(run.attempts), str(run.refunds), _money(run.amount),
        )  # fmt: skip
    out.print(runs)
    attention = report.attention
    for record in attention[:SHOWN_ERRORS]:
        where = f"line {record.line}" if record.line is not None else f"item {record.position + 1}"
        what = record.error or record.standing.replace("_", " ")
        out.print(_escape(_printable(f"{where}: {record.purchase_id} {what} "
                                     f"(key {record.idempotency_key})")))  # fmt: skip
    if len(attention) > SHOWN_ERRORS:
        out.print(f"... and {len(attention) - SHOWN_ERRORS} more: preo journal export {path}")
    if not report.closed_cleanly:
        out.print("note: the last run did not close the journal (killed?): resume it with "
                  "refund-bulk --journal to settle the rows in flight")  # fmt: skip


def _when(value: object) -> str:
    return "" if value is None else str(value).replace("+00:00", "Z")


@journal_group.command("export")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl"]),
    default="csv",
    show_default=True,
    help="csv: a header line, then one row per item; jsonl: one JSON object per item.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="File [default: stdout].")
def journal_export(path: str, fmt: str, output: str | None) -> None:
    """One record per input item of the journal at PATH, in input order (CSV with a header,
    or JSON lines): line, request, standing, refund, key, request id, times, attempts."""
    if output is not None and Path(output).resolve() == Path(path).resolve():
        _fail(EXIT_USAGE, f"-o {output} is the journal itself; export elsewhere")
    records = [record.to_dict() for record in _journal_report(path).records]
    try:
        sink = open(output, "w", encoding="utf-8", newline="") if output else None  # noqa: SIM115
    except OSError as exc:
        _fail(EXIT_USAGE, f"cannot write {output}: {exc.strerror}")
    stream: IO[str] = sink if sink is not None else sys.stdout
    try:
        if fmt == "jsonl":
            for record in records:
                stream.write(json.dumps(record) + "\n")
        else:
            import csv

            writer = csv.DictWriter(stream, fieldnames=EXPORT_FIELDS, lineterminator="\n")
            writer.writeheader()
            writer.writerows({k: _cell(v) for k, v in record.items()} for record in records)
    finally:
        if sink is not None:
            sink.close()


def _cell(value: object) -> object:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


# -- sandbox -----------------------------------------------------------------------------


@cli.group()
def sandbox() -> None:
    """The Preo sandbox (FakePreo) as a server on loopback."""


sandbox.add_command(serve_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``preo`` script."""
    cli.main(args=argv, prog_name="preo")
