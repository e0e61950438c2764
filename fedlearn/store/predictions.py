"""Prediction records awaiting their label: the feature/label join of ranking and feedback.

When the API ranks items it stores what it predicted under a ``prediction_id`` (the client
sends it back with the click/skip event). The trainer looks the record up when the event
arrives, so the event log holds the features and the score the user actually saw. Records
live in the user's shard (the id is joined with the event, which is routed by user) and
expire on their own: a label that never comes costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from fedlearn.store import keys
from fedlearn.store.entries import encode

MAX_TTL_S = 30 * 24 * 3600


class Predictions:
    """Store and look up prediction records by ``(shard, prediction_id)``."""

    def __init__(self, client: Any, n_shards: int) -> None:
        self._r = client
        self.n_shards = n_shards

    def put_predictions(
        self, shard: int, records: Mapping[str, Mapping[str, Any]], ttl_s: int
    ) -> None:
        """Store ``records`` (prediction_id -> JSON-able record), each expiring after
        ``ttl_s`` seconds; one round-trip. Storing an id again replaces its record."""
        keys.check_shard(shard, self.n_shards)
        if not isinstance(ttl_s, int) or isinstance(ttl_s, bool) or not 1 <= ttl_s <= MAX_TTL_S:
            raise ValueError(f"ttl_s must be an int in 1..{MAX_TTL_S} seconds, got {ttl_s!r}")
        encoded = []
        for pid, record in records.items():
            keys.check_id("prediction_id", pid)
            if not isinstance(record, Mapping):
                raise TypeError(f"records[{pid!r}] must be a mapping, got {type(record).__name__}")
            encoded.append((pid, record.get("user"), encode(record)))
        if not encoded:
            return
        pipe = self._r.pipeline(transaction=False)
        for pid, user, value in encoded:
            pipe.set(keys.prediction(shard, pid), value, ex=ttl_s)
            if isinstance(user, str):  # indexed by user, so forgetting the user finds them
                pipe.sadd(keys.predictions_of(shard, user), pid)
                pipe.expire(keys.predictions_of(shard, user), ttl_s)
        pipe.execute()

    def delete_user(self, shard: int, user: str) -> int:
        """Drop ``user``'s pending prediction records; returns how many existed."""
        keys.check_shard(shard, self.n_shards)
        keys.check_id("user", user)
        index = keys.predictions_of(shard, user)
        ids = [i.decode() if isinstance(i, bytes) else i for i in self._r.smembers(index)]
        if not ids:
            return 0
        deleted = int(self._r.delete(*(keys.prediction(shard, pid) for pid in ids)))
        self._r.delete(index)
        return deleted

    def get_predictions(self, shard: int, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The records of ``ids`` that exist and have not expired (others are absent)."""
        keys.check_shard(shard, self.n_shards)
        ids = list(dict.fromkeys(ids))
        for pid in ids:
            keys.check_id("prediction_id", pid)
        if not ids:
            return {}
        pipe = self._r.pipeline(transaction=False)
        for pid in ids:
            pipe.get(keys.prediction(shard, pid))
        return {
            pid: orjson.loads(raw)
            for pid, raw in zip(ids, pipe.execute(), strict=True)
            if raw is not None
        }
