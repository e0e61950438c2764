"""What exploration costs a rank call: ``rank_with_policy`` (the function ``serving/clones.rank``
calls) and ``explored`` (its metric), per ranking, by policy and size.

    python benchmarks/bench_policy.py [--repeat 30]

On one core (BLAS threads pinned to 1), for click probabilities of n candidates and k slots,
the median time of one ranking under each policy over ``--repeat`` rankings (one warm-up
first). Greedy is the sort served before exploration existed: the other rows are its price.
"""

from __future__ import annotations

import os

# One core: set before numpy is imported anywhere.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402

from fedlearn.model.policy import Policy, explored, rank_with_policy  # noqa: E402

SIZES = ((100, 10), (1000, 10), (1000, 1000))
POLICIES = (
    Policy.greedy(),
    Policy("epsilon", epsilon=0.1),
    Policy("softmax", temperature=0.1),
)


def median_ms(run: Callable[[], object], repeat: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def row(scores: np.ndarray, k: int, policy: Policy, repeat: int) -> str:
    """One table row: a ranking of ``scores`` into ``k`` slots under ``policy``."""
    rng = np.random.default_rng(1)
    order, _ = rank_with_policy(scores, k, policy, rng)
    rank_ms = median_ms(lambda: rank_with_policy(scores, k, policy, rng), repeat)
    explored_ms = median_ms(lambda: explored(scores, order), repeat)
    label = " ".join(str(value) for value in policy.as_dict().values())
    return f"| {scores.size} | {k} | {label} | {rank_ms:.3f} | {explored_ms:.3f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| candidates | slots | policy | rank_with_policy, ms | explored, ms |")
    print("|---|---|---|---|---|")
    for n, k in SIZES:
        scores = rng.random(n)
        for policy in POLICIES:
            print(row(scores, k, policy, args.repeat))


if __name__ == "__main__":
    main()
