"""Prediction records awaiting their label: the feature/label join of ranking and feedback.

When the API ranks items it stores what it predicted under a ``prediction_id`` (the client
sends it back with the click/skip event). The trainer looks the record up when the event
arrives, so the event log holds the features and the score the user actually saw.

A record is bound to its user: all of a user's records live in one hash of the user's shard,
and a lookup names the user, so an event naming another user's ``prediction_id`` finds
nothing. A user's records are bounded by a quota (a count and a number of bytes): storing a
new one drops the oldest first, in the same script, so one token cannot grow Redis beyond its
share however often it ranks. Records also expire on their own: a label that never comes
costs nothing.

Stored form (orjson): the features every candidate shares (the user and the context) are kept
once, under ``shared``, and each item keeps only its own: ``{"user", "base_version",
"created_at", "expires_at", "shared": {...}, "items": {item: {"features": {...}, "score"}}}``.
Reads hand back each item's whole feature dict again, as it was scored.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from fedlearn.store import keys
from fedlearn.store.entries import encode
from fedlearn.store.errors import StoreError
from fedlearn.store.scripts import GET_PREDICTIONS, PUT_PREDICTION, run_many

MAX_TTL_S = 30 * 24 * 3600


class PredictionTooLargeError(StoreError):
    """One record alone is larger than a user's whole quota; nothing was written."""

    def __init__(self, size: int, max_bytes: int) -> None:
        self.size = size
        self.max_bytes = max_bytes
        super().__init__(
            f"the prediction record is {size} bytes, more than the {max_bytes} bytes a user may "
            f"keep; rank fewer candidates or send fewer features per request"
        )


@dataclass(frozen=True, slots=True)
class PredictionQuota:
    """How much one user may keep: at most ``max_records`` records of ``max_bytes`` in all."""

    max_records: int
    max_bytes: int

    def __post_init__(self) -> None:
        for name in ("max_records", "max_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")


def compact(record: Mapping[str, Any], ttl_s: int) -> dict[str, Any]:
    """The stored form of a record: the features every item shares kept once, an expiry."""
    items = record.get("items") or {}
    samples = [scored["features"] for scored in items.values()]
    shared = dict(samples[0]) if samples else {}
    for features in samples[1:]:
        shared = {k: v for k, v in shared.items() if k in features and features[k] == v}
    created_at = float(record.get("created_at") or time.time())
    return {
        **record,
        "created_at": created_at,
        "expires_at": created_at + ttl_s,
        "shared": shared,
        "items": {
            item: {
                **scored,
                "features": {k: v for k, v in scored["features"].items() if k not in shared},
            }
            for item, scored in items.items()
        },
    }


def expand(record: dict[str, Any]) -> dict[str, Any]:
    """The read form: each item's features whole again (its own plus the shared ones)."""
    shared = record.pop("shared", {})
    for scored in record["items"].values():
        scored["features"] = {**scored["features"], **shared}
    return record


def _found(asked: list[tuple[str, str]], records: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """The records of a ``GET_PREDICTIONS`` reply that are their user's and unexpired."""
    now = time.time()
    found = {}
    for (pid, user), raw in zip(asked, records, strict=True):
        record = orjson.loads(raw) if raw is not None else None
        # the hash expires as a whole, so a record past its own TTL may linger in it
        if record and record.get("user") == user and record.get("expires_at", 0) > now:
            found[pid] = expand(record)
    return found


class Predictions:
    """Store and look up prediction records by ``(shard, user, prediction_id)``."""

    def __init__(self, client: Any, n_shards: int) -> None:
        self._r = client
        self.n_shards = n_shards
        self._put = client.register_script(PUT_PREDICTION)
        self._get = client.register_script(GET_PREDICTIONS)

    def _check(self, shard: int, user: str) -> None:
        keys.check_shard(shard, self.n_shards)
        keys.check_id("user", user)

    def put_predictions(
        self,
        shard: int,
        records: Mapping[str, Mapping[str, Any]],
        ttl_s: int,
        *,
        quota: PredictionQuota,
    ) -> int:
        """Store ``records`` (prediction_id -> ``{"user", "base_version", "created_at",
        "items": {item: {"features", "score"}}}``), each expiring after ``ttl_s`` seconds,
        dropping each user's oldest records until ``quota`` holds (one script per record).

        Returns how many older records were dropped. Raises :class:`PredictionTooLargeError`
        when a record alone exceeds ``quota.max_bytes`` (that record is not written).
        """
        keys.check_shard(shard, self.n_shards)
        if not isinstance(ttl_s, int) or isinstance(ttl_s, bool) or not 1 <= ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttl_s must be an int in 1..{MAX_TTL_S} seconds, got {ttl_s!r}")
        dropped = 0
        for pid, record in records.items():
            keys.check_id("prediction_id", pid)
            if not isinstance(record, Mapping):
                raise TypeError(f"records[{pid!r}] must be a mapping, got {type(record).__name__}")
            user = keys.check_id(f"records[{pid!r}]['user']", record.get("user"))
            if keys.shard_of(user, self.n_shards) != shard:
                raise ValueError(f"user {user!r} of records[{pid!r}] is not in shard {shard}")
            status, number = self._put(
                keys=[keys.predictions_of(shard, user), keys.prediction_order(shard, user)],
                args=[pid, encode(compact(record, ttl_s)), int(time.time() * 1000),
                      ttl_s * 1000, quota.max_records, quota.max_bytes],
            )  # fmt: skip
            if status in (b"TOO_BIG", "TOO_BIG"):
                raise PredictionTooLargeError(int(number), quota.max_bytes)
            dropped += int(number)
        return dropped

    def delete_user(self, shard: int, user: str) -> int:
        """Drop ``user``'s pending prediction records; returns how many existed."""
        self._check(shard, user)
        pipe = self._r.pipeline(transaction=False)
        pipe.hlen(keys.predictions_of(shard, user))
        pipe.delete(keys.predictions_of(shard, user), keys.prediction_order(shard, user))
        count, _ = pipe.execute()
        return int(count)

    def get_predictions(
        self, shard: int, wanted: Sequence[tuple[str, str]]
    ) -> dict[str, dict[str, Any]]:
        """The records of the ``(prediction_id, user)`` pairs that are that user's own and have
        not expired (others are absent), keyed by prediction id.

        An id named by several users in one call is returned to none of them: the caller
        keys the answer by id alone, so the owner's record would otherwise reach the others
        (the owner's event then trains on the event's own features).
        """
        return self.get_predictions_many({shard: wanted})[shard]

    def get_predictions_many(
        self, wanted: Mapping[int, Sequence[tuple[str, str]]]
    ) -> dict[int, dict[str, dict[str, Any]]]:
        """:meth:`get_predictions` of several shards (shard -> pairs) in one round trip: a
        trainer's pass over the shards it owns."""
        calls, asked_of = [], []
        for shard, pairs in wanted.items():
            asked = self._asked(shard, pairs)
            if asked:
                shard_keys = [keys.predictions_of(shard, user) for _, user in asked]
                calls.append((self._get, shard_keys, [pid for pid, _ in asked]))
                asked_of.append((shard, asked))
        found: dict[int, dict[str, dict[str, Any]]] = {shard: {} for shard in wanted}
        for (shard, asked), records in zip(asked_of, run_many(self._r, calls), strict=True):
            if isinstance(records, Exception):
                raise records
            found[shard] = _found(asked, records)
        return found

    def _asked(self, shard: int, wanted: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """The ``(prediction_id, user)`` pairs to look up: each id named by one user only."""
        keys.check_shard(shard, self.n_shards)
        owners: dict[str, set[str]] = {}
        for pid, user in set(wanted):  # a batch names a ranking once per event shown
            keys.check_id("prediction_id", pid)
            keys.check_id("user", user)
            owners.setdefault(pid, set()).add(user)
        return [(pid, users.pop()) for pid, users in owners.items() if len(users) == 1]
