"""The item catalog in Redis: item id -> title and named features.

The API ranks with it, the trainer builds an event's features from it, the demo page lists it.
One hash for the features and one for the titles, both tagged ``{items}`` (one cluster slot).
:meth:`Catalog.replace` writes a whole new catalog beside the live one and renames it into
place in one script, so readers never see half of it, and counts the catalog's versions.
Small catalogs (the demo, tests) are read whole; big ones item by item.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from fedlearn.store import keys
from fedlearn.store.scripts import Scripts

_CHUNK = 1000


class Catalog:
    """Put and read items' features and titles."""

    def __init__(self, client: Any, scripts: Scripts | None = None) -> None:
        self._r = client
        self._scripts = scripts

    def put_items(self, items: Mapping[str, Mapping[str, Any]]) -> int:
        """Add or overwrite ``items`` (id -> ``{"title": str?, "features": {name: number}}``)
        in the live catalog; the others stay."""
        self._write(keys.item_features(), keys.item_titles(), items)
        return len(items)

    def replace(self, items: Mapping[str, Mapping[str, Any]]) -> int:
        """Make ``items`` the whole catalog, atomically; returns its new version (1, 2, ...).

        Written under staging keys first (a crash leaves only those, never a mixed catalog)."""
        if not items:
            raise ValueError("a catalog needs at least one item; nothing was changed")
        if self._scripts is None:
            self._scripts = Scripts.register(self._r)
        token = secrets.token_hex(6)
        staged = (keys.item_features(token), keys.item_titles(token))
        try:
            self._write(*staged, items)
            swap = [*staged, keys.item_features(), keys.item_titles(), keys.items_version()]
            return int(self._scripts.swap_catalog(keys=swap))
        finally:
            self._r.delete(*staged)  # gone already after the swap; left over after an error

    def version(self) -> int:
        """How many times the catalog was replaced (0: never, e.g. only the demo's items)."""
        return int(self._r.get(keys.items_version()) or 0)

    def _write(
        self, features_key: str, titles_key: str, items: Mapping[str, Mapping[str, Any]]
    ) -> None:
        features, titles = {}, {}
        for item, record in items.items():
            keys.check_id("item", item)
            features[item] = orjson.dumps(dict(record.get("features") or {}))
            if record.get("title"):
                titles[item] = str(record["title"])
        pipe = self._r.pipeline(transaction=False)
        for key, table in ((features_key, features), (titles_key, titles)):
            rows = list(table.items())
            for start in range(0, len(rows), _CHUNK):
                pipe.hset(key, mapping=dict(rows[start : start + _CHUNK]))
        pipe.execute()

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
