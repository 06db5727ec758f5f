"""Schemathesis against the loopback sandbox: no server error, no answer off the schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from preo_client.testing import FakePreo, serve

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
        "unsupported_method",  # ST204: a 405 for TRACE etc., with an Allow header
        "allow_header_conformance",
    ]
)


def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    """Run from a temporary directory: its cache (.schemathesis/) never lands in the tree."""
    fake = FakePreo.demo()
    st = Path(sys.executable).with_name("st")
    with serve(fake) as server:
        result = subprocess.run(
            [
                str(st),
                "--config-file",
                str(ROOT / "tests" / "schemathesis.toml"),
                "run",
                str(ROOT / "openapi" / "preo.yaml"),
                "--url",
                server.url,
                "--checks",
                CHECKS,
                "--phases",
                "examples,coverage,fuzzing",
                "--seed",
                "20261129",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=tmp_path,
            env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
        )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout or " passed" in result.stdout
    assert len(fake.requests) >= 40  # it really exercised the server
    assert fake.refunds, "some generated requests reached the refund logic"
