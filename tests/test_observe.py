"""Structured logs: every record carries its ``preo.*`` fields, an attempt's line names its
cause, ``PREO_LOG=json`` writes one JSON object per record, and no record holds the API key
(Hypothesis over keys and server behaviour, each call under a watchdog)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preo_client import Backoff, Refund
from preo_client._observe import FIELDS, JsonFormatter, parse_log_setting, setup_logging
from tests._observe_cases import KINDS, WATCHDOG, Script, call_once, scripts, watched
from tests.helpers import created, refund_json

LOGGER = logging.getLogger("preo_client")
TEXT = logging.Formatter("[%(asctime)s %(levelname)s %(name)s] %(message)s")
JSON = JsonFormatter()


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def collected(level: int = logging.DEBUG) -> Iterator[list[logging.LogRecord]]:
    """Every record of the ``preo_client`` logger while the block runs, at ``level``."""
    handler = Collect()
    before = LOGGER.level
    LOGGER.addHandler(handler)
    LOGGER.setLevel(level)
    try:
        yield handler.records
    finally:
        LOGGER.removeHandler(handler)
        LOGGER.setLevel(before)


def attempt_lines(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.levelno == logging.INFO]


def expected_status(step: tuple[Any, ...]) -> int | None:
    if step[0] in ("ok", "replayed", "bad_body"):
        return 201
    return step[1] if step[0] == "status" else None


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=40, deadline=None)
@given(script=scripts, max_retries=st.integers(0, 3), retry_unknown=st.booleans())
def test_every_attempt_is_one_record_with_its_fields(
    kind: str, script: list[tuple[Any, ...]], max_retries: int, retry_unknown: bool
) -> None:
    answers = Script(script)
    with collected() as records:
        result = call_once(
            kind, answers, max_retries=max_retries, retry_unknown_outcome=retry_unknown
        )
    lines = attempt_lines(records)
    sent = answers.requests
    assert len(lines) == len(sent) >= 1
    for number, (line, request) in enumerate(zip(lines, sent, strict=True), start=1):
        fields = {name: getattr(line, name) for name in FIELDS}  # every field, always
        assert fields["preo.attempt"] == number
        assert fields["preo.max_attempts"] == max_retries + 1
        assert fields["preo.purchase_id"] == "pur_1"
        assert fields["preo.idempotency_key"] == request.headers["idempotency-key"]
        step = script[number - 1] if number <= len(script) else ("ok",)
        assert fields["preo.status_code"] == expected_status(step)
        assert isinstance(fields["preo.elapsed_ms"], float)
        assert fields["preo.elapsed_ms"] >= 0
        message = line.getMessage()
        assert f"attempt={number}/{max_retries + 1}" in message
        if number < len(lines) or not isinstance(result, Refund):
            # a failed attempt names its cause: what it means, the error class, the message
            assert fields["preo.outcome"] in {"not_sent", "refused", "unknown", "final"}
            assert fields["preo.error_type"] is not None
            assert f"failed ({fields['preo.outcome']}): {fields['preo.error_type']}" in message
            assert fields["preo.error"]
            assert fields["preo.idempotency_key"] not in message  # a field, not in the text
        else:
            assert fields["preo.outcome"] == "succeeded"
            assert fields["preo.error_type"] is None
            assert fields["preo.replayed"] is result.replayed
            assert fields["preo.request_id"] == result.request_id
        json.loads(JSON.format(line))  # every record is one JSON object
    last = lines[-1]
    if isinstance(result, Exception):
        # the raised error is the last attempt's (or its outcome-unknown twin)
        assert last.__dict__["preo.error_type"] in [c.__name__ for c in type(result).__mro__]
    # with DEBUG, one decision per failed attempt, carrying the same fields
    decisions = [r for r in records if r.levelno == logging.DEBUG]
    failed = [r for r in lines if r.__dict__["preo.error_type"] is not None]
    assert len(decisions) == len(failed)
    for decision, line in zip(decisions, failed, strict=True):
        assert decision.__dict__["preo.attempt"] == line.__dict__["preo.attempt"]
        assert all(hasattr(decision, name) for name in FIELDS)
    if decisions:
        retried = [d.__dict__["preo.retry_in_s"] is not None for d in decisions]
        assert retried[:-1] == [True] * (len(retried) - 1)
        assert retried[-1] is isinstance(result, Refund)


# "sk_" and 13+ random visible characters: a key no record could hold by chance (Hypothesis
# otherwise finds keys such as "preo.status_code", which every JSON line names).
API_KEYS = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=13, max_size=60
).map(lambda tail: "sk_" + tail)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=40, deadline=None)
@given(api_key=API_KEYS, script=scripts, echo=st.booleans())
def test_the_api_key_is_never_in_a_record(
    kind: str, api_key: str, script: list[tuple[Any, ...]], echo: bool
) -> None:
    """Even when the server or the transport echoes it (request id, body, error text)."""
    answers = Script(script, echo=api_key if echo else "")
    with collected() as records:
        call_once(kind, answers, api_key=api_key, max_retries=2, retry_unknown_outcome=True)
    assert records
    for record in records:
        assert api_key not in TEXT.format(record)
        assert api_key not in JSON.format(record)
        assert api_key not in repr(vars(record))


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=40, deadline=None)
@given(api_key=API_KEYS, script=scripts)
def test_the_api_key_is_never_in_an_error_a_server_echoes_it_into(
    kind: str, api_key: str, script: list[tuple[Any, ...]]
) -> None:
    """Echoed in the request id and JSON-escaped in the body (a key with a backslash or a
    quote is escaped there, so scrubbing the raw bytes alone misses it)."""
    result = call_once(kind, Script(script, echo=api_key), api_key=api_key, max_retries=0)
    if isinstance(result, Exception):
        assert api_key not in str(result)
        assert api_key not in repr(result)
        assert api_key not in repr(getattr(result, "body", None))
        assert api_key not in str(getattr(result, "request_id", None))


# -- PREO_LOG -----------------------------------------------------------------------------------

SETTINGS = [
    ("", None),
    ("   ", None),
    ("info", (logging.INFO, "text")),
    ("INFO", (logging.INFO, "text")),
    (" debug ", (logging.DEBUG, "text")),
    ("json", (logging.INFO, "json")),
    ("debug,json", (logging.DEBUG, "json")),
    ("json, debug", (logging.DEBUG, "json")),
    ("info text", (logging.INFO, "text")),
    ("verbose", ValueError),
    ("1", ValueError),
    ("info,debug", ValueError),
    ("json,text", ValueError),
    ("json,warning", ValueError),
]


@pytest.mark.parametrize(("value", "expected"), SETTINGS)
def test_preo_log_values(value: str, expected: Any) -> None:
    if expected is ValueError:
        with pytest.raises(ValueError, match=re.escape(value)):
            parse_log_setting(value)
    else:
        assert parse_log_setting(value) == expected


WORDS = ["info", "debug", "json", "text", "warn", "trace", "yes", ""]


@given(st.lists(st.sampled_from(WORDS), max_size=4), st.sampled_from([",", " ", ", "]))
def test_preo_log_accepts_exactly_one_level_and_one_format_at_most(
    words: list[str], sep: str
) -> None:
    value = sep.join(words)
    known = [w for w in words if w]
    levels = [w for w in known if w in ("info", "debug")]
    formats = [w for w in known if w in ("json", "text")]
    valid = len(levels) + len(formats) == len(known) and len(levels) <= 1 and len(formats) <= 1
    try:
        parsed = parse_log_setting(value)
    except ValueError:
        assert not valid
        return
    assert valid
    if not known:
        assert parsed is None
    else:
        assert parsed == (
            logging.DEBUG if levels == ["debug"] else logging.INFO,
            formats[0] if formats else "text",
        )


@contextlib.contextmanager
def restored_logger() -> Iterator[None]:
    handlers, level = list(LOGGER.handlers), LOGGER.level
    try:
        yield
    finally:
        LOGGER.handlers[:] = handlers
        LOGGER.setLevel(level)


def test_an_unknown_preo_log_is_a_warning_not_silence() -> None:
    with restored_logger(), collected(logging.WARNING) as records:
        before = list(LOGGER.handlers)
        setup_logging({"PREO_LOG": "verbose"})
        assert LOGGER.handlers == before  # nothing added
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert "PREO_LOG='verbose' not understood" in records[0].getMessage()
    assert records[0].__dict__["preo.setting"] == "PREO_LOG"


def test_preo_log_json_switches_the_one_handler_to_json() -> None:
    with restored_logger():
        setup_logging({"PREO_LOG": "info"})
        setup_logging({"PREO_LOG": "debug,json"})
        ours = [h for h in LOGGER.handlers if getattr(h, "_preo_env_handler", False)]
        assert len(ours) == 1
        assert isinstance(ours[0].formatter, JsonFormatter)
        assert LOGGER.level == logging.DEBUG


PROGRAM = """
import httpx, itertools
from preo_client import Backoff, PreoClient
answers = itertools.chain(
    [httpx.Response(503, headers={"x-request-id": "req_a"})],
    itertools.repeat(None),
)
def handler(request):
    answer = next(answers)
    if answer is None:
        raise httpx.ConnectError("refused")
    return answer
http = httpx.Client(transport=httpx.MockTransport(handler))
client = PreoClient(api_key=KEY, http_client=http, backoff=Backoff(0, 0), max_retries=2)
try:
    client.purchases.refund("pur_9", reason="sold_out", idempotency_key="idem-1")
except Exception as exc:
    print(type(exc).__name__)
"""


def test_preo_log_json_writes_one_json_object_per_record_to_stderr() -> None:
    key = "sk_live_" + "x7Q" * 10
    env = {**os.environ, "PREO_LOG": "json"}
    done = subprocess.run(
        [sys.executable, "-c", f"KEY = {key!r}\n{PROGRAM}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=WATCHDOG,
        check=True,
    )
    assert done.stdout.strip() == "APIConnectionError"
    lines = done.stderr.splitlines()
    assert len(lines) == 3  # one per attempt (INFO)
    records = [json.loads(line) for line in lines]
    assert [r["preo.attempt"] for r in records] == [1, 2, 3]
    assert [r["preo.status_code"] for r in records] == [503, None, None]
    assert [r["preo.outcome"] for r in records] == ["refused", "not_sent", "not_sent"]
    assert [r["preo.error_type"] for r in records] == ["InternalServerError"] + [
        "APIConnectionError"
    ] * 2
    for record in records:
        assert record["level"] == "INFO"
        assert record["logger"] == "preo_client"
        assert record["preo.purchase_id"] == "pur_9"
        assert record["preo.idempotency_key"] == "idem-1"
        assert set(FIELDS) <= set(record)
    assert key not in done.stderr


def test_every_record_the_sdk_emits_carries_preo_fields() -> None:
    """Each kind of record: attempts and decisions, the response-field warning, a bulk run's
    pause, an unknown PREO_LOG."""
    from preo_client.testing import FakePreo, Fault

    fake = FakePreo()
    for i in range(3):
        fake.add_purchase(f"p{i}", price="10.00", deposit="1.00")
    fake.inject(Fault.http_status(429, retry_after="120"))
    with restored_logger(), collected() as records:
        setup_logging({"PREO_LOG": "loud"})
        call_once("sync", _Incomplete())
        call_once("sync", Script([("status", 503), ("ok",)]))
        watched(lambda: bulk(fake))
    kinds = {r.getMessage().split(" ")[0] for r in records}
    assert {"PREO_LOG='loud'", "Refund", "server", "POST", "refund"} <= kinds
    for record in records:
        assert [name for name in vars(record) if name.startswith("preo.")], record.getMessage()
        json.loads(JSON.format(record))
    [pause] = [r for r in records if r.getMessage().startswith("server asked to wait")]
    assert pause.__dict__["preo.pause_s"] == 120
    [fields] = [r for r in records if r.getMessage().startswith("Refund response fields")]
    assert fields.__dict__["preo.invalid_fields"] == {"edition_id": "string (required, missing)"}
    assert fields.__dict__["preo.request_id"] == "req_abc"


def bulk(fake: Any) -> object:
    with fake.client(backoff=Backoff(0, 0)) as client:
        client._sleep = lambda seconds: None
        return client.purchases.refund_many(["p0", "p1", "p2"], reason="sold_out").run()


class _Incomplete(Script):
    """A refund answer without its ``edition_id``: kept, with a WARNING."""

    def __init__(self) -> None:
        super().__init__([])

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        body = refund_json()
        del body["edition_id"]
        return created(body)
