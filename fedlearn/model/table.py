"""Many users' deltas decoded into one table of rows: the trainer's working copy of a shard.

A :class:`Delta` per user made every batch pay a handful of numpy calls per user to gather
that user's rows into the update's workspace and write them back (most of the trainer's CPU:
a benchmark batch of 1,000 events touches ~600 users). Here every owned user's rows live in
one float32 table; a user is a dict ``feature name -> row`` (in recency order, least recently
used first, as a delta's ``index``), an intercept and an event count. A batch resolves its
events' features to rows in one pass, gathers all the rows it uses with one fancy index,
runs the compiled update (``kernel.test_then_train``) and scatters them back with another.
The base's row of each table row is kept beside it (refilled when the base version changes),
so the base is not looked up again for every batch.

:meth:`DeltaTable.learn` is :func:`fedlearn.model.batch.learn_many_shadow` over this layout:
the same kernel, the same float64 workspace stored back as float32, the same recency order and
row cap; ``tests/test_model_table.py`` holds the two to the same bytes. Users leave the table
whole (:meth:`drop`); freed rows are zeroed and reused, so the table is as big as the rows of
the users it holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import chain, islice
from operator import attrgetter, methodcaller
from typing import Any

import numpy as np

from fedlearn.model.base import Base
from fedlearn.model.batch import pad_flat, row_scales, user_index
from fedlearn.model.delta import Delta, DeltaRows, pack_delta

LabelledEvent = tuple[str, Mapping[str, float], int]
UserIndex = tuple[list[str], np.ndarray]  # batch.user_index: the users, each event's user
_FLOAT32 = np.dtype("<f4")  # the .fldl format's type: a gathered row block is written as is
_VALUES = methodcaller("values")
_W0 = attrgetter("w0")


class UserRows:
    """One user's part of the table: ``rows`` maps a feature to its table row, least recently
    used first; ``w0`` is the intercept's delta and ``n_events`` the events learned."""

    __slots__ = ("n_events", "rows", "w0")

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.w0 = 0.0
        self.n_events = 0


class DeltaTable:
    """The deltas of many users (``n_factors`` latents each) as one table of rows."""

    def __init__(self, n_factors: int, capacity: int = 1024) -> None:
        self.n_factors = int(n_factors)
        self.users: dict[str, UserRows] = {}
        self.params = np.zeros((capacity, 1 + self.n_factors), _FLOAT32)  # delta [w, v]
        self.base_params = np.zeros((capacity, 1 + self.n_factors))  # the base's [w, v]
        self.has_base = np.zeros(capacity, dtype=bool)
        self.base_version: str | None = None
        self.names: list[str | None] = [None] * capacity
        self.free = list(range(capacity - 1, -1, -1))  # popped from the end: low rows first

    def __contains__(self, user: object) -> bool:
        return user in self.users

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_rows(self) -> int:
        """Rows in use (every user's rows)."""
        return len(self.names) - len(self.free)

    # -- users in and out -------------------------------------------------------------------

    def put(self, user: str, delta: Delta) -> None:
        """Hold ``delta`` as ``user``'s (replacing what the table held for them)."""
        names, source = delta._recency_order()
        self.put_rows(
            user, DeltaRows(names, delta._w[source], delta._v[source], delta.w0, delta.n_events)
        )

    def put_rows(self, user: str, rows: DeltaRows) -> None:
        """Hold ``rows`` (a decoded ``.fldl``, ``delta.decode_rows``) as ``user``'s delta: what
        a trainer loads goes into the table without a :class:`Delta` in between."""
        self.drop(user)
        entry = self.users[user] = UserRows()
        entry.w0, entry.n_events = float(rows.w0), int(rows.n_events)
        if not rows.names:
            return
        at = self._alloc_many(rows.names)
        entry.rows = dict(zip(rows.names, at, strict=True))
        self.params[at, 0] = rows.w
        self.params[at, 1:] = rows.v

    def delta(self, user: str) -> Delta:
        """``user``'s delta as a :class:`Delta` of its own (float32; empty for a user the table
        does not hold). Changing it does not change the table."""
        out = Delta(self.n_factors)
        entry = self.users.get(user)
        if entry is None or not entry.rows:
            if entry is not None:
                out.w0, out.n_events = entry.w0, entry.n_events
            return out
        at = np.fromiter(entry.rows.values(), np.int64, len(entry.rows))
        out.names = list(entry.rows)
        out.index = {name: row for row, name in enumerate(out.names)}
        out._w = self.params[at, 0].astype(np.float32)
        out._v = self.params[at, 1:].astype(np.float32)
        out.w0, out.n_events = entry.w0, entry.n_events
        return out

    def events_of(self, user: str) -> int:
        entry = self.users.get(user)
        return 0 if entry is None else entry.n_events

    def drop(self, user: str) -> None:
        """Let go of ``user`` (evicted from the cache, or erased); their rows are freed."""
        entry = self.users.pop(user, None)
        if entry is not None:
            self._release(entry.rows.values())

    def reset(self, user: str) -> None:
        """Restart ``user`` from the base: no rows, no intercept, no events."""
        self.drop(user)
        self.users[user] = UserRows()

    def to_bytes_many(self, users: Sequence[str]) -> dict[str, bytes]:
        """The ``.fldl`` bytes of each of ``users``, from one gather of all their rows."""
        entries = [self.users[user] for user in users]
        counts = [len(entry.rows) for entry in entries]
        at = np.fromiter(
            chain.from_iterable(entry.rows.values() for entry in entries), np.int64, sum(counts)
        )
        block = self.params[at]
        # memoryviews: each user's slice of the gathered rows is not copied before the join
        w, v = memoryview(block[:, 0].tobytes()), memoryview(block[:, 1:].tobytes())
        out, start, k = {}, 0, self.n_factors
        for user, entry, count in zip(users, entries, counts, strict=True):
            end = start + count
            out[user] = pack_delta(
                entry.rows, k, entry.w0, entry.n_events,
                w[4 * start : 4 * end], v[4 * k * start : 4 * k * end],
            )  # fmt: skip
            start = end
        return out

    # -- learning ---------------------------------------------------------------------------

    def learn(
        self, base: Base, events: Sequence[LabelledEvent], *hyper: Any, **levers: Any
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """:meth:`learn_columns` with the events as ``(user, features, label)`` tuples, the
        form ``learn_many_shadow`` takes (``tests/test_model_table.py`` holds the two to the
        same bytes)."""
        labels = np.fromiter((e[2] for e in events), np.float64, len(events))
        features = [e[1] for e in events]
        return self.learn_columns(base, [e[0] for e in events], features, labels, *hyper, **levers)

    def learn_columns(
        self,
        base: Base,
        users: Sequence[str],
        features: Sequence[Mapping[str, float]],
        labels: np.ndarray,
        lr: float,
        l2: float,
        bias_lr: float,
        max_rows: int | None,
        *,
        shared_lr_scale: float = 1.0,
        index: UserIndex | None = None,
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Test-then-train the events given as columns (each one's user, features and label;
        each user's in order): the clone's and the base's prediction of each event before its
        update, and the users whose clone went non-finite (restarted from the base).
        ``index`` is ``batch.user_index(users)`` when the caller has it already."""
        if not users:
            return np.zeros(0), np.zeros(0), []
        if base.n_factors != self.n_factors:
            raise ValueError(
                f"the base has k = {base.n_factors} latents, the table {self.n_factors}"
            )
        if base.version != self.base_version:
            self.has_base[:] = False
            self.base_version = base.version
        batch_users, uids = user_index(users) if index is None else index
        used, idx, x = self._resolve(batch_users, uids, features)
        self._fill_base(base, used)
        work = self.params[used].astype(np.float64)
        entries = list(map(self.users.__getitem__, batch_users))
        dw0 = np.fromiter(map(_W0, entries), np.float64, len(entries))
        scale = np.ones(len(used))
        if shared_lr_scale != 1.0:
            scale = row_scales(list(map(self.names.__getitem__, used.tolist())), shared_lr_scale)
        y = np.asarray(labels, dtype=np.float64)
        from fedlearn.model.kernel import test_then_train

        p, base_p = test_then_train(
            idx, x, uids, y, work, self.base_params[used], dw0, scale, base.w0, lr, l2, bias_lr
        )
        self.params[used] = work
        counts = np.bincount(uids, minlength=len(batch_users)).tolist()
        for entry, w0, count in zip(entries, dw0.tolist(), counts, strict=True):
            entry.w0 = w0
            entry.n_events += count
        reset = self._reset_non_finite(batch_users, used, work, dw0)
        if max_rows is not None:
            for entry in entries:
                if len(entry.rows) > max_rows:
                    self._cap(entry, max_rows)
        return p, base_p, reset

    def _resolve(
        self, batch_users: list[str], uids: np.ndarray, features: Sequence[Mapping[str, float]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each event's features as table rows (new rows for features a user never had),
        touching each row as it is used, so a user's rows end in the order of their last use
        (as ``Delta.touch`` after ``learn_many``): the table rows used (sorted), and each
        event's ``(E, F)`` positions among those rows and values. A pop and a set a feature
        is no dearer than a get: per-row use stamps, sorted where the order is needed, were
        tried and lost more in ``to_bytes_many`` than they saved here (BENCHMARKS.md)."""
        table_users = self.users
        held = []  # each batch user's rows, by their index in batch_users
        for user in batch_users:
            entry = table_users.get(user)
            if entry is None:
                entry = table_users[user] = UserRows()
            held.append(entry.rows)
        flat: list[int] = []
        append = flat.append
        free, names, grow = self.free, self.names, self._grow  # grown in place
        for u, x in zip(uids.tolist(), features, strict=True):
            rows = held[u]
            for name in x:
                row = rows.pop(name, None)
                if row is None:  # a new row: _alloc inlined (about two an event)
                    if not free:
                        grow()
                    row = free.pop()
                    names[row] = name
                rows[name] = row
                append(row)
        lengths = np.fromiter(map(len, features), np.int64, len(features))
        values = list(chain.from_iterable(map(_VALUES, features)))
        used, inverse = np.unique(np.asarray(flat, dtype=np.int64), return_inverse=True)
        idx, x = pad_flat(inverse, values, lengths)
        return used, idx, x

    def _fill_base(self, base: Base, rows: np.ndarray) -> None:
        """The base's ``[w, v]`` for those of ``rows`` that do not have it yet."""
        need = rows[~self.has_base[rows]]
        if need.size:
            w, v = base.rows(list(map(self.names.__getitem__, need.tolist())))
            self.base_params[need, 0] = w
            self.base_params[need, 1:] = v
            self.has_base[need] = True

    def _reset_non_finite(
        self, users: list[str], used: np.ndarray, work: np.ndarray, dw0: np.ndarray
    ) -> list[str]:
        """Restart from the base every user whose clone went non-finite. The update clips its
        steps and bounds the delta, so this should never fire; it is the last line that keeps
        NaN or infinity out of Redis, the rounds and the clients."""
        if np.isfinite(work).all() and np.isfinite(dw0).all():
            return []
        bad = set(used[~np.isfinite(work).all(axis=1)].tolist())
        reset = [
            user
            for user, w0 in zip(users, dw0.tolist(), strict=True)
            if not np.isfinite(w0) or not bad.isdisjoint(self.users[user].rows.values())
        ]
        for user in reset:
            self.reset(user)
        return reset

    def _cap(self, entry: UserRows, max_rows: int) -> None:
        """Drop ``entry``'s least recently used rows beyond ``max_rows`` (back to the base)."""
        excess = len(entry.rows) - max_rows
        if excess > 0:
            gone = list(islice(entry.rows, excess))
            self._release([entry.rows.pop(name) for name in gone])

    # -- rows -------------------------------------------------------------------------------

    def _alloc(self, name: str) -> int:
        if not self.free:
            self._grow()
        row = self.free.pop()
        self.names[row] = name
        return row

    def _alloc_many(self, names: list[str]) -> list[int]:
        """Rows for ``names``, the ones ``_alloc`` would give them one by one, taken at once (a
        loaded user has ~40 rows; a call each was a quarter of loading them)."""
        m = len(names)
        while len(self.free) < m:
            self._grow()
        rows = self.free[-m:][::-1]
        del self.free[-m:]
        for row, name in zip(rows, names, strict=True):
            self.names[row] = name
        return rows

    def _grow(self) -> None:
        old = len(self.names)
        new = 2 * old
        for attr in ("params", "base_params", "has_base"):
            current = getattr(self, attr)
            grown = np.zeros((new, *current.shape[1:]), current.dtype)
            grown[:old] = current
            setattr(self, attr, grown)
        self.names.extend([None] * old)
        self.free.extend(range(new - 1, old - 1, -1))

    def _release(self, rows: Iterable[int]) -> None:
        """Free ``rows``: zeroed (a reused row starts as no change from the base)."""
        freed = list(rows)
        if not freed:
            return
        at = np.asarray(freed, dtype=np.int64)
        self.params[at] = 0.0
        self.has_base[at] = False
        for row in freed:
            self.names[row] = None
        self.free.extend(freed)
