"""With ``--json`` every failure is one JSON error document, also a usage error click finds
while parsing (an unknown ``--reason``, ``--concurrency 0``): scripts never parse prose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from preo_client._cli import cli
from preo_client._error_document import ERROR_FIELDS
from preo_client._policy import REASONS


def _document(args: list[str]) -> tuple[int, dict[str, object]]:
    result = CliRunner().invoke(cli, args, env={"PREO_API_KEY": "", "PREO_BASE_URL": ""})
    lines = [line for line in result.output.splitlines() if line.startswith("{")]
    assert len(lines) == 1, result.output
    return result.exit_code, json.loads(lines[0])["error"]


@pytest.mark.parametrize(
    ("args", "field", "type_"),
    [
        (["refund", "pur_1", "--reason", "sold-out", "--json", "--sandbox"], "reason",
         "RefundValidationError"),
        (["refund", "pur_1", "--reason", "other", "--scope", "all", "--json", "--sandbox"],
         "scope", "RefundValidationError"),
        (["refund-bulk", "{csv}", "--reason", "soldout", "--json", "--sandbox"], "reason",
         "RefundValidationError"),
        (["refund-bulk", "{csv}", "--reason", "sold_out", "--concurrency", "0", "--json",
          "--sandbox"], "concurrency", "UsageError"),
        (["refund", "pur_1", "--json", "--sandbox", "--no-such-flag"], None, "UsageError"),
    ],
)  # fmt: skip
def test_a_parse_time_usage_error_is_one_json_document(
    tmp_path: Path, args: list[str], field: str | None, type_: str
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("purchase_id\npur_1\n")
    code, document = _document([a.replace("{csv}", str(source)) for a in args])
    assert code == 2
    assert set(document) == set(ERROR_FIELDS)
    assert document["type"] == type_
    assert document["exit_code"] == 2
    assert document["outcome_unknown"] is False
    if field is not None:
        assert field in document["field_errors"]  # type: ignore[operator]
    if field == "reason":  # the allowed values are named
        assert all(reason in str(document["message"]) for reason in REASONS[:3]), document


def test_without_json_a_usage_error_stays_clicks_text() -> None:
    result = CliRunner().invoke(cli, ["refund", "pur_1", "--reason", "sold-out", "--sandbox"])
    assert result.exit_code == 2
    assert "Usage: " in result.output
    assert not result.output.lstrip().startswith("{")
