"""Strict bulk input: a column or key given twice is refused, naming the line and the name.

csv.DictReader and json.loads both keep the *last* of two equal names silently: a sheet with
two ``amount`` columns (the price paid pasted beside the refund) would refund the wrong number.
Round-3 reproduction: ``csv_duplicate_column_silently_wins.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from preo_client import RefundItem
from preo_client._bulk_input import ITEM_FIELDS, InputError, read_rows
from preo_client._cli import cli
from preo_client.testing import DEMO_API_KEY, FakePreo, serve


def _csv(text: str) -> list[bytes]:
    return [line.encode() for line in text.splitlines(keepends=True)]


# A name written again the way a spreadsheet might: same, other case, padded with spaces.
_VARIANTS = st.sampled_from(
    [str, str.upper, str.title, lambda n: f" {n}", lambda n: f"{n} ", lambda n: f" {n.upper()} "]
)


@settings(max_examples=200, deadline=None)
@given(
    columns=st.lists(st.sampled_from(ITEM_FIELDS), min_size=1, max_size=6, unique=True),
    twice=st.data(),
    variant=_VARIANTS,
    blank_lines=st.integers(0, 3),
)
def test_a_csv_column_named_twice_is_refused_naming_line_and_column(
    columns: list[str], twice: st.DataObject, variant: object, blank_lines: int
) -> None:
    header = ["purchase_id", *[c for c in columns if c != "purchase_id"]]
    repeated = twice.draw(st.sampled_from(header))
    spelled = variant(repeated)  # type: ignore[operator]
    position = twice.draw(st.integers(0, len(header)))
    names = [*header[:position], spelled, *header[position:]]
    row = ",".join("pur_1" if n.strip().casefold() == "purchase_id" else "" for n in names)
    text = "\n" * blank_lines + ",".join(names) + "\n" + row + "\n"
    with pytest.raises(InputError) as caught:
        list(read_rows(_csv(text)))
    assert caught.value.line == blank_lines + 1
    message = str(caught.value)
    assert "twice" in message
    assert repr(spelled) in message
    assert message.startswith(f"line {blank_lines + 1}: ")


def test_distinct_columns_still_read() -> None:
    rows = list(read_rows(_csv("purchase_id,amount,comment\npur_1,5.00,Late bar\n")))
    assert [r.item for r in rows] == [RefundItem("pur_1", amount="5.00", comment="Late bar")]


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(ITEM_FIELDS),
    first=st.sampled_from(["5.00", "pur_1", "compensation"]),
    second=st.sampled_from(["500.00", "pur_2", "sold_out"]),
    nested=st.booleans(),
)
def test_a_json_key_given_twice_is_an_invalid_row_naming_line_and_key(
    key: str, first: str, second: str, nested: bool
) -> None:
    pairs = [("purchase_id", "pur_1")] if key != "purchase_id" else []
    body = ", ".join(f'"{k}": "{v}"' for k, v in [*pairs, (key, first), (key, second)])
    if nested:  # the same rule at any depth: a nested object is refused too (as unknown)
        body = f'"purchase_id": "pur_1", "extra": {{"{key}": 1, "{key}": 2}}'
    lines = [b'{"purchase_id": "pur_0"}\n', ("{" + body + "}\n").encode()]
    rows = list(read_rows(lines))
    assert isinstance(rows[0].item, RefundItem)
    assert rows[1].line == 2
    problem = getattr(rows[1].item, "problem", "")
    assert f"{key!r} appears twice" in problem
    assert not isinstance(rows[1].item, RefundItem)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("comp.csv", "purchase_id,amount,comment,amount\npur_1,5.00,Late,500.00\n", "'amount'"),
        ("comp.csv", "purchase_id,Amount ,comment,amount\npur_1,5.00,Late,500.00\n", "'amount'"),
        (
            "comp.jsonl",
            '{"purchase_id": "pur_1", "amount": "5.00", "amount": "500.00"}\n',
            "'amount' appears twice",
        ),
    ],
)
@pytest.mark.parametrize("dry_run", [False, True])
def test_the_cli_refunds_nothing_for_a_name_given_twice(
    tmp_path: Path, name: str, content: str, expected: str, dry_run: bool
) -> None:
    fake = FakePreo()
    fake.add_purchase("pur_1", price="500.00")
    source = tmp_path / name
    source.write_text(content)
    args = ["refund-bulk", str(source), "--reason", "compensation", "--json"]
    with serve(fake) as server:
        result = CliRunner().invoke(
            cli,
            [*args, "--dry-run"] if dry_run else args,
            env={"PREO_API_KEY": DEMO_API_KEY, "PREO_BASE_URL": server.url},
        )
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "line 1" in result.output
    assert "nothing was sent" in " ".join(result.output.split())
    assert fake.requests == []
    assert fake.refunds == []
    if not dry_run:
        assert json.loads(result.output)  # --json: one machine-readable error document


@settings(max_examples=100, deadline=None)
@given(
    pad=st.sampled_from([" ", "\t", "\u00a0", "\u2003", "\n", "\x00"]),
    where=st.sampled_from(["before", "after", "inside"]),
)
def test_a_transaction_id_with_hidden_whitespace_is_refused(pad: str, where: str) -> None:
    """Adversary round 3 (P4): ``" tx1"`` beside ``"tx1"`` was another transaction, so one
    transaction got two ``transaction_custom`` refunds. Such an id is refused, nothing sent."""
    spelled = {"before": pad + "tx1", "after": "tx1" + pad, "inside": "tx" + pad + "1"}[where]
    fake = FakePreo()
    fake.add_purchase("pur_1", price="20.00", transaction_id="tx1")
    fake.add_purchase("pur_2", price="20.00", transaction_id="tx1")
    items = [
        RefundItem("pur_1", scope="transaction_custom", amount="5.00", transaction_id="tx1"),
        RefundItem("pur_2", scope="transaction_custom", amount="5.00", transaction_id=spelled),
    ]
    with fake.client() as client:
        outcomes = list(client.purchases.refund_many(items, reason="compensation"))
    refused = [o for o in outcomes if o.item.purchase_id == "pur_2"]
    assert len(refused) == 1
    assert not refused[0].ok
    assert "transaction_id" in str(refused[0].error)
    assert [r.purchase_id for r in fake.refunds] == ["pur_1"]  # one refund of the transaction
    assert all(r.url.path.endswith("pur_1/refund") for r in fake.requests)
