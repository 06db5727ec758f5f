"""The wheel: builds, carries the typed package, the generated code and the plugin, installs
into a clean venv and imports there."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_builds_installs_and_imports(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("preo_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(n for n in names if n.endswith("METADATA"))
        meta = archive.read(metadata).decode()
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt")))
    for expected in (
        "preo_client/py.typed",
        "preo_client/_generated/api/purchases/create_purchase_refund.py",
        "preo_client/testing/_plugin.py",
    ):
        assert expected in names
    assert not any(n.startswith("tests/") for n in names)
    assert "Requires-Python: >=3.10" in meta
    runtime = sorted(
        line.split(" ", 1)[1].split(";")[0]
        for line in meta.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    )
    assert runtime == ["attrs>=23.1", "httpx<1,>=0.27", "python-dateutil>=2.8"]
    assert b"preo_client = preo_client.testing._plugin" in entry_points

    # A clean venv: the wheel alone (no network); its dependencies come from this
    # environment's site-packages through PYTHONPATH, which does not see our editable install.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    site = sysconfig.get_paths()["purelib"]
    code = (
        "import preo_client, pathlib; from preo_client import PreoClient, plan_refund;"
        "print(pathlib.Path(preo_client.__file__).parent);"
        "print(plan_refund('sold_out').scope)"
    )
    result = subprocess.run(
        [str(python), "-c", code],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": site},
        cwd=tmp_path,
    )
    where, scope = result.stdout.split()
    assert Path(where).is_relative_to(env_dir)
    assert scope == "purchase_full"
