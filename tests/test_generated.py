"""The drift gate: generated code must be exactly what openapi/ and the config produce."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from preo_client._generated.api.purchases import create_purchase_refund

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import regenerate  # noqa: E402


def test_generated_tree_matches_a_fresh_regeneration(tmp_path: Path) -> None:
    fresh = tmp_path / "_generated"
    regenerate.generate(fresh)
    changed = regenerate.diff_trees(fresh, regenerate.TARGET)
    assert changed == [], (
        f"generated code drifted from openapi/ in {changed}: run `python scripts/regenerate.py`"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(fresh)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_drift_gate_catches_an_edited_description(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tmp_path / "preo.yaml"
    text = regenerate.SPEC.read_text(encoding="utf-8")
    edited = text.replace("A unique value identifying this purchase.", "Edited by hand.")
    assert edited != text
    spec.write_text(edited, encoding="utf-8")
    monkeypatch.setattr(regenerate, "SPEC", spec)
    fresh = tmp_path / "_generated"
    regenerate.generate(fresh)
    assert regenerate.diff_trees(fresh, regenerate.TARGET) == ["_source.py"]


def test_every_generated_file_is_marked() -> None:
    files = sorted(regenerate.TARGET.rglob("*.py"))
    assert files
    for path in files:
        assert path.read_text(encoding="utf-8").startswith(regenerate.HEADER), path


def test_sync_and_async_endpoint_functions_exist() -> None:
    for name in ("sync", "sync_detailed"):
        assert not inspect.iscoroutinefunction(getattr(create_purchase_refund, name))
    for name in ("asyncio", "asyncio_detailed"):
        assert inspect.iscoroutinefunction(getattr(create_purchase_refund, name))
    params = inspect.signature(create_purchase_refund.sync_detailed).parameters
    assert list(params) == ["id", "client", "body", "idempotency_key"]
