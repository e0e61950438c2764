"""The item catalog in Redis: item id -> title and named features.

The API ranks with it, the trainer builds an event's features from it, the demo page lists it.
One hash for the features and one for the titles (global keys; single-key commands only, so a
cluster is fine). Small catalogs (the demo, tests) are read whole; big ones item by item.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from fedlearn.store import keys


class Catalog:
    """Put and read items' features and titles."""

    def __init__(self, client: Any) -> None:
        self._r = client

    def put_items(self, items: Mapping[str, Mapping[str, Any]]) -> int:
        """Store ``items`` (id -> ``{"title": str?, "features": {name: number}}``)."""
        features, titles = {}, {}
        for item, record in items.items():
            keys.check_id("item", item)
            features[item] = orjson.dumps(dict(record.get("features") or {}))
            if record.get("title"):
                titles[item] = str(record["title"])
        pipe = self._r.pipeline(transaction=False)
        for start in range(0, len(features), 1000):
            chunk = dict(list(features.items())[start : start + 1000])
            pipe.hset(keys.item_features(), mapping=chunk)
        for start in range(0, len(titles), 1000):
            pipe.hset(keys.item_titles(), mapping=dict(list(titles.items())[start : start + 1000]))
        pipe.execute()
        return len(features)

    def features(self, items: Sequence[str]) -> dict[str, dict[str, float]]:
        """Features of the ``items`` that are in the catalog."""
        items = list(dict.fromkeys(items))
        if not items:
            return {}
        raw = self._r.hmget(keys.item_features(), items)
        return {item: orjson.loads(r) for item, r in zip(items, raw, strict=True) if r is not None}

    def count(self) -> int:
        return int(self._r.hlen(keys.item_features()))

    def page(self, limit: int, cursor: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Up to about ``limit`` items ``{id, title, features}`` and the next HSCAN cursor."""
        cursor, raw = self._r.hscan(keys.item_features(), cursor, count=limit)
        ids = list(raw)[:limit]
        titles = self._r.hmget(keys.item_titles(), ids) if ids else []
        items = [
            {
                "id": i.decode(),
                "title": (t.decode() if t else i.decode()),
                "features": orjson.loads(raw[i]),
            }
            for i, t in zip(ids, titles, strict=True)
        ]
        return items, int(cursor)
