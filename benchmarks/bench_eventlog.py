"""The durable event log's drain alone: applied-log entries from Redis into the log's files.

    .venv/bin/python benchmarks/bench_eventlog.py [--rounds 5] [--per-drain 1] [--entries DIR]

``bench_trainer.py``'s pre-filled streams (``--events``) are drained once by an in-process
trainer with the event log off, so every committed batch waits in its shard's applied log;
those entries are saved (``DUMP``, and with ``--entries`` into files, reused by later runs, so
two versions of the writer drain the same bytes). Each round puts them back (same ids, same
bytes) ``--per-drain`` batches of each shard at a time, and after each put drains every
shard as ``Trainer.drain_eventlog`` does every second (read, stamp the lines with their
``log_id``, append, fsync, trim) into a new folder: with 1, as a trainer that keeps up finds
them (about one batch a shard between two drains). Printed per round: this process's CPU per
event in the drains (user + system: the fsyncs' kernel work is the writer's too) and Redis's,
and a digest of the files written, which must be the same for any two versions of the writer
(the lines are a file format); then the least and the median. ``--dir /dev/shm`` takes the
disk out.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_trainer

from fedlearn.devtools import EmbeddedRedis
from fedlearn.store import Store, keys
from fedlearn.trainer.eventlog import EventLogWriter


def digest(root: Path) -> str:
    """SHA-256 over every file of the log under ``root``, in path order (names included)."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.jsonl")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def save(folder: Path, saved: dict[int, bytes]) -> None:
    folder.mkdir(parents=True)
    for shard, dump in saved.items():
        (folder / f"{shard}.dump").write_bytes(dump)


def load(folder: Path) -> dict[int, bytes]:
    return {int(path.stem): path.read_bytes() for path in folder.glob("*.dump")}


def entries_of(store: Store, saved: dict[int, bytes]) -> dict[int, list[tuple[bytes, Any]]]:
    """Each shard's saved applied-log entries (ids and fields, as XRANGE gives them)."""
    out = {}
    for shard, dump in saved.items():
        store.client.restore(keys.applied(shard), 0, dump, replace=True)
        out[shard] = store.client.xrange(keys.applied(shard))
        store.client.delete(keys.applied(shard))
    return out


def drain_round(
    store: Store, entries: dict[int, list[tuple[bytes, Any]]], folder: Path, per_drain: int
) -> tuple[float, float]:
    """Drain ``entries`` into ``folder`` as a trainer does every second: ``per_drain``
    entries of each shard put back (same ids, same bytes), then every shard drained until
    nothing is left (``Trainer.drain_eventlog``), and again. Returns the drains' CPU seconds
    (this process's, Redis's)."""
    writer = EventLogWriter(store, folder)
    cpu = redis_cpu = 0.0
    longest = max(map(len, entries.values()))
    for start in range(0, longest, per_drain):
        pipe = store.client.pipeline(transaction=False)
        for shard, shard_entries in entries.items():
            for entry_id, fields in shard_entries[start : start + per_drain]:
                pipe.xadd(keys.applied(shard), fields, id=entry_id)
        pipe.execute()
        redis_before, before = bench_trainer._redis_cpu(store), time.process_time()
        for shard in entries:
            while writer.drain(shard) > 0:
                pass
        cpu += time.process_time() - before
        redis_cpu += bench_trainer._redis_cpu(store) - redis_before
    for shard in entries:
        store.client.delete(keys.applied(shard))
    return cpu, redis_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (a tmpfs?)")
    parser.add_argument(
        "--entries", type=Path, default=None,
        help="a folder for the applied logs' dumps: made on the first run, reused after, so "
        "two versions of the writer drain the same entries (and their digests must match)",
    )  # fmt: skip
    parser.add_argument(
        "--per-drain", type=int, default=1,
        help="applied batches of each shard a drain finds (1: a trainer keeping up, which "
        "commits about one batch a shard between two drains; 1000: all at once)",
    )  # fmt: skip
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedRedis(Path(tmp) / "redis") as server,
        Store.from_url(
            server.url, bench_trainer.N_SHARDS, stream_maxlen=max(100_000, 2 * args.events)
        ) as store,
    ):
        store.client.flushall()
        saved = load(args.entries) if args.entries and args.entries.is_dir() else {}
        if not saved:
            bench_trainer.prefill(store, args.events)
            bench_trainer.drain(store, args.events)
            saved = {s: store.client.dump(keys.applied(s)) for s in store.shards}
            saved = {s: dump for s, dump in saved.items() if dump is not None}
            if args.entries:
                save(args.entries, saved)
        entries = entries_of(store, saved)
        n = sum(
            len(fields[b"e"].split(b"\n")) - 1 for es in entries.values() for _, fields in es
        )  # a header line, then one line per event
        print(
            f"{n:,} events in {sum(map(len, entries.values()))} applied batches of "
            f"{len(entries)} shards, {args.per_drain} per shard a drain; us of CPU per event:"
        )
        cpus = []
        for r in range(args.rounds):
            with tempfile.TemporaryDirectory(dir=args.dir) as out:
                cpu, redis_cpu = drain_round(store, entries, Path(out), args.per_drain)
                print(
                    f"  round {r + 1}: writer {1e6 * cpu / n:.2f}, Redis "
                    f"{1e6 * redis_cpu / n:.2f}; files {digest(Path(out))}"
                )
            cpus.append(cpu)
        cpus.sort()
        print(
            f"  writer, least {1e6 * cpus[0] / n:.2f}, median {1e6 * cpus[len(cpus) // 2] / n:.2f}"
        )


if __name__ == "__main__":
    main()
