"""Idempotency keys are made without the ``uuid`` module (it loads ``platform`` on import), and
are exactly what it would make: a fresh key is an RFC 9562 version-4 UUID, and
``idempotency_key_for`` is ``uuid5`` of the fixed namespace — the same key in every process and
every release, or a restarted process would send a refund under a new key."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from preo_client import RefundValidationError, idempotency_key_for
from preo_client._idempotency import _uuid_text, new_idempotency_key

NAMESPACE = uuid.UUID("6f1c2f64-3f5e-4b8e-9a57-5d1f0c0de001")
# Valid text: uuid5 (like the SDK) encodes the name as UTF-8, so no lone surrogates.
TEXT = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=40)


@given(raw=st.binary(min_size=16, max_size=16), version=st.sampled_from([1, 3, 4, 5]))
def test_uuid_text_is_the_stdlib_text(raw: bytes, version: int) -> None:
    assert _uuid_text(raw, version) == str(uuid.UUID(bytes=raw, version=version))


@given(purchase_id=TEXT, reference=TEXT)
def test_derived_keys_are_uuid5_of_the_namespace(purchase_id: str, reference: str) -> None:
    expected = uuid.uuid5(NAMESPACE, purchase_id + "\0" + reference)
    assert idempotency_key_for(purchase_id, reference) == f"preo-{expected}"


def test_derived_keys_of_earlier_releases_are_kept() -> None:
    """The key 0.1.0 derived with ``uuid.uuid5`` (printed by that release)."""
    assert idempotency_key_for("pur_1", "ticket-99") == "preo-10f0c5a8-d96b-5656-b613-664d19d053ec"


def test_fresh_keys_are_distinct_version_4_uuids() -> None:
    keys = [new_idempotency_key() for _ in range(2000)]
    assert len(set(keys)) == len(keys)
    for key in keys:
        parsed = uuid.UUID(key)
        assert str(parsed) == key
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


# Any text, lone surrogates included (as read with errors="surrogateescape").
ANY_TEXT = st.text(st.characters(codec=None, categories=None), max_size=12) | st.builds(
    lambda before, after: before + chr(0xDC80 + len(before) % 128) + after,
    st.text(max_size=4),
    st.text(max_size=4),
)


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@given(purchase_id=ANY_TEXT, reference=ANY_TEXT)
def test_derived_keys_of_any_text_are_uuid5_or_a_field_error(
    purchase_id: str, reference: str
) -> None:
    """Review round 4 (r3): a lone surrogate made ``idempotency_key_for`` raise a bare
    UnicodeEncodeError. Any text gives the uuid5 key, or a RefundValidationError naming the
    argument that cannot be sent (the purchase id first)."""
    bad = [
        name
        for name, text in (("purchase_id", purchase_id), ("reference", reference))
        if not _encodes(text) or (name == "reference" and not text)
    ]
    if not bad:
        expected = uuid.uuid5(NAMESPACE, purchase_id + "\0" + reference)
        assert idempotency_key_for(purchase_id, reference) == f"preo-{expected}"
        return
    with pytest.raises(RefundValidationError) as caught:
        idempotency_key_for(purchase_id, reference)
    if not reference:
        assert caught.value.field == "reference"
    else:
        assert caught.value.field == bad[0]


@pytest.mark.parametrize(
    ("purchase_id", "reference", "field"),
    [("pur_1", "ticket-\udcff", "reference"), ("pur_\ud800", "ticket-1", "purchase_id"),
     ("pur_\ud800", "\udcff", "purchase_id"), (1, "ticket-1", "purchase_id"),
     ("pur_1", b"ticket-1", "reference"), ("pur_1", "", "reference")],
)  # fmt: skip
def test_the_reviewed_arguments_are_field_errors(
    purchase_id: object, reference: object, field: str
) -> None:
    with pytest.raises(RefundValidationError) as caught:
        idempotency_key_for(purchase_id, reference)  # type: ignore[arg-type]
    assert caught.value.field == field
