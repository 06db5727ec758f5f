"""The wheel: builds, carries the typed package, the generated code and the plugin, installs
into a clean venv and imports there."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

from tests._wheel import WheelEnv

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_builds_installs_and_imports(wheel_env: WheelEnv, tmp_path: Path) -> None:
    wheel = wheel_env.wheel
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
    python = wheel_env.python
    env_dir = python.parent.parent
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
        env=wheel_env.environ(),
        cwd=tmp_path,
    )
    where, scope = result.stdout.split()
    assert Path(where).is_relative_to(env_dir)
    assert scope == "purchase_full"
