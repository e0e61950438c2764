"""Monthly retraining from the durable event log: a new generation, old deltas archived."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.monthly import retrain_from_eventlog, samples_from_log
from fedlearn.aggregate.run import RoundError, rounds_of, run_round_inline
from fedlearn.aggregate.snapshots import Snapshot
from fedlearn.aggregate.synthetic import publish, random_deltas, write_deltas
from fedlearn.model import Base, TrainConfig
from fedlearn.store import Store

CONFIG = AggregationConfig(clip_norm=None, min_users=1)


def write_log(root: Path, n: int = 400) -> None:
    """Two shards' files; clicks depend on the item, so a trained base can tell them apart."""
    rng = np.random.default_rng(0)
    for shard in (0, 1):
        folder = root / f"shard={shard:03d}"
        folder.mkdir(parents=True)
        records = []
        for i in range(shard, n, 2):
            item = i % 5
            records.append(
                {"log_id": f"{i}-0", "user": f"u{i % 9}", "item": f"i{item}", "ts": 1e9 + i,
                 "signal": "click" if rng.random() < 0.1 + 0.2 * item else "skip",
                 "features": {f"item=i{item}": 1.0, f"user=u{i % 9}": 1.0}}
            )  # fmt: skip
        (folder / "2024-03-01.jsonl").write_bytes(b"\n".join(map(orjson.dumps, records)) + b"\n")


def test_retraining_starts_a_generation_and_archives_the_old_deltas(
    store: Store, tmp_path: Path
) -> None:
    first = Base.fresh(["item=i0"], 4, version="1")
    publish(store, first)
    deltas = random_deltas(np.random.default_rng(1), 12, n_factors=4, n_items=20)
    write_deltas(store, deltas, base="1")
    assert run_round_inline(store, CONFIG)["status"] == "done"  # users now have snapshots
    rounds = rounds_of(store)
    assert sum(rounds.snapshot_count(s) for s in store.shards) == 12
    write_log(tmp_path / "log")

    summary = retrain_from_eventlog(
        store, tmp_path / "log", config=TrainConfig(n_factors=4, epochs=3)
    )
    assert summary["generation"] == 1 and summary["version"] == "3"
    assert summary["n_events"] == 400 and summary["parent"] == "2"
    assert store.bases.current_version() == "3"
    new = Base.from_bytes(store.bases.get_base("3"))
    assert new.meta["generation"] == 1 and new.meta["kind"] == "monthly"
    assert new.w[new.index["item=i4"]] > new.w[new.index["item=i0"]]  # learned the click rates
    assert summary["archived"] == 12
    for user, d in deltas.items():
        shard = store.shard_of(user)
        archived = Snapshot.from_bytes(rounds.archived(shard, 0)[user])
        assert archived.delta == d.to_bytes() and archived.generation == 0
        assert store.deltas.get(shard, user) is not None  # copied, not deleted
    assert sum(rounds.snapshot_count(s) for s in store.shards) == 0
    # old-generation clones restart: they contribute nothing to the next round
    assert run_round_inline(store, CONFIG)["result"]["users"] == 0


def test_retraining_reads_the_base_shape_and_refuses_bad_input(
    store: Store, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        retrain_from_eventlog(store, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no events"):
        retrain_from_eventlog(store, tmp_path / "empty")
    bad = [{"log_id": "7-0", "signal": "clik", "features": {"a": 1.0}, "ts": 1.0}]
    with pytest.raises(ValueError, match=r"record 0 \(log_id '7-0'\): 'signal' must be"):
        samples_from_log(bad)
    write_log(tmp_path / "log", n=60)
    assert rounds_of(store).acquire_lock("r-busy", 60_000)
    with pytest.raises(RoundError, match="r-busy"):
        retrain_from_eventlog(store, tmp_path / "log")
    summary = retrain_from_eventlog(
        store, tmp_path / "log", config=TrainConfig(n_factors=2, epochs=1), publish=False
    )
    assert summary["generation"] == 0 and summary["base"].n_factors == 2
    assert store.bases.current_version() is None  # nothing published
