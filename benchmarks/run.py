"""The one benchmark command: prints the tables (overhead, import time, bulk throughput, bulk
memory, pacing against a rate-limited or slow sandbox, logging/tracing cost, where a call's
time goes). Ratios are against raw httpx
measured in the same run; absolute numbers on a shared 2-core machine mean little.

    python -m benchmarks.run            # everything (about ten minutes)
    python -m benchmarks.run overhead imports   # some of them
"""

from __future__ import annotations

import platform
import sys
import time

from benchmarks import bulk, imports, memory, observe, overhead, pacing, profile

SUITES = {
    "overhead": overhead.run,
    "imports": imports.run,
    "bulk": bulk.run,
    "memory": memory.run,
    "pacing": pacing.run,
    "observe": observe.run,
    "profile": profile.run,
}


def main(names: list[str]) -> None:
    chosen = names or list(SUITES)
    print(
        f"# preo-client benchmarks, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    for name in chosen:
        start = time.perf_counter()
        print()
        print(SUITES[name]())
        print(f"({name}: {time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
