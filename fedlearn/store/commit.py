"""Arguments and answers of the commit script (``scripts.COMMIT_BATCH``).

A commit is what makes the trainer exactly-once: the users' deltas, their ``last_event``, the
acknowledgement of the batch, the applied-log tail and the batch's dead letters are written by
one Lua script, so a crash leaves either all of it or none of it. The script refuses to write
when the caller's lease is gone (fencing) or when a user's ``last_event`` would not move
forward (an event applied twice). A random token per call makes a resent commit (redis-py
retries after a lost reply) a no-op instead of a false "stale" alarm.

Everything is validated here, before any I/O.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from fedlearn.model.delta import events_of
from fedlearn.model.errors import ModelFormatError
from fedlearn.store import deadletters, keys
from fedlearn.store.applied import encode_entry
from fedlearn.store.errors import LeaseLostError, StaleCommitError, StoreError
from fedlearn.store.streamid import StreamId

# The ids a batch read from Redis look like this; checking them with one regex (rather than
# parsing each) keeps validation off the trainer's profile. Anything else is parsed in full.
# [0-9], not \d: a str pattern's \d takes any script's digits, which Redis's XACK refuses
# (after the script's first writes). Possessive: nothing to backtrack, 2.5x faster.
_PLAIN_ID = re.compile(r"[0-9]{1,19}-[0-9]{1,19}")
_PLAIN_IDS = re.compile(r"(?:[0-9]{1,19}+-[0-9]{1,19}+\n)*+")  # the same, for ids joined by \n


def _plain_ids(entry_ids: Sequence[str | bytes | StreamId]) -> list[str]:
    """``entry_ids`` as strings, checked: all of a batch's plain ids in one regex match."""
    ids = list(entry_ids)
    try:
        joined = "\n".join(ids) + "\n"  # type: ignore[arg-type]
    except TypeError:  # bytes or StreamId among them
        joined = ""
    # The count keeps an id with a newline inside from passing for two.
    if joined.count("\n") == len(ids) and _PLAIN_IDS.fullmatch(joined):
        return ids  # type: ignore[return-value]
    return [i if isinstance(i, str) and _PLAIN_ID.fullmatch(i) else str(StreamId.parse(i))
            for i in ids]  # fmt: skip


@dataclass(frozen=True, slots=True)
class CommitResult:
    """``acked``: entries newly acknowledged; ``replayed``: this exact commit had already been
    applied (the reply of the first attempt was lost), nothing was written again."""

    users: int
    acked: int
    logged: int
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class CommitArgs:
    keys: list[str]
    args: list[Any]
    users: int
    logged: int


def delta_events(user: str, blob: bytes) -> int:
    """The events count in a ``.fldl`` header (CONTRACTS.md), checking that it is one."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise TypeError(f"deltas[{user!r}] must be bytes (.fldl), got {type(blob).__name__}")
    try:
        return events_of(bytes(blob))
    except ModelFormatError as exc:
        raise ValueError(f"deltas[{user!r}] is {exc}; serialize it with Delta.to_bytes()") from None


def _event_counts(
    users: list[str], blobs: list[bytes], events: Mapping[str, int] | None
) -> list[int]:
    """Each user's events count: ``events``'s, checked, or their delta's header's. Every blob
    is checked to be a ``.fldl`` either way."""
    counts = [delta_events(user, blob) for user, blob in zip(users, blobs, strict=True)]
    if events is None:
        return counts
    for user in users:
        if user not in events:
            raise ValueError(f"events has no count for user {user!r}")
        n_events = events[user]
        if not isinstance(n_events, int) or n_events < 0:
            raise ValueError(f"events[{user!r}] must be an int >= 0, got {n_events!r}")
    return [events[user] for user in users]


def commit_args(
    shard: int,
    n_shards: int,
    *,
    owner: str,
    group: str,
    deltas: Mapping[str, bytes],
    last_ids: Mapping[str, str | bytes | StreamId],
    entry_ids: Sequence[str | bytes | StreamId],
    log_entries: Sequence[Mapping[str, Any]],
    base: str,
    generation: int,
    events: Mapping[str, int] | None,
    gates: Mapping[str, bytes] | None = None,
    dead_letters: Sequence[deadletters.DeadLetter] = (),
) -> CommitArgs:
    """KEYS and ARGV of one commit, validated."""
    keys.check_id("owner", owner)
    keys.check_version(base)
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise ValueError(f"generation must be an int >= 0, got {generation!r}")
    ids = _plain_ids(entry_ids)
    if not ids and not deltas and not dead_letters:
        raise ValueError("commit_batch needs entry_ids or deltas (or dead_letters), got none")
    users = list(deltas)
    missing = [u for u in users if u not in last_ids]
    if missing:
        raise ValueError(
            f"last_ids has no entry for users {missing[:5]!r}; give the id of the "
            f"last event applied to each delta"
        )
    foreign = keys.foreign_user(shard, users, n_shards)
    if foreign is not None:
        raise ValueError(
            f"user {foreign!r} belongs to shard {keys.shard_of(foreign, n_shards)}, "
            f"not {shard}; commit each shard's users to that shard"
        )
    blobs = list(deltas.values())
    counts = [str(n) for n in _event_counts(users, blobs, events)]  # checks the blobs
    blobs = [bytes(blob) for blob in blobs]
    lasts = _plain_ids([last_ids[u] for u in users])
    gate_of = gates or {}
    user_gates = [bytes(gate_of.get(u, b"")) for u in users]
    commit_keys = [
        keys.lease(shard), keys.stream(shard), keys.applied(shard), keys.users(shard),
        keys.commit_token(shard), *map(keys.delta_prefix(shard).__add__, users),
        keys.dead_letters(shard),
    ]  # fmt: skip
    # Each user's five values in one msgpack array (Redis's Lua has cmsgpack): one argument
    # for redis-py to encode instead of five a user, each a few Python steps. Bytes go as
    # msgpack's raw strings (use_bin_type=False): Redis 6.2's cmsgpack predates bin types.
    rows = list(zip(users, blobs, lasts, counts, user_gates, strict=True))
    per_user = msgpack.packb(rows, use_bin_type=False)
    # The big arguments (the users' deltas, the batch's applied log: ~400 KB a batch) go as
    # memoryviews: redis-py then sends them as they are, where hiredis's pack_command copies
    # every argument into one buffer at about a nanosecond a byte (420 KB: ~0.7 ms of the
    # trainer's CPU a batch, ~0.9 us an event; BENCHMARKS.md, issue 12's fifth pass).
    logs = [memoryview(encode_entry(entry)) for entry in log_entries]
    dead = [value for letter in dead_letters for value in letter.args()]
    args = [
        owner, group, uuid.uuid4().hex, base, generation, len(users), len(ids), len(logs),
        memoryview(per_user), "\n".join(ids), *logs, deadletters.MAXLEN, *dead,
    ]  # fmt: skip
    return CommitArgs(commit_keys, args, len(users), len(logs))


def read_reply(shard: int, owner: str, built: CommitArgs, reply: list[Any]) -> CommitResult:
    """The ``CommitResult`` of a script reply, or the error it stands for."""
    status = reply[0]
    if status == b"OK":
        return CommitResult(built.users, int(reply[1]), built.logged)
    if status == b"DUP":
        return CommitResult(built.users, 0, built.logged, replayed=True)
    if status == b"LEASE":
        holder = reply[1].decode("utf-8", "replace") if len(reply) > 1 and reply[1] else None
        raise LeaseLostError(shard, owner, holder)
    if status == b"STALE":
        user, stored, new = (part.decode("utf-8", "replace") for part in reply[1:4])
        raise StaleCommitError(shard, user, stored, new)
    raise StoreError(f"shard {shard}: commit script answered {reply!r}")  # pragma: no cover
