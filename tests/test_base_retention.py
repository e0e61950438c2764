"""Retention of base versions on a real redis-server: what goes, what stays and why, a fetch
of a pruned version over HTTP (410, and the way back to the current one), rollbacks, the
CLI, and pruning run twice at once and beside rollbacks."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
import urllib3
from click.testing import CliRunner

from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.retention import plan_retention, prune_bases
from fedlearn.aggregate.run import begin_round, create_round
from fedlearn.aggregate.synthetic import random_deltas, write_deltas
from fedlearn.api import create_app
from fedlearn.api.server import ThreadedServer
from fedlearn.cli.aggregate import aggregate
from fedlearn.cli.base import base as base_group
from fedlearn.client import Client
from fedlearn.config import Settings, load_settings
from fedlearn.model import Base
from fedlearn.store import (
    PrunedVersionError,
    Store,
    UnknownVersionError,
    VersionInUseError,
    keys,
)
from tests.test_api_http import problem

N_SHARDS = 2


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(auth=False, n_shards=N_SHARDS, data_dir=tmp_path)


@pytest.fixture
def store(redis_url: str) -> Iterator[Store]:
    with Store.from_url(redis_url, N_SHARDS) as s:
        yield s


def publish_chain(store: Store, n: int, *, built: bool = False) -> list[str]:
    """Versions v1..vn, each current in turn; ``built``: each names the one before as its
    parent, as a round's or a monthly retrain's version does."""
    versions = [f"v{i}" for i in range(1, n + 1)]
    for i, version in enumerate(versions):
        meta = {"parent": versions[i - 1]} if built and i else {"kind": "published"}
        base = Base.fresh(["item=1", "item=2"], 3, version=version)
        store.bases.put_base(version, base.to_bytes(), meta)
        store.bases.set_current(version)
    return versions


def blobs_left(store: Store, versions: list[str]) -> list[str]:
    return [v for v in versions if store.bases.exists(v)]


def test_versions_beyond_k_go_and_the_current_one_and_the_newest_k_stay(store: Store) -> None:
    versions = publish_chain(store, 10)
    report = prune_bases(store, store.rounds, 3)
    assert report.pruned == versions[:6]
    assert report.plan.kept == {
        "v7": "among the 3 newest", "v8": "among the 3 newest",
        "v9": "rollback target", "v10": "current",
    }  # fmt: skip
    assert blobs_left(store, versions) == ["v7", "v8", "v9", "v10"]
    assert report.freed == sum(len(Base.fresh(["item=1", "item=2"], 3, version=v).to_bytes())
                               for v in versions[:6])  # fmt: skip
    with pytest.raises(PrunedVersionError, match=r"'v1' was pruned at .*FEDLEARN_BASE_KEEP"):
        store.bases.get_base("v1")
    # the history stays whole (ids are never reused), and a second run has nothing to do
    assert [info.version for info in store.bases.history()] == versions
    assert set(store.bases.pruned()) == set(versions[:6])
    again = prune_bases(store, store.rounds, 3)
    assert again.pruned == [] and again.plan.prune == [] and again.freed == 0


def test_a_rollback_target_and_the_versions_after_a_rollback_stay(store: Store) -> None:
    versions = publish_chain(store, 10)
    store.bases.rollback("v5")
    report = prune_bases(store, store.rounds, 2)
    assert report.plan.kept == {
        "v4": "rollback target", "v5": "current",
        "v9": "among the 2 newest", "v10": "among the 2 newest",
    }  # fmt: skip
    assert blobs_left(store, versions) == ["v4", "v5", "v9", "v10"]
    assert store.bases.rollback("v10") == "v5"  # forward again
    assert store.bases.rollback("v4") == "v10"  # and back to the target
    with pytest.raises(PrunedVersionError, match="'v7' was pruned"):
        store.bases.rollback("v7")
    assert store.bases.current_version() == "v4"  # a refused rollback moves nothing


def test_the_lineage_a_rebase_may_still_name_stays(store: Store) -> None:
    """Built versions (rounds): current and its ancestors as far as ``rebase_versions``
    reaches (8 versions) stay even with K = 0."""
    versions = publish_chain(store, 12, built=True)
    plan = plan_retention(store, store.rounds, 0)
    assert list(plan.kept) == versions[4:]
    assert plan.kept["v11"] == "rollback target" and plan.kept["v12"] == "current"
    assert plan.kept["v5"] == "in the current rebase lineage"
    assert plan.prune == versions[:4]


def test_the_base_of_a_round_in_flight_stays(store: Store) -> None:
    versions = publish_chain(store, 5)
    store.bases.rollback("v1")
    config = AggregationConfig(min_users=1)
    round_id = create_round(store.rounds, config, trigger="test")
    assert begin_round(store, store.rounds, round_id)  # running on v1
    store.bases.set_current("v5")  # meanwhile: an operator's publish
    report = prune_bases(store, store.rounds, 0)
    assert report.plan.kept == {
        "v1": f"round {round_id} maps against it", "v4": "rollback target", "v5": "current"
    }  # fmt: skip
    assert blobs_left(store, versions) == ["v1", "v4", "v5"]


def test_what_the_store_refuses_and_says(store: Store) -> None:
    publish_chain(store, 3)
    with pytest.raises(VersionInUseError, match="'v3' is current and cannot be pruned"):
        store.bases.prune("v3")
    assert store.bases.prune("v1") is True
    assert store.bases.prune("v1") is False  # twice: harmless
    with pytest.raises(UnknownVersionError) as never:
        store.bases.prune("v9")
    assert not isinstance(never.value, PrunedVersionError)
    assert "'v9' does not exist" in str(never.value)
    # a pruned id is never published again, not even with its old bytes: URLs are immutable
    with pytest.raises(PrunedVersionError):
        store.bases.put_base("v1", Base.fresh(["item=1", "item=2"], 3, version="v1").to_bytes())
    assert not store.bases.exists("v1")
    with pytest.raises(PrunedVersionError):
        store.bases.set_current("v1")
    error = pickle.loads(pickle.dumps(PrunedVersionError("v1", 1.5e9)))  # crosses Celery
    assert (error.version, error.pruned_at) == ("v1", 1.5e9) and "pruned" in str(error)
    with pytest.raises(ValueError, match="keep_versions must be 0 or more, got -1"):
        plan_retention(store, store.rounds, -1)
    store.bases.put_base("staged", b"FLFM staged, never current")
    store.client.delete(keys.base_blob("staged"))  # an operator's DEL: retention carries on
    report = prune_bases(store, store.rounds, 0)
    assert report.skipped == {"staged": "has no bytes (deleted outside retention)"}


def test_two_pruners_at_once_delete_each_version_once(store: Store) -> None:
    versions = publish_chain(store, 40)
    reports = []
    start = threading.Barrier(4)

    def prune() -> None:
        start.wait()
        reports.append(prune_bases(store, store.rounds, 1))

    threads = [threading.Thread(target=prune) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deleted = [v for r in reports for v in r.pruned]
    assert sorted(deleted) == sorted(versions[:38]) and len(deleted) == len(set(deleted))
    assert blobs_left(store, versions) == ["v39", "v40"]


def test_pruning_beside_rollbacks_never_deletes_the_current_version(store: Store) -> None:
    """One thread rolls back and forth over every version while others prune with K = 0: a
    version pruned from a plan made before a rollback landed on it would leave the service
    with a current base it cannot load. The script checks "not current" as it deletes."""
    versions = publish_chain(store, 30)
    stop = threading.Event()
    missing: list[str] = []

    def roll() -> None:
        for i in range(600):
            version = versions[(i * 7) % len(versions)]
            try:
                store.bases.rollback(version)
            except PrunedVersionError:
                continue
            current = store.bases.current_version()
            if current is not None and not store.bases.exists(current):
                missing.append(current)
        stop.set()

    def prune() -> None:
        while not stop.is_set():
            prune_bases(store, store.rounds, 0)

    threads = [threading.Thread(target=roll)] + [threading.Thread(target=prune) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert missing == []
    assert store.bases.exists(store.bases.current_version() or "")
    assert len(store.bases.pruned()) > 0  # the pruners did work meanwhile


# --- over HTTP: a client holding a pruned version ------------------------------------------


def test_a_pruned_version_answers_410_and_the_client_recovers_with_the_current(
    url: str, store: Store
) -> None:
    versions = publish_chain(store, 4)
    prune_bases(store, store.rounds, 0)
    assert blobs_left(store, versions) == ["v3", "v4"]
    http = urllib3.PoolManager()
    # a browser revalidating its cached copy hears the same as one asking afresh
    for headers in ({}, {"If-None-Match": '"v1"'}):
        gone = problem(http.request("GET", f"{url}/v1/base/v1", headers=headers), 410)
        assert gone["type"].endswith("/gone") and gone["current_version"] == "v4"
        assert "'v1' was pruned at" in gone["detail"] and "GET /v1/base/current" in gone["detail"]
    assert problem(http.request("GET", f"{url}/v1/base/v1/buckets/1/0"), 410)["pruned_at"] > 0
    rows = http.request(
        "POST", f"{url}/v1/base/v2/rows", body=orjson.dumps({"features": ["item=1"]}),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert problem(rows, 410)["current_version"] == "v4"
    never = problem(http.request("GET", f"{url}/v1/base/v99"), 404)
    assert never["current_version"] == "v4" and "does not exist" in never["detail"]
    # the way back: the current version, by its redirect or by the name the answer gave
    current = http.request("GET", f"{url}/v1/base/current", redirect=False)
    assert current.status == 307 and current.headers["Location"].endswith("/v1/base/v4")
    fresh = http.request("GET", f"{url}/v1/base/{gone['current_version']}")
    assert fresh.status == 200 and fresh.data == store.bases.get_base("v4")
    session = Client(url).start_session("alice")
    assert session.model["base_version"] == "v4" and session.base.version == "v4"


def test_a_rollback_over_http_to_a_pruned_version_is_410_and_moves_nothing(
    url: str, store: Store
) -> None:
    publish_chain(store, 4)
    prune_bases(store, store.rounds, 0)
    http = urllib3.PoolManager()

    def rollback(version: str) -> urllib3.BaseHTTPResponse:
        body = orjson.dumps({"version": version})
        return http.request(
            "POST", f"{url}/v1/base/rollback", body=body,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip

    gone = problem(rollback("v2"), 410)
    assert "'v2' was pruned" in gone["detail"] and "base prune --dry-run" in gone["detail"]
    assert store.bases.current_version() == "v4"
    answer = rollback("v3")
    assert answer.status == 200 and answer.json() == {"version": "v3", "previous": "v4"}


# --- the CLI ------------------------------------------------------------------------------


def cli_env(redis_url: str, tmp_path: Path, keep: int = 2) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url, "FEDLEARN_N_SHARDS": str(N_SHARDS),
        "FEDLEARN_DATA_DIR": str(tmp_path), "FEDLEARN_BASE_KEEP_VERSIONS": str(keep),
    }  # fmt: skip


def test_base_prune_dry_run_then_for_real(store: Store, redis_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    env = cli_env(redis_url, tmp_path)
    empty = runner.invoke(base_group, ["prune"], env=env)
    assert empty.exit_code == 1 and "no base version is published yet" in empty.output
    versions = publish_chain(store, 6)
    dry = runner.invoke(base_group, ["prune", "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert "would prune  v1" in dry.output and "would prune  v3" in dry.output
    assert "keep         v6         current" in dry.output
    assert "dry run: would prune 3 version(s)" in dry.output
    assert blobs_left(store, versions) == versions  # nothing deleted
    done = runner.invoke(base_group, ["prune"], env=env)
    assert done.exit_code == 0 and "pruned 3 version(s)" in done.output
    assert blobs_left(store, versions) == ["v4", "v5", "v6"]
    listing = runner.invoke(base_group, ["list"], env=env)
    assert [("[pruned" in line) for line in listing.output.splitlines()[1:]] == [
        True, True, True, False, False, False
    ]  # fmt: skip
    keep_more = runner.invoke(base_group, ["prune", "--keep", "0"], env=env)
    assert keep_more.exit_code == 0 and "pruned 1 version(s)" in keep_more.output  # v4
    back = runner.invoke(base_group, ["rollback", "v2"], env=env)
    assert back.exit_code == 1 and "'v2' was pruned" in back.output
    bad = runner.invoke(base_group, ["prune", "--keep", "-1"], env=env)
    assert bad.exit_code == 2 and "-1 is not in the range x>=0" in bad.output


def test_an_inline_round_prunes_after_its_promotion(
    store: Store, redis_url: str, tmp_path: Path
) -> None:
    versions = publish_chain(store, 4)
    write_deltas(store, random_deltas(np.random.default_rng(0), 10, n_factors=3), base="v4")
    env = {**cli_env(redis_url, tmp_path, keep=0), "FEDLEARN_AGGREGATION_MIN_USERS": "1"}
    result = CliRunner().invoke(aggregate, ["--inline"], env=env)
    assert result.exit_code == 0 and "base 1 published on v4" in result.output, result.output
    assert blobs_left(store, [*versions, "1"]) == ["v4", "1"]  # its parent: the rollback target


def test_a_partial_session_on_a_pruned_version_moves_to_the_current_one_when_it_prepares(
    url: str, store: Store, settings: Settings
) -> None:
    items = [f"item={i}" for i in range(64)]  # ~2 rows a bucket: the items span many buckets

    def publish(version: str) -> None:
        base = Base.fresh(items, 3, version=version)
        store.bases.put_base(version, base.to_bytes(), {"kind": "published"})
        store.bases.set_current(version)

    publish("v1")
    session = Client(url).start_session("alice", ["1"])
    assert session.base.version == "v1"
    later = [str(i) for i in range(2, 40)]
    names = [f"item={i}" for i in later]
    assert session.base.missing(names)  # preparing them has buckets to fetch
    for version in ("v2", "v3", "v4"):
        publish(version)
    prune_bases(store, store.rounds, 0)
    # Another API process (another gunicorn worker), which never held v1 in memory: its
    # buckets are gone (the one that served the session still answers from its copy).
    with ThreadedServer(create_app(settings, store)) as other:
        client = Client(other.url)
        fetched = client.prepare(session, later)

        assert fetched > 0
        assert session.base.version == session.model["base_version"] == "v4"
        assert not session.base.missing(names)
        served = client.rank("alice", later, policy={"kind": "epsilon", "epsilon": 0.0})
    local = dict(session.rank_locally(later))
    assert [local[item] for item, _ in served.items] == pytest.approx(
        [score for _, score in served.items], rel=1e-6
    )
