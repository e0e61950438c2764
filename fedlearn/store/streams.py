"""The shard streams: appended to by the API, consumed by the trainers through one group.

Ingest (``append_events``) is one Lua script per shard that de-duplicates by event id,
refuses the whole batch when the stream is full (the API answers 429: never drop, never trim
what is not yet acknowledged), and appends the rest.

Consuming: the shard's owner (see ``leases``) reads with XREADGROUP, applies, and calls
``commit_batch`` (see ``commit``), which writes the deltas and acknowledges the entries in one
atomic script. Order matters for exactly-once: a new owner first claims the shard's pending
entries (``claim``, idle time 0 is right since the lease makes it the only reader), applies
and commits them, and only then reads new ones; an entry whose id is ``<=`` the user's stored
``last_event`` is skipped (``streamid.already_applied``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import redis
from redis.cluster import RedisCluster

from fedlearn.store import keys
from fedlearn.store.commit import CommitResult, commit_args, read_reply
from fedlearn.store.connection import text as _text
from fedlearn.store.connection import without_retries
from fedlearn.store.deadletters import DeadLetter
from fedlearn.store.entries import (
    Batch,
    decode_id,
    encode,
    parse_flat,
    parse_read_many,
)
from fedlearn.store.errors import LeaseLostError, StaleCommitError, StoreError, StreamFullError
from fedlearn.store.scripts import Scripts, run_many
from fedlearn.store.streamid import StreamId
from fedlearn.store.userread import parse_note

log = logging.getLogger(__name__)

MAX_BLOCK_MS = 10_000  # stays well below the client's socket timeout
MAX_COUNT = 10_000


def _as_sent(response: Any, **_options: Any) -> Any:
    return response


class AppendResult(NamedTuple):
    accepted: int
    duplicates: int


def _check_positive(name: str, value: int, most: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
        raise ValueError(f"{name} must be an int in 1..{most}, got {value!r}")


class Streams:
    """Per-shard ingest streams and their consumer group ``group``."""

    def __init__(
        self,
        client: Any,
        scripts: Scripts,
        n_shards: int,
        *,
        maxlen: int,
        dedupe_window_s: int,
        group: str,
    ) -> None:
        _check_positive("maxlen", maxlen, 10**9)
        _check_positive("dedupe_window_s", dedupe_window_s, 10**8)
        keys.check_id("group", group)
        self._r = client
        self._reader = without_retries(client)  # XREADGROUP only (connection.without_retries)
        # The reader's replies skip redis-py's reshaping (a dict per entry, built in Python):
        # entries.parse_entries reads Redis's own [field, value] lists. A cluster client's is
        # reshaped per node before the cluster layer sees it, so it keeps its callbacks.
        self._raw_reads = not isinstance(client, RedisCluster)
        if self._raw_reads:
            self._reader.set_response_callback("XREADGROUP", _as_sent)
        self._scripts = scripts
        self.n_shards = n_shards
        self.maxlen = maxlen
        self.dedupe_window_s = dedupe_window_s
        self.group = group

    def close(self) -> None:
        """Disconnect the reading client's own connections (the shared client is the store's)."""
        if isinstance(self._reader, RedisCluster):
            self._reader.close()
        elif self._reader is not self._r:
            self._reader.connection_pool.disconnect()

    # --- ingest --------------------------------------------------------------------------

    def append_events(
        self, shard: int, events: Sequence[Mapping[str, Any]], *, now: float | None = None
    ) -> AppendResult:
        """Append ``events`` (dicts with ``event_id`` and ``user``) to ``shard``'s stream.

        Events whose ``event_id`` was appended to this shard within the dedupe window (at least
        ``dedupe_window_s``) are counted as duplicates and skipped. Raises ``StreamFullError``,
        writing nothing, when the new events do not fit under ``maxlen``.
        """
        keys.check_shard(shard, self.n_shards)
        if len(events) > self.maxlen:
            raise ValueError(
                f"a batch holds at most maxlen={self.maxlen} events, got {len(events)}; split it"
            )
        args: list[Any] = []
        for i, event in enumerate(events):
            if not isinstance(event, Mapping):
                raise TypeError(f"events[{i}] must be a mapping, got {type(event).__name__}")
            event_id = keys.check_id(f"events[{i}].event_id", event.get("event_id"))
            user = keys.check_id(f"events[{i}].user", event.get("user"))
            home = keys.shard_of(user, self.n_shards)
            if home != shard:
                raise ValueError(
                    f"events[{i}].user {user!r} belongs to shard {home}, not "
                    f"{shard}; route events with shard_of(user)"
                )
            args += [event_id, encode(event)]
        if not args:
            return AppendResult(0, 0)
        window = int((time.time() if now is None else now) // self.dedupe_window_s)
        reply = self._scripts.append_events(
            keys=[keys.stream(shard), keys.seen(shard, window), keys.seen(shard, window - 1)],
            args=[self.maxlen, 2 * self.dedupe_window_s, *args],
        )
        if reply[0] == b"FULL":
            raise StreamFullError(shard, int(reply[1]), len(events), self.maxlen)
        return AppendResult(int(reply[1]), int(reply[2]))

    def append_rebases(
        self,
        shard: int,
        version: str,
        entries: Mapping[str, Mapping[str, Any]],
        *,
        notes_ttl_s: int,
        attempts: int = 50,
    ) -> AppendResult:
        """Append the rebase entries (user -> entry) of promoting ``version``, and note each
        beside the stream id that preceded it (``rebase_notes``), in one transaction.

        A user's entries after that id start with its rebase entry, so the rebase was applied
        exactly when the user's ``last_event`` passed it (what the API checks). ``WATCH``
        keeps anything from being appended in between; a note, once written, is never
        overwritten (a resent rebase is a duplicate entry and keeps its first note). Raises
        ``StreamFullError``, writing nothing, when the entries do not fit.
        """
        keys.check_shard(shard, self.n_shards)
        keys.check_version(version)
        stream, notes = keys.stream(shard), keys.rebase_notes(shard, version)
        window = int(time.time() // self.dedupe_window_s)
        args: list[Any] = []
        for entry in entries.values():
            args += [keys.check_id("rebase event_id", entry.get("event_id")), encode(entry)]
        if not args:
            return AppendResult(0, 0)
        for _ in range(attempts):
            with self._r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(stream)
                    length = int(pipe.xlen(stream))
                    if length + len(entries) > self.maxlen:
                        raise StreamFullError(shard, length, len(entries), self.maxlen)
                    # the last id ever generated: entries may have been trimmed since
                    before = "0-0"
                    if pipe.exists(stream):
                        before = decode_id(pipe.xinfo_stream(stream)["last-generated-id"])
                    pipe.multi()
                    self._scripts.append_events(
                        keys=[stream, keys.seen(shard, window), keys.seen(shard, window - 1)],
                        args=[self.maxlen, 2 * self.dedupe_window_s, *args],
                        client=pipe,
                    )
                    for user, entry in entries.items():
                        pipe.hsetnx(notes, user, f"{before}|".encode() + encode(entry["share"]))
                    pipe.expire(notes, notes_ttl_s)
                    reply = pipe.execute()[0]
                except redis.WatchError:
                    continue
            return AppendResult(int(reply[1]), int(reply[2]))
        raise StoreError(
            f"shard {shard}: the stream changed during {attempts} attempts to append the "
            f"rebases of version {version}; the promotion is retried by the next round"
        )

    def rebase_notes(
        self, shard: int, users: Sequence[str], versions: Sequence[str]
    ) -> dict[str, list[tuple[str, StreamId, bytes]]]:
        """Each of ``users``' rebase notes of ``versions``: (version, the stream id before the
        entry, the share as JSON bytes), in the order of ``versions``; users without one are
        left out. One HMGET per version, in one round trip."""
        if not versions or not users:
            return {}
        pipe = self._r.pipeline(transaction=False)
        for version in versions:
            pipe.hmget(keys.rebase_notes(shard, version), list(users))
        out: dict[str, list[tuple[str, StreamId, bytes]]] = {}
        for version, raws in zip(versions, pipe.execute(), strict=True):
            for user, raw in zip(users, raws, strict=True):
                note = parse_note(raw)
                if note is not None:
                    out.setdefault(user, []).append((version, *note))
        return out

    def drop_rebase_notes(self, shard: int, notes: Sequence[tuple[str, str]]) -> None:
        """Delete the notes of (version, user) pairs whose rebase entry the shard's trainer has
        committed past: the API and the map step read a note only while the user's
        ``last_event`` is before its entry, so it is dead weight from then on (without this,
        notes kept for their TTL were most of Redis' memory in docs/SCALE.md's plan)."""
        keys.check_shard(shard, self.n_shards)
        by_version: dict[str, list[str]] = {}
        for version, user in notes:
            by_version.setdefault(version, []).append(user)
        pipe = self._r.pipeline(transaction=False)
        for version, users in by_version.items():
            pipe.hdel(keys.rebase_notes(shard, version), *users)
        pipe.execute()

    def length(self, shard: int) -> int:
        """Entries in the stream: unread, pending and acknowledged-but-not-yet-trimmed."""
        keys.check_shard(shard, self.n_shards)
        return int(self._r.xlen(keys.stream(shard)))

    # --- consuming -----------------------------------------------------------------------

    def ensure_group(self, shard: int) -> None:
        """Create the consumer group (and the stream) if missing; harmless when they exist.

        The group starts at id 0, so events appended before any trainer ran are delivered.
        """
        keys.check_shard(shard, self.n_shards)
        try:
            self._r.xgroup_create(keys.stream(shard), self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def has_group(self, shard: int) -> bool:
        """Whether the shard's stream exists with the trainers' consumer group (a trainer
        has owned it)."""
        keys.check_shard(shard, self.n_shards)
        try:
            groups = self._r.xinfo_groups(keys.stream(shard))
        except redis.ResponseError:  # no such key
            return False
        return any(_text(g["name"]) == self.group for g in groups)

    def read_batch(
        self, shard: int, consumer: str, *, count: int = 500, block_ms: int = 1000
    ) -> Batch:
        """Up to ``count`` new entries for ``consumer``, waiting at most ``block_ms`` for one.

        ``block_ms=0`` does not wait (it does not mean "forever" here). The entries stay
        pending for ``consumer`` until ``commit_batch`` acknowledges them.
        """
        return self.read_many([shard], consumer, count=count, block_ms=block_ms).get(shard, Batch())

    @property
    def can_block_on_many(self) -> bool:
        """Whether one XREADGROUP can wait on several shards' streams. Not on a Redis
        Cluster: the streams live in different slots, and a multi-key command must stay in
        one slot (CROSSSLOT), even on one node."""
        return not isinstance(self._r, RedisCluster)

    def read_many(
        self, shards: Sequence[int], consumer: str, *, count: int = 500, block_ms: int = 1000
    ) -> dict[int, Batch]:
        """New entries of ``shards`` for ``consumer`` (up to ``count`` per shard), waiting at
        most ``block_ms`` for the first one on any of them: one XREADGROUP with BLOCK, so an
        idle trainer picks an event up as soon as it lands instead of polling.

        ``block_ms=0`` does not wait. Only shards with entries are in the answer; as with
        ``read_batch``, the entries stay pending until ``commit_batch`` acknowledges them.
        On a cluster (see ``can_block_on_many``) only a single shard can be given.
        """
        for shard in shards:
            keys.check_shard(shard, self.n_shards)
        keys.check_id("consumer", consumer)
        _check_positive("count", count, MAX_COUNT)
        if not isinstance(block_ms, int) or not 0 <= block_ms <= MAX_BLOCK_MS:
            raise ValueError(f"block_ms must be an int in 0..{MAX_BLOCK_MS}, got {block_ms!r}")
        if not shards:
            return {}
        if len(shards) > 1 and not self.can_block_on_many:
            raise ValueError(
                f"a Redis Cluster reads one shard per XREADGROUP, got shards {list(shards)!r}; "
                f"use read_batch per shard"
            )
        shard_of_key = {keys.stream(shard): shard for shard in shards}
        streams = dict.fromkeys(shard_of_key, ">")
        block = block_ms or None
        try:
            reply = self._reader.xreadgroup(self.group, consumer, streams, count=count, block=block)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            for shard in shards:
                self.ensure_group(shard)
            reply = self._reader.xreadgroup(self.group, consumer, streams, count=count, block=block)
        batches = parse_read_many(reply, raw=self._raw_reads)
        return {shard_of_key[key]: batch for key, batch in batches.items()}

    def claim(self, shard: int, consumer: str, *, min_idle_ms: int = 0, count: int = 500) -> Batch:
        """Take over up to ``count`` pending entries idle for ``min_idle_ms`` (XAUTOCLAIM).

        A trainer that has just acquired a shard's lease calls this with ``min_idle_ms=0``: the
        previous owner is dead or fenced, so all of the shard's pending entries are its to
        redo. Entries come back in stream order.
        """
        keys.check_shard(shard, self.n_shards)
        keys.check_id("consumer", consumer)
        _check_positive("count", count, MAX_COUNT)
        if not isinstance(min_idle_ms, int) or min_idle_ms < 0:
            raise ValueError(f"min_idle_ms must be an int >= 0, got {min_idle_ms!r}")
        self.ensure_group(shard)
        batch, start = Batch(), "0-0"
        while len(batch) < count:
            reply = self._scripts.claim(
                keys=[keys.stream(shard)],
                args=[self.group, consumer, min_idle_ms, start, count - len(batch)],
            )
            batch.extend(parse_flat(reply[1:]))
            start = decode_id(reply[0])
            if StreamId.parse(start) == StreamId(0, 0):
                break
        return batch

    def pending_count(self, shard: int) -> int:
        """Entries delivered to some consumer and not yet acknowledged."""
        keys.check_shard(shard, self.n_shards)
        try:
            summary = self._r.xpending(keys.stream(shard), self.group)
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                return 0
            raise
        return int(summary["pending"])

    def commit_batch(
        self,
        shard: int,
        *,
        owner: str,
        deltas: Mapping[str, bytes],
        last_ids: Mapping[str, str | bytes | StreamId],
        entry_ids: Sequence[str | bytes | StreamId],
        log_entries: Sequence[Mapping[str, Any]] = (),
        base: str,
        generation: int,
        events: Mapping[str, int] | None = None,
        gates: Mapping[str, bytes] | None = None,
        dead_letters: Sequence[DeadLetter] = (),
    ) -> CommitResult:
        """Atomically write the users' deltas, acknowledge ``entry_ids`` and append
        ``log_entries`` to the shard's applied log, if and only if ``owner`` holds the lease.

        ``deltas`` maps user -> ``.fldl`` bytes, ``last_ids`` user -> id of the last entry
        applied to that delta (required for every user in ``deltas``). ``events`` (user ->
        events applied) defaults to the count in each delta's header; ``gates`` (user ->
        bytes) is the user's serving-gate state (``stream.gating``), kept beside the delta.
        ``dead_letters`` go to the shard's dead-letter stream (``store.deadletters``).
        Raises
        ``LeaseLostError`` or ``StaleCommitError`` with nothing written. Resending the same
        call (a retry after a lost reply) is a no-op.
        """
        (answer,) = self.commit_batches(
            [{"shard": shard, "owner": owner, "deltas": deltas, "last_ids": last_ids,
              "entry_ids": entry_ids, "log_entries": log_entries, "base": base,
              "generation": generation, "events": events, "gates": gates,
              "dead_letters": dead_letters}]
        )  # fmt: skip
        if isinstance(answer, LeaseLostError | StaleCommitError):
            raise answer
        return answer

    def commit_batches(
        self, commits: Sequence[Mapping[str, Any]]
    ) -> list[CommitResult | LeaseLostError | StaleCommitError]:
        """Several shards' commits in one round trip: each of ``commits`` holds
        :meth:`commit_batch`'s arguments (``shard`` among them), and each is the same atomic
        script on its own shard, so one shard's refusal changes nothing of the others'.

        Returns each commit's result, or the ``LeaseLostError`` / ``StaleCommitError`` it
        stands for (nothing of that shard written). Any other error is raised: which of the
        commits were written is then unknown, and the caller must reload those shards' users
        from Redis (as after a failed :meth:`commit_batch`)."""
        built = []
        for commit in commits:
            shard = commit["shard"]
            keys.check_shard(shard, self.n_shards)
            options = {"log_entries": (), "events": None, **commit}
            del options["shard"]  # commit_batch's defaults for what a commit leaves out
            built.append(commit_args(shard, self.n_shards, group=self.group, **options))
        script = self._scripts.commit_batch
        replies = run_many(self._r, [(script, args.keys, args.args) for args in built])
        out: list[CommitResult | LeaseLostError | StaleCommitError] = []
        for commit, args, reply in zip(commits, built, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            try:
                out.append(read_reply(commit["shard"], commit["owner"], args, reply))
            except (LeaseLostError, StaleCommitError) as exc:
                out.append(exc)
        return out

    def trim_acked(self, shard: int) -> int:
        """Drop the entries that every consumer has acknowledged; returns how many.

        Keeps everything from the oldest pending entry, and everything not yet delivered.
        The group's last-delivered id is read before the pending list on purpose: entries
        delivered in between have larger ids and are kept either way.
        """
        keys.check_shard(shard, self.n_shards)
        stream = keys.stream(shard)
        try:
            groups = self._r.xinfo_groups(stream)
        except redis.ResponseError as exc:
            if "no such key" in str(exc).lower():
                return 0
            raise
        mine = [g for g in groups if _text(g["name"]) == self.group]
        if not mine:
            return 0  # no consumer ever read this stream: nothing is acknowledged
        keep = StreamId.parse(_text(mine[0]["last-delivered-id"])).next()
        if len(groups) > 1:  # another group (an operator's tap) must not lose its backlog
            for g in groups:
                keep = min(keep, StreamId.parse(_text(g["last-delivered-id"])).next())
        for g in groups:
            summary = self._r.xpending(stream, _text(g["name"]))
            if summary["pending"]:
                keep = min(keep, StreamId.parse(_text(summary["min"])))
        return int(self._r.xtrim(stream, minid=str(keep), approximate=False))
