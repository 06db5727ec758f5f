"""Import time: `import preo_client` vs `import httpx`, each in fresh interpreters, interleaved.

Measured where the target is set, on a **wheel install**: the wheel of this working tree is
built into a temporary directory and installed into a fresh venv (no system site-packages) with
its runtime dependencies only, at the versions this environment has (``pip freeze`` as
constraints; built with the dev group's hatchling, no build isolation; the dependencies come
from pip's cache or index as any install's do). ``preo_client._cli`` needs the ``cli`` extra,
whose click and rich ``import httpx`` also loads when they are installed (``httpx._main``): it
is measured in a second round after the extra is installed into the same venv, against
``import httpx`` measured again there. The wheel's interpreters run isolated (``-I``): neither
the working tree nor ``PYTHON*`` variables reach them. The editable install of this
environment is measured last, as before (its httpx loads click and rich too; where
``PYTHONDONTWRITEBYTECODE`` is set, as on this project's machine, its modules are compiled
again in every interpreter, unlike an installed wheel's). Each ``vs httpx ms`` compares with
``import httpx`` of the same install and round.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import venv
from collections.abc import Sequence
from pathlib import Path

from benchmarks._common import summary, table

ROOT = Path(__file__).resolve().parent.parent
CODE = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def _once(python: Sequence[str], module: str) -> float:
    out = subprocess.run(
        [*python, "-c", CODE.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout) * 1000


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-qq", *args], check=True)


def wheel_venv(tmp: Path) -> tuple[str, Path, Path]:
    """Build the wheel of the working tree, and a venv holding it and its runtime dependencies
    (at this environment's versions). Returns the venv's python, the wheel and the constraints."""
    dist = tmp / "dist"
    _pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(dist), str(ROOT))
    (wheel,) = dist.glob("preo_client-*.whl")
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    constraints = tmp / "constraints.txt"
    pins = [line for line in frozen.splitlines() if "==" in line and "preo" not in line.lower()]
    constraints.write_text("\n".join(pins) + "\n")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False, system_site_packages=False)
    python = str(env_dir / "bin" / "python")
    _pip("--python", python, "install", "--constraint", str(constraints), str(wheel))
    return python, wheel, constraints


def _measure(
    install: str, python: Sequence[str], modules: Sequence[str], runs: int
) -> list[list[str]]:
    times: dict[str, list[float]] = {m: [] for m in ["httpx", *modules]}
    for m in times:
        _once(python, m)  # warm the file cache (and write the .pyc files)
    for _ in range(runs):
        for m in times:
            times[m].append(_once(python, m))
    base = summary(times["httpx"])[0]
    rows = []
    for m, values in times.items():
        med, lo, hi = summary(values)
        rows.append([f"import {m}", install, f"{med:.1f}", f"{lo:.1f}", f"{hi:.1f}",
                     f"{med - base:+.1f}"])  # fmt: skip
    return rows


def run(runs: int = 25, editable: bool = True) -> str:
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="preo-imports-") as tmp:
        python, wheel, constraints = wheel_venv(Path(tmp))
        isolated = [python, "-I"]  # the venv alone: not the working tree (cwd), no PYTHON* env
        rows += _measure("wheel", isolated, ["preo_client", "preo_client.testing"], runs)
        _pip("--python", python, "install", "--constraint", str(constraints), f"{wheel}[cli]")
        rows += _measure("wheel + [cli]", isolated, ["preo_client._cli"], runs)
    if editable:
        modules = ["preo_client", "preo_client.testing", "preo_client._cli"]
        rows += _measure("editable (dev)", [sys.executable], modules, runs)
    title = f"Import time, fresh interpreter ({runs} runs each, interleaved per install; ms)"
    header = ["statement", "install", "median ms", "min", "max", "vs httpx ms"]
    return table(title, header, rows)


if __name__ == "__main__":
    print(run())
