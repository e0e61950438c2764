"""Shards and Redis key names: the only place that spells a key.

Every key of one shard carries the hash tag ``{s<shard>}``, so all of a shard's keys live in
one Redis Cluster slot and one Lua script may touch them together (stream, deltas, lease,
applied log). The global keys of base versions carry the tag ``{base}`` for the same reason:
publishing a version and appending it to the history is one atomic script.

Key map (shard 3, user "42"):

=============================  =====================================================
``fl:{s3}:stream``             the shard's ingest stream (field ``e`` = orjson event)
``fl:{s3}:applied``            processed events with their prediction (log tail)
``fl:{s3}:delta:42``           hash: ``delta`` ``last_event`` ``base`` ``generation``
                               ``events``
``fl:{s3}:users``              set of the users that have a delta in the shard
``fl:{s3}:seen:<day>``         set of event ids seen that UTC day (dedupe window)
``fl:{s3}:lease``              the owner token of the shard's trainer (PX expiry)
``fl:{s3}:commit``             the token of the last commit (makes a retried commit a no-op)
``fl:{s3}:preds:42``           hash: prediction id -> record awaiting its label (PX expiry)
``fl:{s3}:predq:42``           the user's prediction ids by creation time (oldest dropped first)
``fl:{s3}:rate:events:42``     the user's ingest rate limit (GCRA; also ``rate:rank:42``)
``fl:{s3}:revoked:42``         when the user was forgotten: older tokens are refused (EX)
``fl:{s3}:dead``               dead letters: entries and records set aside, with the reason
``fl:{s3}:rebase:<version>``   hash user -> ``<stream id before>|<share JSON>``: the rebases
                               promoting ``<version>`` sent to the shard (``Streams``)
``fl:{s3}:snap``               hash user -> the user's snapshot at their last contribution
``fl:{s3}:cand:r1:a``          snapshot candidates of attempt ``a`` of round ``r1``
``fl:{s3}:rcand:r1``           the winning candidates of round ``r1`` rebased (promoted)
``fl:{s3}:part:r1``            a round's partial result on the shard (winning attempt, blobs)
``fl:{s3}:archive:<gen>``      the users' last deltas of a generation (monthly retrain)
``fl:{base}:blob:<version>``   an immutable base file (``.flfm`` bytes)
``fl:{base}:current``          the current base version id
``fl:{base}:history``          list of JSON ``{"version", "meta", "created_at"}``
``fl:{base}:pruned``           hash version -> when its blob was pruned (retention)
``fl:{base}:config``           hash of service-wide settings (``n_shards``: the count)
``fl:{rounds}:lock``           the running round's id (PX expiry): one round at a time
``fl:{rounds}:round:r1``       hash: ``status`` and JSON fields (config, result, ...)
``fl:{rounds}:index``          sorted set of round ids by creation time; ``open``: unfinished
``fl:{rounds}:momentum:<v>``   FedAvgM's momentum buffer after publishing version ``v``
``fl:trainers``                sorted set of live trainers by heartbeat time
``fl:{items}:features``        hash item -> features (JSON); ``fl:{items}:titles``: titles
``fl:{items}:version``         how many times the catalog was replaced (``catalog load``)
``fl:{items}:staging:<t>:...`` a catalog being written, renamed into place when complete
``fl:{telemetry}:trainer:<o>`` trainer ``<o>``'s latest metrics snapshot (JSON, EX expiry)
``fl:{telemetry}:trainers``    sorted set owner -> time of its latest snapshot (ms)
``fl:{drift}:events``          drift events with the actions they caused (bounded stream)
``fl:{drift}:gate:<action>``   held while ``<action>`` may not run again (PX expiry)
``fl:{ope}:served_greedy``     the latest served-vs-greedy estimate for the dashboard (JSON)
=============================  =====================================================

The trainers' snapshot keys share the tag ``{telemetry}``, so one MGET reads every snapshot on
a Redis Cluster.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

PREFIX = "fl"
MAX_SHARDS = 16384  # one per Redis Cluster slot is the most that can be spread
MAX_ID_LEN = 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_VERSION = re.compile(r"[A-Za-z0-9._:+-]{1,128}")


def shard_of(user: str, n_shards: int) -> int:
    """The shard of ``user``: CRC-32 (IEEE, as zlib and every language have it) of the UTF-8
    user id, modulo ``n_shards``. Stable across processes, machines and languages."""
    check_n_shards(n_shards)
    check_id("user", user)
    return zlib.crc32(user.encode("utf-8")) % n_shards


def foreign_user(shard: int, users: Sequence[str], n_shards: int) -> str | None:
    """The first of ``users`` that is not of ``shard`` (None when all are), checking that each
    is an id as :func:`check_id` does (and raising as it does). In bulk: one pass of the
    control-character regex over all of them and their CRC-32s through ``map``, rather than
    :func:`shard_of` per user (a trainer's commit names ~50 users a batch)."""
    check_n_shards(n_shards)
    try:
        joined = "".join(users)
        ok = min(map(len, users)) > 0 and max(map(len, users)) <= MAX_ID_LEN
    except (TypeError, ValueError):  # not all strings, or no users
        ok = not users
        joined = ""
    if not ok or _CONTROL.search(joined):
        for user in users:
            check_id("user", user)
    crcs = map(zlib.crc32, map(str.encode, users))
    return next((u for u, c in zip(users, crcs, strict=True) if c % n_shards != shard), None)


def check_n_shards(n_shards: int) -> None:
    if not isinstance(n_shards, int) or isinstance(n_shards, bool):
        raise TypeError(f"n_shards must be an int, got {n_shards!r}")
    if not 1 <= n_shards <= MAX_SHARDS:
        raise ValueError(f"n_shards must be between 1 and {MAX_SHARDS}, got {n_shards}")


def check_shard(shard: int, n_shards: int) -> None:
    """Raise unless ``shard`` is one of ``0 .. n_shards - 1``."""
    if not isinstance(shard, int) or isinstance(shard, bool) or not 0 <= shard < n_shards:
        raise ValueError(f"shard must be an int in 0..{n_shards - 1}, got {shard!r}")


def check_id(what: str, value: object) -> str:
    """``value`` if it is an id as CONTRACTS.md defines ids (a non-empty string of at most 128
    characters without control characters), else an error naming ``what`` and the value."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__} {value!r}")
    if not value or len(value) > MAX_ID_LEN:
        raise ValueError(f"{what} must be 1..{MAX_ID_LEN} characters, got {len(value)}: {value!r}")
    if _CONTROL.search(value):
        raise ValueError(f"{what} must not contain control characters, got {value!r}")
    return value


def check_version(version: str) -> None:
    """Base version ids go into URLs and file names: letters, digits and ``._:+-`` only."""
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise ValueError(
            f"base version must be 1..128 characters of letters, digits and '._:+-', "
            f"got {version!r}"
        )


def tag(shard: int) -> str:
    """The hash tag of a shard, ``{s3}``."""
    return f"{{s{shard}}}"


# --- per-shard keys --------------------------------------------------------------------------


def stream(shard: int) -> str:
    return f"{PREFIX}:{tag(shard)}:stream"


def applied(shard: int) -> str:
    return f"{PREFIX}:{tag(shard)}:applied"


def delta(shard: int, user: str) -> str:
    return f"{PREFIX}:{tag(shard)}:delta:{user}"


def delta_prefix(shard: int) -> str:
    """``delta(shard, user) == delta_prefix(shard) + user``."""
    return f"{PREFIX}:{tag(shard)}:delta:"


def users(shard: int) -> str:
    return f"{PREFIX}:{tag(shard)}:users"


def seen(shard: int, day: int) -> str:
    return f"{PREFIX}:{tag(shard)}:seen:{day}"


def lease(shard: int) -> str:
    return f"{PREFIX}:{tag(shard)}:lease"


def commit_token(shard: int) -> str:
    return f"{PREFIX}:{tag(shard)}:commit"


def rebase_notes(shard: int, version: str) -> str:
    """The rebase entries that promoting ``version`` sent to ``shard`` (``Streams.rebase``)."""
    return f"{PREFIX}:{tag(shard)}:rebase:{version}"


def dead_letters(shard: int) -> str:
    """The shard's dead-letter stream (``store.deadletters``)."""
    return f"{PREFIX}:{tag(shard)}:dead"


def predictions_of(shard: int, user: str) -> str:
    """The hash of a user's pending prediction records (id -> record): a lookup names the
    user, so an id is only ever found among its own user's records."""
    return f"{PREFIX}:{tag(shard)}:preds:{user}"


def prediction_order(shard: int, user: str) -> str:
    """The user's prediction ids scored by creation time: the oldest is dropped first."""
    return f"{PREFIX}:{tag(shard)}:predq:{user}"


RATE_KINDS = ("events", "rank")


def rate(shard: int, kind: str, user: str) -> str:
    """The GCRA state of ``user``'s ``kind`` limit (``events`` or ``rank``)."""
    if kind not in RATE_KINDS:
        raise ValueError(f"rate limit kind must be one of {RATE_KINDS}, got {kind!r}")
    return f"{PREFIX}:{tag(shard)}:rate:{kind}:{user}"


def revoked(shard: int, user: str) -> str:
    """When ``user`` was forgotten (seconds since the epoch): tokens issued before are void."""
    return f"{PREFIX}:{tag(shard)}:revoked:{user}"


# --- global keys (one slot, tag {base}) ------------------------------------------------------

BASE_TAG = "{base}"


def base_blob(version: str) -> str:
    return f"{PREFIX}:{BASE_TAG}:blob:{version}"


def base_current() -> str:
    return f"{PREFIX}:{BASE_TAG}:current"


def base_history() -> str:
    return f"{PREFIX}:{BASE_TAG}:history"


def base_pruned() -> str:
    """Hash version -> unix time its blob was deleted by retention: the id stays taken."""
    return f"{PREFIX}:{BASE_TAG}:pruned"


def config() -> str:
    return f"{PREFIX}:{BASE_TAG}:config"


# --- the item catalog (one slot, tag {items}: a replacement is renamed into place at once) -------

ITEMS_TAG = "{items}"


def _items(part: str, staging: str | None) -> str:
    where = f"staging:{staging}:" if staging else ""
    return f"{PREFIX}:{ITEMS_TAG}:{where}{part}"


def item_features(staging: str | None = None) -> str:
    """Hash item id -> the item's features as JSON (``store.items``); with ``staging``, the
    one a replacement is being written to."""
    return _items("features", staging)


def item_titles(staging: str | None = None) -> str:
    """Hash item id -> the item's title (``store.items``)."""
    return _items("titles", staging)


def items_version() -> str:
    return f"{PREFIX}:{ITEMS_TAG}:version"


# --- trainers' telemetry snapshots (one slot, tag {telemetry}) ---------------------------------

TELEMETRY_TAG = "{telemetry}"


def trainer_snapshot(owner: str) -> str:
    """Trainer ``owner``'s latest metrics snapshot (``store.telemetry``)."""
    return f"{PREFIX}:{TELEMETRY_TAG}:trainer:{owner}"


def trainer_snapshots() -> str:
    """The live trainers: a sorted set of owner -> time of its latest snapshot (ms)."""
    return f"{PREFIX}:{TELEMETRY_TAG}:trainers"


# --- aggregation rounds (``store.rounds``): one slot for the global ones ----------------------
ROUNDS_TAG = "{rounds}"


def round_lock() -> str:
    """The running round's id (PX expiry): one round at a time."""
    return f"{PREFIX}:{ROUNDS_TAG}:lock"


def round_record(round_id: str) -> str:
    """Hash: ``status`` and JSON fields (config, result, ...)."""
    return f"{PREFIX}:{ROUNDS_TAG}:round:{round_id}"


def round_index() -> str:
    """Sorted set of round ids by creation time."""
    return f"{PREFIX}:{ROUNDS_TAG}:index"


def rounds_open() -> str:
    """Set of the rounds not finished (queued .. published)."""
    return f"{PREFIX}:{ROUNDS_TAG}:open"


def round_shares(version: str) -> str:
    """How the round that published ``version`` maps a user's change to its share."""
    return f"{PREFIX}:{ROUNDS_TAG}:shares:{version}"


def round_momentum(version: str) -> str:
    """FedAvgM's momentum buffer after publishing ``version``."""
    return f"{PREFIX}:{ROUNDS_TAG}:momentum:{version}"


def snapshots(shard: int) -> str:
    """Hash user -> the user's snapshot at their last contribution (``aggregate.snapshots``)."""
    return f"{PREFIX}:{tag(shard)}:snap"


def candidates(shard: int, round_id: str, attempt: str) -> str:
    """Hash user -> snapshot candidate written by one map attempt of a round."""
    return f"{PREFIX}:{tag(shard)}:cand:{round_id}:{attempt}"


def rebased_candidates(shard: int, round_id: str) -> str:
    """Hash user -> the round's winning candidate rebased on its version (what is promoted)."""
    return f"{PREFIX}:{tag(shard)}:rcand:{round_id}"


def partial(shard: int, round_id: str) -> str:
    """Hash: a round's winning map attempt on the shard, its meta, bucket blobs, norms."""
    return f"{PREFIX}:{tag(shard)}:part:{round_id}"


def archive(shard: int, generation: int) -> str:
    """Hash user -> the user's last delta of ``generation`` (kept by the monthly retrain)."""
    return f"{PREFIX}:{tag(shard)}:archive:{generation}"


# --- service-wide sets without a slot of their own -----------------------------------------


def trainer_members() -> str:
    """Sorted set of live trainers by heartbeat time (``store.members``)."""
    return f"{PREFIX}:trainers"


# --- drift events and the throttles of their actions (one slot, tag {drift}) ------------------

DRIFT_TAG = "{drift}"


def drift_events() -> str:
    """The drift events the trainers detected, each with the actions it caused (a stream)."""
    return f"{PREFIX}:{DRIFT_TAG}:events"


def drift_gate(action: str) -> str:
    """Exists while ``action`` (``early_round``, ``retrain``) may not be taken again."""
    return f"{PREFIX}:{DRIFT_TAG}:gate:{action}"


# --- off-policy estimates for the dashboard (one slot, tag {ope}) ------------------------------

OPE_TAG = "{ope}"


def ope_served_greedy() -> str:
    """The latest estimate of the served policy's and greedy's click rate (JSON string)."""
    return f"{PREFIX}:{OPE_TAG}:served_greedy"
