"""The project's one test command: lint, format, strict typing, bandit, then the test suite.

    python scripts/test.py [extra pytest arguments]

The suite includes the drift gate (regenerating from openapi/ must reproduce
preo_client/_generated/ byte for byte). Every step must pass; pytest's exit code 5
("no tests ran") is a failure here like any other non-zero code.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*command: str) -> None:
    print(f"$ {' '.join(command)}", flush=True)
    code = subprocess.call(command, cwd=ROOT)
    if code != 0:
        print(f"FAILED ({code}): {' '.join(command)}", flush=True)
        raise SystemExit(code)


def main() -> None:
    python = sys.executable
    run(python, "-m", "ruff", "check", ".")
    run(python, "-m", "ruff", "format", "--check", ".")
    run(python, "-m", "mypy")
    run(python, "-m", "bandit", "-q", "-r", "preo_client", "-x", "preo_client/_generated")
    run(python, "-m", "pytest", *sys.argv[1:])


if __name__ == "__main__":
    main()
