"""Import time: `import preo_client` vs `import httpx`, each in fresh interpreters, interleaved."""

from __future__ import annotations

import subprocess
import sys

from benchmarks._common import summary, table

CODE = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def _once(module: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CODE.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout) * 1000


def run(runs: int = 25) -> str:
    modules = ["httpx", "preo_client", "preo_client.testing", "preo_client._cli"]
    times: dict[str, list[float]] = {m: [] for m in modules}
    for m in modules:
        _once(m)  # warm the file cache
    for _ in range(runs):
        for m in modules:
            times[m].append(_once(m))
    base = summary(times["httpx"])[0]
    rows = []
    for m in modules:
        med, lo, hi = summary(times[m])
        rows.append([f"import {m}", f"{med:.1f}", f"{lo:.1f}", f"{hi:.1f}", f"{med - base:+.1f}"])
    title = f"Import time, fresh interpreter ({runs} runs each, interleaved; ms)"
    return table(title, ["statement", "median ms", "min", "max", "vs httpx ms"], rows)


if __name__ == "__main__":
    print(run())
