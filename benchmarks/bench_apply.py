"""apply_batch and the applied log's encoding alone, on the batches a trainer run was given.

    .venv/bin/python benchmarks/bench_apply.py [--batches FILE] [--events 100000] [--repeat 5]

When FILE (default ``/tmp/fedlearn-apply-batches.pickle``) does not exist, ``bench_trainer``'s
run is made first (pre-filled streams, one in-process trainer, from an empty Redis) with
``apply_batch`` wrapped to record what each batch was given, as plain data every version of
the code reads: the entries (id, event, JSON text), the item features, the base's ``.flfm``
bytes, the time. Then the batches are replayed in order, each shard's on its own table and user
states, which start empty as the run's did, ``--repeat`` times; printed: the fastest replay's
microseconds of CPU per event in ``apply_batch`` and in ``render_applied``, and a digest of
what they returned (predictions, served predictions, positions, gates, last ids, the log's
lines, the touched users' ``.fldl`` bytes). No Redis and no other stage: the figures move
only with this code, and two trees are compared on the same batches, the digest saying they
computed the same: ``PYTHONPATH=/other/tree python benchmarks/bench_apply.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_trainer

from fedlearn.data.eventlog import render_applied
from fedlearn.devtools import EmbeddedRedis
from fedlearn.model import Base
from fedlearn.model.table import DeltaTable
from fedlearn.store import Store
from fedlearn.store.entries import Entry
from fedlearn.trainer import trainer
from fedlearn.trainer.apply import UserState, apply_batch


def record(path: Path, n_events: int) -> None:
    """Run ``bench_trainer``'s trainer over ``n_events`` and keep each batch's input."""
    batches: list[dict[str, Any]] = []
    inner = trainer.apply_batch

    def recording(base: Base, table: DeltaTable, *args: Any, **kwargs: Any) -> Any:
        entries = args[1]
        features = kwargs["item_features"]
        items = {e.event["item"] for e in entries if "item" in e.event}
        batches.append({
            "shard": id(table), "base": base.to_bytes(), "applied_at": kwargs["applied_at"],
            "entries": [(e.id, e.event, e.raw) for e in entries],
            "catalog": {item: dict(f) for item in items if (f := features(item)) is not None},
        })  # fmt: skip
        return inner(base, table, *args, **kwargs)

    trainer.apply_batch = recording
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            EmbeddedRedis(Path(tmp) / "redis") as server,
            Store.from_url(
                server.url, bench_trainer.N_SHARDS, stream_maxlen=max(100_000, 2 * n_events)
            ) as store,
        ):
            store.client.flushall()
            bench_trainer.prefill(store, n_events)
            bench_trainer.drain(store, n_events)
    finally:
        trainer.apply_batch = inner
    path.write_bytes(pickle.dumps(batches))


def replay(batches: list[dict[str, Any]]) -> tuple[float, float, int, str]:
    """CPU seconds in apply_batch and in render_applied, events, and the outputs' digest."""
    bases: dict[bytes, Base] = {}
    tables: dict[int, DeltaTable] = {}
    states: dict[int, dict[str, UserState]] = {}
    digest = hashlib.sha256()
    apply_s = render_s = 0.0
    events = 0
    for batch in batches:
        base = bases.get(batch["base"]) or bases.setdefault(
            batch["base"], Base.from_bytes(batch["base"])
        )
        table = tables.setdefault(batch["shard"], DeltaTable(base.n_factors))
        users = states.setdefault(batch["shard"], {})
        entries = [Entry(*entry) for entry in batch["entries"]]
        for entry in entries:
            users.setdefault(entry.event["user"], UserState())
        started = time.process_time()
        out = apply_batch(
            base, table, users, entries, bench_trainer.CLONE,
            item_features=batch["catalog"].get, prediction_features=lambda pid, item: None,
            applied_at=batch["applied_at"],
        )  # fmt: skip
        applied = time.process_time()
        lines = render_applied(out.log)["lines"] if out.applied else b""
        render_s += time.process_time() - applied
        apply_s += applied - started
        events += len(entries)
        users.update(out.users)
        for array in (out.predictions, out.served_predictions, out.positions):
            digest.update(array.tobytes())
        for user, state in out.users.items():
            digest.update(f"{user} {state.last_event} ".encode() + state.gate.to_bytes())
        digest.update(lines)
        for user, blob in table.to_bytes_many(list(out.users)).items():
            digest.update(user.encode() + blob)
    return apply_s, render_s, events, digest.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=Path, default=Path("/tmp/fedlearn-apply-batches.pickle"))
    parser.add_argument("--events", type=int, default=100_000, help="when recording")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if not args.batches.exists():
        record(args.batches, args.events)
    batches = pickle.loads(args.batches.read_bytes())  # our own file, written just above
    trainer.prepare_process()  # the kernel loaded, the collector tuned, as a trainer starts
    runs = [replay(batches) for _ in range(args.repeat)]
    apply_s, events, digest = min(r[0] for r in runs), runs[0][2], runs[0][3]
    render_s = min(r[1] for r in runs)
    print(
        f"{events:,} events in {len(batches)} batches, best of {args.repeat}: "
        f"apply_batch {1e6 * apply_s / events:.2f} us/event, "
        f"render_applied {1e6 * render_s / events:.2f} us/event; "
        f"digest {digest}"
    )
    if len({r[3] for r in runs}) != 1:
        raise SystemExit("the replays disagree: the digest differs between runs")


if __name__ == "__main__":
    main()
