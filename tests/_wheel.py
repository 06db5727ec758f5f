"""The built sdist and wheel (the wheel built from the sdist, as ``python -m build`` does), the
wheel installed alone in a fresh venv (its dependencies from this environment)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class WheelEnv:
    """A venv holding only the wheel; ``environ()`` lends it this environment's dependencies
    through ``PYTHONPATH``, which does not see the editable install."""

    root: Path
    wheel: Path
    python: Path
    sdist: Path

    def environ(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREO_")}
        return {**env, "PYTHONPATH": sysconfig.get_paths()["purelib"], **extra}


def build_wheel_env(root: Path) -> WheelEnv:
    dist = root / "dist"
    # No --wheel / --sdist: build makes the sdist, then the wheel from the unpacked sdist, so
    # the wheel under test also proves the sdist holds everything needed to build it.
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("preo_client-*.whl")
    (sdist,) = dist.glob("preo_client-*.tar.gz")
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    return WheelEnv(root=root, wheel=wheel, python=python, sdist=sdist)
