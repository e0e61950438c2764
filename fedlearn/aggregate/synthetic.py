"""Users' deltas made up and written straight to Redis, as trainers would have written them.

For benchmarks and tests of aggregation at sizes the trainers would take long to produce:
:func:`random_deltas` draws deltas of realistic shape (a user's item rows, a few context rows,
the user's own row) and :func:`write_deltas` commits them through the store's own commit
script, shard by shard, holding each shard's lease for the moment of the write;
:func:`publish` makes a base the current version, as a round expects to find it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedlearn.model import Base, Delta
from fedlearn.store import Store, StreamId, new_owner_token

LEASE_MS = 30_000


def publish(store: Store, base: Base, meta: Mapping[str, Any] | None = None) -> Base:
    """Store ``base`` under its version (with ``meta``) and make it current; returns it."""
    store.bases.put_base(base.version, base.to_bytes(), dict(meta or {}))
    store.bases.set_current(base.version)
    return base


def write_deltas(
    store: Store,
    deltas: Mapping[str, Delta],
    *,
    base: str,
    generation: int = 0,
    batch: int = 500,
) -> int:
    """Commit ``deltas`` (user -> delta) as the users' clones on ``base``; returns how many.

    Each user's ``last_event`` moves past the stored one (as if new events were applied), and
    its event count is the delta's ``n_events``. Fails if a trainer holds a shard's lease.
    """
    by_shard: dict[int, list[str]] = {}
    for user in deltas:
        by_shard.setdefault(store.shard_of(user), []).append(user)
    owner = new_owner_token("synthetic")
    now = StreamId(int(time.time() * 1000), 0)
    for shard, users in sorted(by_shard.items()):
        if not store.leases.acquire(shard, owner, LEASE_MS):
            raise RuntimeError(
                f"shard {shard}: lease is held by {store.leases.holder(shard)!r}; stop the "
                f"trainers before writing synthetic deltas"
            )
        try:
            for start in range(0, len(users), batch):
                chunk = users[start : start + batch]
                stored = store.deltas.get_many(shard, chunk)
                last = {
                    u: str(max(now, stored[u].last_event.next()) if u in stored else now)
                    for u in chunk
                }
                store.streams.commit_batch(
                    shard,
                    owner=owner,
                    deltas={u: deltas[u].to_bytes() for u in chunk},
                    last_ids=last,
                    entry_ids=[],
                    base=base,
                    generation=generation,
                )
        finally:
            store.leases.release(shard, owner)
    return len(deltas)


def random_deltas(
    rng: np.random.Generator,
    n_users: int,
    *,
    n_factors: int = 10,
    n_items: int = 5000,
    rows: tuple[int, int] = (20, 50),
    scale: float = 0.05,
    prefix: str = "u",
) -> dict[str, Delta]:
    """``n_users`` deltas of ``rows[0]..rows[1]`` rows each: mostly ``item=`` rows (popular
    items more often), a few ``hour=`` rows and the user's own row, values ~ N(0, scale)."""
    # Drawn for all users at once, by inverting the cumulative popularity: rng.choice(p=...)
    # per user rebuilds it each time, O(n_items), hours for a million users on 1M items.
    cumulative = np.cumsum(1.0 / np.arange(1, n_items + 1) ** 0.8)
    n_item_rows = np.maximum(rng.integers(rows[0], rows[1] + 1, size=n_users) - 4, 1)
    draws = np.searchsorted(cumulative, rng.random(int(n_item_rows.sum())) * cumulative[-1])
    per_user = np.split(np.minimum(draws, n_items - 1), np.cumsum(n_item_rows)[:-1])
    hours = rng.random((n_users, 24)).argsort(axis=1)[:, :3]  # 3 distinct hours per user
    out: dict[str, Delta] = {}
    for u, (items, user_hours) in enumerate(zip(per_user, hours.tolist(), strict=True)):
        user = f"{prefix}{u}"
        names = [f"item={i}" for i in np.unique(items).tolist()]
        names += [f"hour={h}" for h in user_hours] + [f"user={user}"]
        delta = Delta(n_factors)
        idx = delta.rows_of(names)
        delta._w[idx] = rng.normal(0.0, scale, len(names))
        delta._v[idx] = rng.normal(0.0, scale, (len(names), n_factors))
        delta.w0 = float(rng.normal(0.0, scale))
        delta.n_events = int(rng.integers(1, 60))
        out[user] = delta
    return out
