"""Scoring on the client with what a session fetched: the same recipe and model as the server.

``candidates`` turns the arguments of a ranking (ids, or ``{"id", "features"}``) into what
``POST /v1/users/{user}/rank`` scores; :func:`needed_features` are the names whose base rows a
session must hold to score them (the user's own row first); :func:`rank_locally` scores them
with the served clone, the server's ``Clone`` over the whole or the partial base.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from fedlearn.model import Base, Delta, event_features
from fedlearn.model.clone import served_scores
from fedlearn.model.rowset import PartialBase

Candidates = list[tuple[str, Mapping[str, float] | None]]


def candidates(items: Iterable[str | Mapping[str, Any]]) -> Candidates:
    """``(id, features or None)`` per item, first listing of an id wins (as the server)."""
    out: dict[str, Mapping[str, float] | None] = {}
    for item in items:
        item_id, features = (
            (item, None) if isinstance(item, str) else (item["id"], item.get("features"))
        )
        out.setdefault(str(item_id), features)
    return list(out.items())


def samples(
    user: str, items: Candidates, context: Mapping[str, Any] | None
) -> list[dict[str, float]]:
    """The feature dict of each candidate, built as the server's rank builds it."""
    return [event_features(user, item, context or None, features) for item, features in items]


def needed_features(user: str, items: Candidates, context: Mapping[str, Any] | None) -> list[str]:
    """Names whose rows scoring ``items`` reads: the user's own, then every candidate's."""
    names = dict.fromkeys([f"user={user}"])
    for sample in samples(user, items, context):
        names.update(dict.fromkeys(sample))
    return list(names)


def rank_locally(
    user: str,
    model: Mapping[str, Any],
    base: Base | PartialBase,
    items: Candidates,
    context: Mapping[str, Any] | None,
) -> list[tuple[str, float]]:
    """Score ``items`` as the server serves them (the gate's mix of clone and base, by the
    answer's ``clone_weight``), best first (ties keep order); a partial base missing a row
    raises ``MissingRowsError`` rather than guess it."""
    weight = float(
        model.get("clone_weight", 1.0 if model.get("serve", "clone") == "clone" else 0.0)
    )
    delta = Delta.from_json(model["delta"], base.n_factors) if weight > 0 else None
    # A PartialBase has Base's rows(), all that scoring reads.
    scores = served_scores(base, delta, weight, samples(user, items, context))  # type: ignore[arg-type]
    order = np.argsort(-scores, kind="stable")
    return [(items[i][0], float(scores[i])) for i in order]
