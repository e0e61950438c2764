"""Exploration and off-policy evaluation, on the closed-loop simulator.

    python benchmarks/bench_ope.py [--seeds 10] [--steps 20] [--long-seeds 4] [--long-steps 400]
                                   [--plot benchmarks/results/exploration.html] [--json]

Everything runs the service's code: the rank route's scoring (a user's clone), the policies
of ``fedlearn.model.policy``, the trainer's learning step and the one fold, one round per
simulated step (``fedlearn.evaluate.closedloop``).

1. Off-policy evaluation. Per seed, a world (``fedlearn.data.simulator``) and a base trained
   on ``--warmup`` uniformly shown impressions; the logging policy (softmax, temperature
   0.1) runs ``--steps`` steps and its decisions are logged with their propensities. On that
   log, the SNIPS and DR estimates (95 % intervals clustered by user) of the top-slot click
   rate of greedy and of epsilon-greedy (0.05) are set against their true value on the same
   decisions (the world knows every candidate's click probability, so
   ``sum_a pi(a) p(a)`` is exact); ``deployed`` is each target's own closed-loop click rate
   (its model learning from what it showed), printed beside it but not the estimand.
2. Exploration on a long horizon. Per seed, greedy and modest exploration (``--explore``,
   default epsilon 0.03 and softmax 0.02) run ``--long-steps`` steps while new items arrive
   and tastes drift; printed: cumulative expected click rates, and each explorer's crossing
   step (the first step from which its cumulative rate stays above greedy's); plotted: the
   cumulative curves, mean over seeds.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from fedlearn.cli.ope import parse_policy  # noqa: E402
from fedlearn.data.simulator import World, WorldConfig  # noqa: E402
from fedlearn.evaluate.candidate import CandidateModel, service_settings  # noqa: E402
from fedlearn.evaluate.closedloop import run_policy, warmup_samples  # noqa: E402
from fedlearn.evaluate.offpolicy import evaluate_policies, policy_name  # noqa: E402
from fedlearn.evaluate.plot import progressive_auc_html  # noqa: E402
from fedlearn.model import Base, TrainConfig, train_base  # noqa: E402
from fedlearn.model.policy import Policy  # noqa: E402

LOGGING = Policy("softmax", temperature=0.1)
TARGETS = (Policy.greedy(), Policy("epsilon", epsilon=0.05))
ESTIMATORS = ("snips", "dr")


def _world_and_base(config: WorldConfig, warmup: int) -> tuple[World, Base]:
    world = World(config)
    samples = warmup_samples(world, warmup, seed=config.seed)
    return world, train_base(samples, TrainConfig(seed=config.seed)).base


def _model(base: Base) -> CandidateModel:
    return CandidateModel(base, service_settings(base))


def ope_seed(config: WorldConfig, warmup: int) -> list[dict[str, Any]]:
    """One seed of part 1: a row per target policy."""
    world, base = _world_and_base(config, warmup)
    log = run_policy(world, _model(base), LOGGING, seed=config.seed, record=True)
    values = evaluate_policies(log.decisions, _model(base), TARGETS, block=config.sessions_per_step)
    rows = []
    for value in values:
        deployed = run_policy(world, _model(base), value.policy, seed=config.seed)
        rows.append({
            "seed": config.seed, "policy": policy_name(value.policy), "truth": value.truth,
            "logged_rate": log.click_rate(), "deployed": float(deployed.expected.mean())
            / config.sessions_per_step, "decisions": len(log.decisions),
            **{name: value.estimates[name].to_dict() for name in ESTIMATORS},
        })  # fmt: skip
    return rows


def crossing(explore: np.ndarray, greedy: np.ndarray) -> int | None:
    """The first step from which ``explore`` stays above ``greedy`` (None: it never does)."""
    below = np.flatnonzero(explore <= greedy)
    if len(below) == 0:
        return 0
    return None if below[-1] == len(explore) - 1 else int(below[-1]) + 1


def long_seed(config: WorldConfig, warmup: int, explore: list[Policy]) -> dict[str, Any]:
    """One seed of part 2: the cumulative curves, and where each explorer crosses greedy."""
    world, base = _world_and_base(config, warmup)
    curves = {
        policy_name(p): run_policy(world, _model(base), p, seed=config.seed).cumulative_rate()
        for p in (Policy.greedy(), *explore)
    }
    greedy = curves.pop("greedy")
    return {
        "seed": config.seed,
        "curves": {"greedy": greedy.tolist(), **{k: v.tolist() for k, v in curves.items()}},
        "crossing": {k: crossing(v, greedy) for k, v in curves.items()},
    }


def _interval(e: dict[str, Any]) -> str:
    return f"{e['value']:.4f} [{e['low']:.4f}, {e['high']:.4f}]"


def print_ope(rows: list[dict[str, Any]]) -> None:
    print(f"{'seed':>4} {'policy':<13} {'truth':>7} {'SNIPS [95 % CI]':>26} {'ok':>3} "
          f"{'DR [95 % CI]':>26} {'ok':>3} {'ESS':>6} {'deployed':>9} {'logged':>7}")  # fmt: skip
    for r in rows:
        ok = {n: "yes" if r[n]["low"] <= r["truth"] <= r[n]["high"] else "NO" for n in ESTIMATORS}
        print(f"{r['seed']:>4} {r['policy']:<13} {r['truth']:7.4f} {_interval(r['snips']):>26} "
              f"{ok['snips']:>3} {_interval(r['dr']):>26} {ok['dr']:>3} {r['snips']['ess']:6.0f} "
              f"{r['deployed']:9.4f} {r['logged_rate']:7.4f}")  # fmt: skip
    seeds = len({r["seed"] for r in rows})
    for policy in dict.fromkeys(r["policy"] for r in rows):
        for name in ESTIMATORS:
            mine = [r for r in rows if r["policy"] == policy]
            covered = sum(r[name]["low"] <= r["truth"] <= r[name]["high"] for r in mine)
            print(
                f"  {policy} {name.upper()}: truth inside the 95 % interval in "
                f"{covered} of {seeds} seeds"
            )


def print_long(runs: list[dict[str, Any]], every: int) -> None:
    names = list(runs[0]["curves"])
    steps = len(runs[0]["curves"][names[0]])
    marks = sorted({*range(every - 1, steps, every), steps - 1})
    print(f"cumulative expected click rate by step, mean over {len(runs)} seed(s):")
    print(f"{'step':>6} " + " ".join(f"{n:>13}" for n in names))
    mean = {n: np.mean([r["curves"][n] for r in runs], axis=0) for n in names}
    for t in marks:
        print(f"{t + 1:>6} " + " ".join(f"{mean[n][t]:13.4f}" for n in names))
    for r in runs:
        final = {n: r["curves"][n][-1] for n in names}
        print(f"  seed {r['seed']}: final " + ", ".join(f"{n} {v:.4f}" for n, v in final.items())
              + f"; crossing step: {r['crossing']}")  # fmt: skip
    both = {n: crossing(mean[n], mean["greedy"]) for n in names if n != "greedy"}
    print(f"  mean curves: crossing step {both}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=20_000)
    parser.add_argument("--long-seeds", type=int, default=4)
    parser.add_argument("--long-steps", type=int, default=400)
    parser.add_argument("--explore", action="append", help="part 2's exploring policies "
                        "(repeatable; default epsilon:0.03 and softmax:0.02)")  # fmt: skip
    parser.add_argument("--plot", type=Path, default=Path("benchmarks/results/exploration.html"))
    parser.add_argument("--seeds-from", type=int, default=1, help="the first seed")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()
    world = WorldConfig()  # the simulator's defaults: the world both parts run in
    if args.seeds:
        part_one(args, world)
    if args.long_seeds:
        part_two(args, world)


def part_one(args: argparse.Namespace, world: WorldConfig) -> None:
    began = time.perf_counter()
    rows = [
        row
        for seed in range(args.seeds_from, args.seeds_from + args.seeds)
        for row in ope_seed(replace(world, steps=args.steps, seed=seed), args.warmup)
    ]
    print(f"1. off-policy evaluation: log under {policy_name(LOGGING)}, {args.steps} steps x "
          f"{world.sessions_per_step} sessions ({time.perf_counter() - began:.0f} s)")  # fmt: skip
    print_ope(rows)
    if args.json:
        print(orjson.dumps({"ope": rows}).decode())


def part_two(args: argparse.Namespace, world: WorldConfig) -> None:
    began = time.perf_counter()
    explore = [parse_policy(p) for p in args.explore or ("epsilon:0.03", "softmax:0.02")]
    runs = [
        long_seed(replace(world, steps=args.long_steps, seed=seed), args.warmup, explore)
        for seed in range(args.seeds_from, args.seeds_from + args.long_seeds)
    ]
    print(f"\n2. exploration on a long horizon: {args.long_steps} steps x "
          f"{world.sessions_per_step} sessions, {world.new_items_per_step} new items a step "
          f"({time.perf_counter() - began:.0f} s)")  # fmt: skip
    print_long(runs, max(1, args.long_steps // 10))
    if args.plot:
        names = list(runs[0]["curves"])
        mean = {n: np.mean([r["curves"][n] for r in runs], axis=0) for n in names}
        curves = {n: [(t + 1, float(v)) for t, v in enumerate(mean[n])] for n in names}
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        args.plot.write_text(progressive_auc_html(
            curves, title="Cumulative click rate, greedy vs exploring (simulator)",
            caption=f"Mean over {len(runs)} seeds; crossing steps "
                    f"{ {n: crossing(mean[n], mean['greedy']) for n in names[1:]} }. "
                    "benchmarks/bench_ope.py",
            x_label="simulated step (one round each)", y_label="cumulative click rate",
        ))  # fmt: skip
        print(f"plot: {args.plot}")
    if args.json:
        print(orjson.dumps({"long": runs}).decode())


if __name__ == "__main__":
    main()
