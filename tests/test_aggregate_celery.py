"""Rounds on real Celery workers: two ``celery -A fedlearn.jobs.app worker`` processes against
a real redis-server (their own, so that the per-test cleanup cannot drop Celery's bindings).

End to end, the published base equals the hand-computed aggregate; duplicated tasks count
nothing twice; a failing task marks the round failed and frees the lock; the lock refuses a
second round; the monthly task starts a new generation; the promotion prunes old versions.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from celery import Celery, chord

from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.round import TERMINAL
from fedlearn.aggregate.run import begin_round, create_round, rounds_of
from fedlearn.aggregate.synthetic import publish, write_deltas
from fedlearn.config import load_settings
from fedlearn.devtools import EmbeddedRedis
from fedlearn.jobs.app import (
    MAP_SHARD,
    MONTHLY,
    OPE_DASHBOARD,
    PROMOTE,
    REDUCE,
    START_ROUND,
    make_celery,
)
from fedlearn.model import Base, Delta
from fedlearn.store import Store, keys

REPO = Path(__file__).resolve().parents[1]
N_SHARDS = 4
K = 3
CONFIG = AggregationConfig(
    strategy="fedavg", clip_norm=None, min_users=1, min_row_users=1, buckets=2
)
WORKERS = ("w1", "w2")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: no orphan workers


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Celery, Path]]:
    """Our own Redis and two Celery worker processes (solo pool, one task at a time each)."""
    folder = tmp_path_factory.mktemp("celery")
    with EmbeddedRedis(folder / "redis") as server:
        env = {
            **os.environ,
            "REDIS_URL": server.url,
            "FEDLEARN_N_SHARDS": str(N_SHARDS),
            "FEDLEARN_DATA_DIR": str(folder / "data"),
            "PYTHONWARNINGS": "ignore",
        }
        env.pop("FEDLEARN_REDIS_URL", None)
        logs = [folder / f"{name}.log" for name in WORKERS]
        procs = []
        for name, log in zip(WORKERS, logs, strict=True):
            with log.open("wb") as out:  # the child keeps its own descriptor
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable, "-m", "celery", "-A", "fedlearn.jobs.app", "worker",
                            "--pool=solo", "-n", f"{name}@%h", "--without-gossip",
                            "--without-mingle", "-l", "info",
                        ],
                        cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
                    )
                )  # fmt: skip
        app = make_celery(load_settings(redis_url=server.url, n_shards=N_SHARDS))
        try:
            deadline = time.monotonic() + 90
            while len(app.control.ping(timeout=0.5) or []) < len(WORKERS):
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    tails = "\n".join(log.read_text()[-3000:] for log in logs)
                    pytest.fail(f"Celery workers did not come up:\n{tails}")
            yield server.url, app, folder
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture
def store(cluster: tuple[str, Celery, Path]) -> Iterator[Store]:
    """A store on the workers' Redis with every fedlearn key removed (Celery's stay)."""
    url = cluster[0]
    with Store.from_url(url, N_SHARDS) as s:
        for key in s.client.scan_iter(match="fl:*", count=1000):
            s.client.delete(key)
        yield s


def publish_base(store: Store) -> Base:
    return publish(store, Base.fresh([f"item={i}" for i in range(6)], K, version="1"))


def random_users(rng: np.random.Generator, n: int) -> dict[str, Delta]:
    out = {}
    for u in range(n):
        d = Delta(K)
        names = [f"item={i}" for i in rng.choice(9, size=3, replace=False)]  # 6..8 are new
        rows = d.rows_of(names)
        d._w[rows] = rng.normal(size=3)
        d._v[rows] = rng.normal(size=(3, K))
        d.w0, d.n_events = float(rng.normal()), int(rng.integers(1, 20))
        out[f"user-{u}"] = d
    return out


def expected_base(base: Base, deltas: dict[str, Delta]) -> dict[str, tuple[float, np.ndarray]]:
    """Each row's weighted mean change (events as weights) over the users who touched it,
    added to the base's row (or to where a clone starts an unseen feature)."""
    out = {}
    names = sorted({n for d in deltas.values() for n in d.names})
    for name in names:
        touching = [d for d in deltas.values() if name in d.index]
        weight = sum(d.n_events for d in touching)
        w = sum(d.n_events * float(d.w[d.index[name]]) for d in touching) / weight
        v = sum(d.n_events * d.v[d.index[name]].astype(float) for d in touching) / weight
        bw, bv = base.rows([name])
        out[name] = (bw[0] + w, bv[0] + v)
    return out


def users_on_base(store: Store, seed: int, n: int) -> tuple[Base, dict[str, Delta]]:
    """A published base and ``n`` random users' clones on it."""
    base = publish_base(store)
    deltas = random_users(np.random.default_rng(seed), n)
    write_deltas(store, deltas, base="1")
    return base, deltas


def published_aggregate(store: Store, base: Base, deltas: dict[str, Delta]) -> Base:
    """Version 2, checked row by row against :func:`expected_base`."""
    new = Base.from_bytes(store.bases.get_base("2"))
    for name, (w, v) in expected_base(base, deltas).items():
        i = new.index[name]
        assert new.w[i] == pytest.approx(w, abs=1e-5)
        assert new.v[i] == pytest.approx(v, abs=1e-5)
    return new


def wait_for(store: Store, round_id: str, timeout: float = 60) -> dict[str, Any]:
    rounds = rounds_of(store)
    deadline = time.monotonic() + timeout
    while True:
        record = rounds.get(round_id)
        assert record is not None
        if record["status"] in TERMINAL:
            return record
        if time.monotonic() > deadline:
            pytest.fail(f"round {round_id} still {record['status']} after {timeout} s")
        time.sleep(0.05)


def test_a_round_on_two_workers_publishes_the_hand_computed_aggregate(
    cluster: tuple[str, Celery, Path], store: Store
) -> None:
    app = cluster[1]
    base, deltas = users_on_base(store, 7, 40)
    round_id = create_round(rounds_of(store), CONFIG, trigger="test")
    app.send_task(START_ROUND, args=[round_id])
    record = wait_for(store, round_id)
    assert record["status"] == "done", record.get("error")
    assert store.bases.current_version() == "2"
    new = published_aggregate(store, base, deltas)
    assert new.w0 == pytest.approx(np.average([d.w0 for d in deltas.values()],
                                              weights=[d.n_events for d in deltas.values()]),
                                   abs=1e-5)  # fmt: skip
    shards = record["result"]["shards"]
    assert sorted(shards) == [str(s) for s in range(N_SHARDS)]
    assert {note["worker"].split("@")[0] for note in shards.values()} <= set(WORKERS)
    assert sum(note["users"] for note in shards.values()) == 40


def test_duplicated_tasks_count_nothing_twice(
    cluster: tuple[str, Celery, Path], store: Store
) -> None:
    app = cluster[1]
    base, deltas = users_on_base(store, 8, 24)
    rounds = rounds_of(store)
    round_id = create_round(rounds, CONFIG)
    assert begin_round(store, rounds, round_id)
    maps = [
        app.signature(MAP_SHARD, args=(round_id, s), immutable=True)
        for s in range(N_SHARDS)
        for _ in range(2)  # every shard's task twice
    ]
    reducer = app.signature(REDUCE, args=(round_id,), immutable=True)
    chord(maps, reducer).apply_async().get(timeout=60)
    app.send_task(START_ROUND, args=[round_id]).get(timeout=60)  # a re-sent start, too
    app.send_task(PROMOTE, args=[round_id]).get(timeout=60)
    record = wait_for(store, round_id)
    assert record["status"] == "done" and record["result"]["users"] == 24
    assert [h.version for h in store.bases.history()] == ["1", "2"]
    published_aggregate(store, base, deltas)
    assert rounds.lock_holder() is None


def test_a_failing_task_marks_the_round_failed_and_frees_the_lock(
    cluster: tuple[str, Celery, Path], store: Store
) -> None:
    app = cluster[1]
    users_on_base(store, 9, 8)
    rounds = rounds_of(store)
    round_id = create_round(rounds, CONFIG)
    assert begin_round(store, rounds, round_id)
    store.client.delete("fl:{base}:blob:1")  # the reducer will not find its base
    app.send_task(START_ROUND, args=[round_id])
    record = wait_for(store, round_id)
    assert record["status"] == "failed"
    assert "UnknownVersionError" in record["error"] and "'1'" in record["error"]
    # the errback marks the round failed, forgets its partials, then frees the lock
    deadline = time.monotonic() + 10
    while rounds.lock_holder() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rounds.lock_holder() is None
    assert not [*store.client.scan_iter(match=f"*:part:{round_id}")]


def test_a_second_round_is_rejected_while_one_holds_the_lock(
    cluster: tuple[str, Celery, Path], store: Store
) -> None:
    app = cluster[1]
    publish_base(store)
    rounds = rounds_of(store)
    assert rounds.acquire_lock("busy-round", 60_000)
    round_id = create_round(rounds, CONFIG)
    app.send_task(START_ROUND, args=[round_id]).get(timeout=60)
    record = wait_for(store, round_id)
    assert record["status"] == "rejected" and "busy-round" in record["error"]
    assert store.bases.current_version() == "1"


def test_the_promotion_prunes_the_versions_beyond_retention(
    cluster: tuple[str, Celery, Path], store: Store
) -> None:
    """The workers run with the default FEDLEARN_BASE_KEEP_VERSIONS (24): after the round's
    promotion, in the same task, the oldest of 31 earlier versions lose their bytes."""
    app = cluster[1]
    old = [f"old-{i}" for i in range(1, 31)]
    for version in old:
        store.bases.put_base(version, f"an old base {version}".encode())
    users_on_base(store, 3, 10)
    round_id = create_round(rounds_of(store), CONFIG, trigger="test")
    app.send_task(START_ROUND, args=[round_id])
    assert wait_for(store, round_id)["status"] == "done"
    deadline = time.monotonic() + 30
    while len(store.bases.pruned()) < 7 and time.monotonic() < deadline:
        time.sleep(0.05)  # "done" is written before the same task prunes
    assert sorted(store.bases.pruned()) == sorted(old[:7])
    everything = [*old, "1", "2"]
    assert [v for v in everything if store.bases.exists(v)] == everything[7:]
    assert store.bases.current_version() == "2" and store.bases.rollback("1") == "2"


def test_the_monthly_task_starts_a_new_generation(
    cluster: tuple[str, Celery, Path], store: Store, tmp_path: Path
) -> None:
    app = cluster[1]
    users_on_base(store, 10, 5)
    folder = tmp_path / "eventlog" / "shard=000"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = [
        {"user": f"u{i % 7}", "item": f"i{i % 5}", "ts": 1e9 + i,
         "signal": "click" if rng.random() < 0.2 + 0.15 * (i % 5) else "skip",
         "features": {f"item=i{i % 5}": 1.0, f"user=u{i % 7}": 1.0}}
        for i in range(300)
    ]  # fmt: skip
    (folder / "2024-01-01.jsonl").write_bytes(b"\n".join(map(orjson.dumps, lines)) + b"\n")
    summary = app.send_task(MONTHLY, args=[str(tmp_path / "eventlog")]).get(timeout=120)
    assert summary["generation"] == 1 and summary["archived"] == 5
    assert store.bases.current_version() == summary["version"] == "2"
    new = Base.from_bytes(store.bases.get_base("2"))
    assert new.meta["generation"] == 1 and "item=i3" in new.index


def test_the_ope_task_stores_served_vs_greedy_for_the_dashboard(
    cluster: tuple[str, Celery, Path], store: Store
) -> None:
    app = cluster[1]
    log = cluster[2] / "data" / "eventlog"  # the workers' DATA_DIR/eventlog
    shutil.rmtree(log, ignore_errors=True)
    nothing = app.send_task(OPE_DASHBOARD).get(timeout=60)
    assert nothing["served"] is None and "is it an event log?" in nothing["error"]
    assert store.ope.latest() == nothing
    # Epsilon 0.2 over 5 items: greedy's pick has propensity 0.84, an explored one 0.04;
    # the greedy picks (every other event) are clicked, the explored ones never.
    epsilon = {"kind": "epsilon", "epsilon": 0.2}
    lines = [
        {"event_id": f"e{n}", "user": f"u{n % 6}", "item": "i1", "ts": 1e9 + n,
         "signal": "click" if n % 2 else "skip", "prediction_id": f"p{n}",
         "stream_id": f"{1000 + n}-0", "propensity": 0.84 if n % 2 else 0.04, "slot": 0,
         "policy": epsilon}
        for n in range(60)
    ]  # fmt: skip
    (log / "shard=000").mkdir(parents=True)
    (log / "shard=000" / "2026-01-01.jsonl").write_bytes(
        b"".join(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE) for line in lines)
    )
    result = app.send_task(OPE_DASHBOARD).get(timeout=60)
    assert result["error"] is None and store.ope.latest() == result
    served, greedy = result["served"], result["greedy"]
    assert (served["value"], served["n"], served["users"]) == (0.5, 60, 6)
    assert served["low"] < 0.5 < served["high"]
    assert greedy["value"] == pytest.approx(1.0) and greedy["n"] == 60


def test_the_cli_hands_a_round_to_the_workers_and_waits(
    cluster: tuple[str, Celery, Path], store: Store, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from fedlearn.cli.aggregate import aggregate

    users_on_base(store, 11, 10)
    env = {"REDIS_URL": cluster[0], "FEDLEARN_N_SHARDS": str(N_SHARDS),
           "FEDLEARN_DATA_DIR": str(tmp_path)}  # fmt: skip
    result = CliRunner().invoke(aggregate, [], env=env)
    assert result.exit_code == 0, result.output
    assert "base 2 published on 1 from 10 users" in result.output
    result = CliRunner().invoke(aggregate, ["--no-wait"], env=env)
    round_id = result.output.strip()
    assert wait_for(store, round_id)["status"] == "skipped"  # nothing new since


def test_the_promotion_sends_each_participant_one_rebase_of_its_share(
    cluster: tuple[str, Celery, Path], store: Store
) -> None:
    """The workers' promotion rebases: one entry per participant in its shard's stream, the
    shares adding up to the published step, and the snapshots rebased (nothing left to fold)."""
    app = cluster[1]
    base, deltas = users_on_base(store, 9, 20)
    round_id = create_round(rounds_of(store), CONFIG, trigger="test")
    app.send_task(START_ROUND, args=[round_id])
    assert wait_for(store, round_id)["status"] == "done"
    entries = [
        orjson.loads(fields[b"e"])
        for shard in range(N_SHARDS)
        for _, fields in store.client.xrange(keys.stream(shard))
    ]
    assert sorted(e["user"] for e in entries) == sorted(deltas)
    assert {e["type"] for e in entries} == {"rebase"} and {e["base"] for e in entries} == {"2"}
    new = Base.from_bytes(store.bases.get_base("2"))
    names = sorted(new.index)
    shares = [Delta.from_json(e["share"], K, dtype=np.float64) for e in entries]
    step = new.rows(names)[0] - base.rows(names)[0]
    np.testing.assert_allclose(sum(s.lookup(names)[0] for s in shares), step, atol=1e-5)
    again = create_round(rounds_of(store), CONFIG, trigger="test")
    app.send_task(START_ROUND, args=[again])
    # No trainer applied the entries: the map step counts them as applied (the snapshots
    # hold the rebased deltas), so no share comes back as a change and nothing is folded.
    record = wait_for(store, again)
    assert record["status"] == "skipped" and record["result"]["users"] == 0
