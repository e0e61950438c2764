"""The trainer's per-batch loads and writes, each alone: users' loads, serialization, commit.

    .venv/bin/python benchmarks/bench_trainer_loads.py [--events 100000] [--reps 7]

On the state a ``bench_trainer.py`` run leaves (its users' deltas in Redis), time with
``time.process_time`` and keep the least of ``--reps`` repetitions (a shared machine's load
moves the least far less than one end-to-end run):

- loading new users (no record in Redis: the run's own first batches) and stored ones (a new
  owner after a restart) with ``Trainer._load_users``, in batches of the run's ~46 users;
- ``DeltaTable.to_bytes_many`` of every user, 46 at a time (a batch's commit);
- the commits the run made, captured and sent again with no lease held: the script answers
  before writing, so what is timed is the trainer's side of a commit (arguments, packing,
  sending, reading the reply), not Redis running it.

Printed per user and per event of the run (the run has 5,000 users and ~6,000 user-commits
per 100,000 events).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_trainer

from fedlearn.devtools import EmbeddedRedis
from fedlearn.store import LeaseLostError, Store, streams
from fedlearn.trainer.trainer import Trainer, TrainerConfig, _Shard

USERS_PER_BATCH = 46  # what a 1,000-event batch of the benchmark touches on average


def least(work: Callable[[], object], reps: int) -> float:
    """The least CPU seconds of ``reps`` runs of ``work``."""
    spent = []
    for _ in range(reps):
        started = time.process_time()
        work()
        spent.append(time.process_time() - started)
    return min(spent)


def drain_capturing(store: Store, n_events: int) -> list[tuple[int, dict[str, Any]]]:
    """Run ``bench_trainer.drain`` and return the arguments of every commit it made."""
    commits: list[tuple[int, dict[str, Any]]] = []
    commit = streams.Streams.commit_batch

    def capture(self: streams.Streams, shard: int, **kwargs: Any) -> Any:
        commits.append((shard, kwargs))
        return commit(self, shard, **kwargs)

    streams.Streams.commit_batch = capture  # type: ignore[method-assign]
    try:
        bench_trainer.drain(store, n_events)
    finally:
        streams.Streams.commit_batch = commit  # type: ignore[method-assign]
    return commits


def measure(store: Store, n: int, reps: int) -> tuple[dict[str, float], int, int, int]:
    """Seconds of each part (least of ``reps``); users, commits and user-commits of the run."""
    bench_trainer.prefill(store, n)
    commits = drain_capturing(store, n)
    stored = {shard: list(store.deltas.users(shard)) for shard in store.shards}
    n_users = sum(map(len, stored.values()))
    new: dict[int, list[str]] = {}
    for i in range(n_users):
        new.setdefault(store.shard_of(f"new-{i}"), []).append(f"new-{i}")
    trainer = Trainer(store, lambda _base: bench_trainer.CLONE, TrainerConfig())
    base = trainer.bases.current()
    generation = trainer.bases.generation(base)
    shards: dict[int, _Shard] = {}

    def load(users: dict[int, list[str]]) -> Callable[[], None]:
        def run() -> None:
            for shard, names in users.items():
                shards[shard] = trainer.shards[shard] = _Shard()
                for i in range(0, len(names), USERS_PER_BATCH):
                    batch = set(names[i : i + USERS_PER_BATCH])
                    trainer._load_users({shard: batch}, base, generation)

        return run

    def serialize() -> None:
        table = trainer.table
        assert table is not None
        for names in stored.values():
            for i in range(0, len(names), USERS_PER_BATCH):
                table.to_bytes_many(names[i : i + USERS_PER_BATCH])

    def commit() -> None:
        for shard, kwargs in commits:
            with contextlib.suppress(LeaseLostError):
                store.streams.commit_batch(shard, **kwargs)

    spent = {"load new users": least(load(new), reps)}
    spent["load stored users (a restart)"] = least(load(stored), reps)  # fills `shards`
    spent["serialize deltas"] = least(serialize, reps)
    spent["commit (trainer's side)"] = least(commit, reps)
    user_commits = sum(len(kwargs["deltas"]) for _, kwargs in commits)
    return spent, n_users, len(commits), user_commits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    n = args.events
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedRedis(Path(tmp) / "redis") as server,
        Store.from_url(server.url, bench_trainer.N_SHARDS, stream_maxlen=2 * n) as store,
    ):
        store.client.flushall()
        spent, n_users, n_commits, user_commits = measure(store, n, args.reps)
    print(f"{n:,} events, {n_users:,} users, {n_commits} commits; least of {args.reps}:")
    for label, seconds in spent.items():
        # per user loaded or serialized, per user committed; serializing every user once
        # stands for the run's user-commits
        per = user_commits if label.startswith("commit") else n_users
        of_run = seconds * user_commits / n_users if label.startswith("serialize") else seconds
        print(
            f"  {label:<32} {1e6 * seconds / per:6.1f} us per user  "
            f"{1e6 * of_run / n:5.2f} us per event of the run"
        )


if __name__ == "__main__":
    main()
