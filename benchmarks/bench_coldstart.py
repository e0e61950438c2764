"""The compiled update's cold start: what the first batch after a restart waits for.

    .venv/bin/python benchmarks/bench_coldstart.py

Two fresh Python processes import the kernel and run it once (``kernel.warm_up``), with
``NUMBA_CACHE_DIR`` pointing at an empty temporary folder: the first compiles and writes
numba's on-disk cache, the second loads it. Each prints the seconds from before ``import
fedlearn.model.kernel`` (numba's own import included) to the kernel's first answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

PROBE = (
    "import time; t = time.perf_counter(); from fedlearn.model import kernel; "
    "kernel.warm_up(); print(time.perf_counter() - t)"
)


def measure() -> dict[str, float]:
    """Seconds to a first kernel answer without, then with, numba's disk cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}

        def once() -> float:
            out = subprocess.run([sys.executable, "-c", PROBE], env=env, check=True,
                                 capture_output=True, text=True, timeout=300)  # fmt: skip
            return float(out.stdout.strip().splitlines()[-1])

        return {"without_cache_s": once(), "with_cache_s": once()}


def main() -> None:
    r = measure()
    print(
        f"cold start of the compiled update: {r['without_cache_s']:.2f} s without numba's "
        f"disk cache (compiles), {r['with_cache_s']:.2f} s with it"
    )


if __name__ == "__main__":
    main()
