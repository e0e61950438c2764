"""``Store``: the one object through which fedlearn talks to Redis.

The API, the trainers and the Celery tasks each receive a ``Store`` explicitly (no module
globals). It owns one client (a ``Redis`` or a ``RedisCluster``, chosen by ``connect``), the
Lua scripts registered on it, and the number of shards, and hands out one small component per
kind of state:

- ``store.bases``        base versions, the current pointer, history, rollback
- ``store.deltas``       per-user delta records (read, list, delete)
- ``store.streams``      ingest (append_events), consuming (read_batch, claim), commit_batch,
                         trimming of acknowledged entries
- ``store.leases``       one owner per shard (acquire, renew, release)
- ``store.applied``      the applied-event log tail, for the log writer
- ``store.predictions``  prediction records for the feature/label join
- ``store.catalog``      the item catalog (features and titles)
- ``store.members``      heartbeats of the live trainers, for a fair share of shards
- ``store.rounds``       aggregation rounds: lock, records, users' snapshots and archives
- ``store.telemetry``    trainers' metric snapshots and per-shard stream statistics
- ``store.dead_letters`` entries and records the trainers set aside, with the reason
- ``store.user_reads``   what serving one user's model reads, in one round trip
"""

from __future__ import annotations

from typing import Any

from redis.cluster import RedisCluster

from fedlearn.store import keys
from fedlearn.store.applied import AppliedLog
from fedlearn.store.bases import Bases
from fedlearn.store.connection import Client, connect
from fedlearn.store.deadletters import DeadLetters
from fedlearn.store.deltas import Deltas
from fedlearn.store.drift import DriftLog
from fedlearn.store.errors import ShardCountError
from fedlearn.store.items import Catalog
from fedlearn.store.leases import Leases
from fedlearn.store.members import Members
from fedlearn.store.ope import OpeEstimates
from fedlearn.store.predictions import Predictions
from fedlearn.store.rounds import Rounds
from fedlearn.store.scripts import Scripts
from fedlearn.store.streams import Streams
from fedlearn.store.telemetry import Telemetry
from fedlearn.store.userread import UserReads

DEFAULT_MAXLEN = 100_000
DEFAULT_DEDUPE_WINDOW_S = 24 * 3600
DEFAULT_GROUP = "trainers"
SHARD_COUNT_FIELD = "n_shards"  # of ``keys.config()``: the deployment's shard count


class Store:
    """All of fedlearn's Redis state, over ``n_shards`` shards.

    ``stream_maxlen`` bounds each shard's stream (a full one refuses appends: 429);
    ``dedupe_window_s`` is how long a seen event id is remembered (at least that long, at
    most twice); ``group`` names the trainers' consumer group. Every process must agree on
    ``n_shards``: it decides which shard a user's events and delta live in; the service's
    processes check it against the deployment's record (``claim_shard_count``).
    """

    def __init__(
        self,
        client: Client,
        n_shards: int,
        *,
        stream_maxlen: int = DEFAULT_MAXLEN,
        dedupe_window_s: int = DEFAULT_DEDUPE_WINDOW_S,
        group: str = DEFAULT_GROUP,
    ) -> None:
        keys.check_n_shards(n_shards)
        self.client = client
        self.n_shards = n_shards
        self.scripts = Scripts.register(client)
        self.bases = Bases(client, self.scripts)
        self.deltas = Deltas(client, n_shards, self.scripts)
        self.streams = Streams(
            client, self.scripts, n_shards,
            maxlen=stream_maxlen, dedupe_window_s=dedupe_window_s, group=group,
        )  # fmt: skip
        self.leases = Leases(client, self.scripts, n_shards)
        self.applied = AppliedLog(client, n_shards)
        self.predictions = Predictions(client, n_shards)
        self.catalog = Catalog(client, self.scripts)
        self.members = Members(client)
        self.rounds = Rounds(client, n_shards)
        self.telemetry = Telemetry(client, n_shards, self.rounds, group=group)
        self.dead_letters = DeadLetters(client, n_shards)
        self.drift = DriftLog(client)
        self.ope = OpeEstimates(client)
        self.user_reads = UserReads(client, n_shards)

    @classmethod
    def from_url(cls, url: str, n_shards: int, **options: Any) -> Store:
        """Connect to ``url`` (a single Redis or any node of a cluster) and build a Store.

        ``options`` are the ``Store`` keywords; connection options go through ``connect``.
        """
        keys.check_n_shards(n_shards)
        return cls(connect(url), n_shards, **options)

    def claim_shard_count(self) -> int:
        """Record ``n_shards`` as the deployment's shard count if none is recorded yet, and
        return it; raise :class:`ShardCountError` when Redis records another count.

        Every process that routes or trains calls this at start: a count that differs from
        the one the data was laid out with would read and write users in the wrong shards.
        The record is one hash field (``HSETNX``), never changed by fedlearn afterwards.
        """
        key = keys.config()
        if self.client.hget(key, SHARD_COUNT_FIELD) is None:
            self._check_unrecorded_layout()
        # Set-if-absent and read back in one MULTI: nothing (another process's claim, an
        # operator's FLUSHALL) can come between them and leave nothing to read.
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hsetnx(key, SHARD_COUNT_FIELD, self.n_shards)
            pipe.hget(key, SHARD_COUNT_FIELD)
            recorded = int(pipe.execute()[1])
        if recorded != self.n_shards:
            raise ShardCountError(recorded, self.n_shards)
        return recorded

    def _check_unrecorded_layout(self) -> None:
        """A Redis used before the count was recorded: trainers made a consumer group on every
        shard they owned, so if shard 0 has one, the last shard must too and the one past it
        must not exist; otherwise the data was laid out for another count (the default was 8).
        """
        last, past = self.n_shards - 1, self.n_shards
        if not self.streams.has_group(0):
            return
        beyond = past < keys.MAX_SHARDS and bool(self.client.exists(keys.stream(past)))
        if beyond or not self.streams.has_group(last):
            raise ShardCountError(None, self.n_shards)

    def shard_of(self, user: str) -> int:
        """The shard of ``user`` (see ``keys.shard_of``)."""
        return keys.shard_of(user, self.n_shards)

    @property
    def shards(self) -> range:
        return range(self.n_shards)

    @property
    def is_cluster(self) -> bool:
        return isinstance(self.client, RedisCluster)

    def ping(self) -> bool:
        """True when Redis answers (every node, on a cluster); for health checks."""
        reply = self.client.ping()
        if isinstance(reply, dict):  # RedisCluster answers per node
            return all(reply.values())
        return bool(reply)

    def close(self) -> None:
        self.streams.close()
        self.client.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "cluster" if self.is_cluster else "redis"
        return f"Store({kind}, n_shards={self.n_shards})"
