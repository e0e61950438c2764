"""A user's clone as the API serves it: the model a client downloads, and server-side ranking.

The clone is the *current* base plus the user's stored delta. A delta from another generation
(monthly retraining restarts every clone) or with another number of factors does not apply to
the current base and is served as empty: the user starts over from the new base, as the
trainers do. The base is decoded once per version and kept; the current pointer and the delta
are read from the store on every request (with the token's revocation and the rebase notes, in
one round trip: ``read_user``), so a client always gets what was last published and what the
trainers last wrote. A stored record that cannot be read is served as the base (with
a warning and ``fedlearn_unreadable_records_total``), never as a 500: the trainer dead-letters
it and restarts the clone at the user's next event.
"""

from __future__ import annotations

import logging
import struct
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import orjson

from fedlearn.config import Settings
from fedlearn.model import Base, Delta, event_features
from fedlearn.model.clone import served_scores
from fedlearn.model.delta import rebase
from fedlearn.model.errors import ModelFormatError
from fedlearn.model.gating import Gate, GateSettings
from fedlearn.model.policy import Policy, explored, rank_with_policy
from fedlearn.serving.base_cache import BaseCache, NoBaseError
from fedlearn.store import DeltaRecord, Store
from fedlearn.store.predictions import PredictionQuota
from fedlearn.store.userread import Note, UserRead

log = logging.getLogger(__name__)
# struct.error: the gate's format raised it before it had a ModelFormatError of its own.
UNREADABLE = (ModelFormatError, struct.error)
# A candidate of a rank call: its id and its features (None: the catalog's, if any).
Candidate = tuple[str, Mapping[str, float] | None]


@dataclass(frozen=True)
class UserClone:
    """The base, the delta that applies to it, the stored record it came from, and the
    clone's weight in what is served (the user's gate's, ``fedlearn.model.gating``): 1 serves
    the clone, 0 the base, in between their mixture."""

    user: str
    base: Base
    delta: Delta
    record: DeltaRecord | None  # None when the user has no usable delta
    clone_weight: float = 1.0
    gate: Gate = field(default_factory=Gate)  # the losses the weight came from

    @property
    def serve(self) -> str:
        """The likelier expert, ``"clone"`` or ``"base"`` (what a switch serves)."""
        return "clone" if self.clone_weight >= 0.5 else "base"

    def scores(
        self, samples: Sequence[Mapping[str, float]], hyper: Mapping[str, Any]
    ) -> np.ndarray:
        """What the user is served for each sample: the gate's mix of clone and base,
        scoring only the models the weight needs."""
        return served_scores(self.base, self.delta, self.clone_weight, samples, **hyper)

    @property
    def events_applied(self) -> int:
        return self.record.events if self.record is not None else 0

    @property
    def last_event(self) -> str | None:
        return str(self.record.last_event) if self.record is not None else None


def delta_applies(record: DeltaRecord, delta: Delta, base: Base, bases: BaseCache) -> bool:
    """Whether a stored delta continues on ``base`` (same generation and shape)."""
    return record.generation == bases.generation(base) and delta.n_factors == base.n_factors


def rebased_by_notes(notes: Sequence[Note], record: DeltaRecord, delta: Delta) -> Delta:
    """``delta`` rebased on the notes (newest promotion first, as ``rebase_versions`` lists
    them) whose entry comes after the record's ``last_event``: the rebases its trainer has not
    applied yet, done on the fly with the trainer's own function. The API serves this, and a
    round's map step counts it, so neither counts a share twice. The notes must be read before
    the record: a trainer's commit in between (the rebase applied, its note dropped) would
    otherwise leave a record from before it with no note."""
    for before, share in reversed(notes):
        if record.last_event <= before:
            try:
                taken = Delta.from_json(orjson.loads(share), delta.n_factors, dtype=np.float64)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # the trainer sets an unreadable share aside the same way
            delta = rebase(delta, taken)
    return delta


def rebase_versions(meta: Mapping[str, Any]) -> list[str]:
    """The promotions a base's lineage lists as possibly not yet applied by every trainer."""
    return [str(v) for v in meta.get("rebase_versions") or []]


def read_user(store: Store, bases: BaseCache, user: str, *, revocation: bool = False) -> UserRead:
    """What serving ``user`` reads from Redis, in one round trip (``store/userread.py``): the
    current pointer (read now, not ``bases.current()``, which may lag a publish or rollback
    by its refresh interval: a client told about a new version must not then be served the
    old one), the delta record, the rebase notes of the lineage of the base served last (a
    guess that ``load_clone`` corrects), and, with ``revocation``, the user's revocation."""
    served = bases.served
    guess = rebase_versions(served.meta) if served is not None else []
    return store.user_reads.read(user, versions=guess, revocation=revocation)


def load_clone(
    store: Store,
    bases: BaseCache,
    user: str,
    *,
    gating: GateSettings,
    on_unreadable: Callable[[], None] | None = None,
    read: UserRead | None = None,
) -> UserClone:
    """The user's clone on the current base (``NoBaseError`` before any base exists), from
    ``read`` (``read_user``'s answer) or one read now.

    ``on_unreadable`` is called when the stored record cannot be read (the API counts it).
    """
    read = read_user(store, bases, user) if read is None else read
    if read.current is None:
        raise NoBaseError()
    base = bases.get(read.current)  # its bytes decoded once per version
    bases.served = base
    record = read.record
    if record is not None:
        try:
            delta = Delta.from_bytes(record.delta)
            gate = Gate.from_bytes(record.gate)
        except UNREADABLE as exc:
            log.warning(
                "user %r: the stored delta record is unreadable (%s); serving the base", user, exc
            )
            if on_unreadable is not None:
                on_unreadable()
            return UserClone(user, base, Delta(base.n_factors), None, 0.0)
        if delta_applies(record, delta, base, bases):
            versions = rebase_versions(base.meta)
            if read.missing_notes(versions):  # the base served last listed other promotions
                read = store.user_reads.read(user, versions=versions)
                return load_clone(
                    store, bases, user, gating=gating, on_unreadable=on_unreadable,
                    read=replace(read, current=base.version),
                )  # fmt: skip
            notes = [note for v in versions if (note := read.notes[v]) is not None]
            delta = rebased_by_notes(notes, record, delta)
            return UserClone(user, base, delta, record, gating.weight(gate), gate)
    # No usable delta: the clone is the base, weighed as a new gate weighs it (the same score).
    return UserClone(user, base, Delta(base.n_factors), None, gating.weight(Gate()))


def model_json(clone: UserClone, settings: Settings, base_url: str) -> dict[str, Any]:
    """The body of ``GET /v1/users/{user}/model``."""
    return {
        "user": clone.user,
        "base_version": clone.base.version,
        "base_url": base_url,
        "delta": clone.delta.to_json(),
        **settings.clone_hyper(clone.base.hyper),
        "events_applied": clone.events_applied,
        "last_event": clone.last_event,
        "serve": clone.serve,
        "clone_weight": clone.clone_weight,
        # What a client needs to move the weight as it learns on the device, as the trainer
        # does (``client_js/src/gating.js``).
        "gate": {
            "loss_clone": clone.gate.loss_clone,
            "loss_base": clone.gate.loss_base,
            "decay": settings.gate_decay,
            "eta": settings.gate_eta,
            "blend": settings.gate_blend,
        },
    }


def item_features(
    store: Store, candidates: Sequence[Candidate]
) -> dict[str, Mapping[str, float] | None]:
    """Features per candidate (first listing of an id wins): the request's, else the catalog's."""
    given: dict[str, Mapping[str, float] | None] = {}
    for item, features in candidates:
        if item not in given:
            given[item] = features
    missing = [item for item, features in given.items() if features is None]
    if missing:
        given.update(store.catalog.features(missing))
    return given


def rank(
    store: Store,
    bases: BaseCache,
    settings: Settings,
    user: str,
    candidates: Sequence[Candidate],
    *,
    context: Mapping[str, Any] | None,
    k: int | None,
    quota: PredictionQuota,
    on_unreadable: Callable[[], None] | None = None,
    policy: Policy | None = None,
    rng: np.random.Generator | None = None,
    on_ranked: Callable[[Policy, np.ndarray], None] | None = None,
) -> dict[str, Any]:
    """Score the candidates with what the user is served and rank them (``k`` slots, if
    given) under ``policy`` (default: the operator's); record what was seen.

    The features of every candidate are stored under a new ``prediction_id`` for
    ``prediction_ttl_s``, within the user's ``quota``: an event naming it trains on exactly
    what was scored here, and carries the policy and the slot and propensity its item was
    shown with into the event log. ``on_ranked`` gets the policy and which picks explored
    (scored below the best item left).
    """
    policy = settings.explore if policy is None else policy
    clone = load_clone(store, bases, user, gating=settings.gate, on_unreadable=on_unreadable)
    per_item = item_features(store, candidates)
    ids = list(per_item)
    context = context or None
    samples = [event_features(user, item, context, per_item[item]) for item in ids]
    hyper = settings.clone_hyper(clone.base.hyper)
    scores = clone.scores(samples, hyper)
    order, propensities = rank_with_policy(
        scores, len(ids) if k is None else k, policy, rng or np.random.default_rng()
    )
    if on_ranked is not None:
        on_ranked(policy, explored(scores, order))
    prediction_id = uuid.uuid4().hex
    items: dict[str, dict[str, Any]] = {
        item: {"features": x, "score": float(p)}
        for item, x, p in zip(ids, samples, scores, strict=True)
    }
    shown = list(zip(order.tolist(), propensities.tolist(), strict=True))  # in slot order
    for slot, (i, propensity) in enumerate(shown):
        items[ids[i]].update(slot=slot, propensity=propensity)
    record = {
        "user": user,
        "base_version": clone.base.version,
        "created_at": time.time(),
        "policy": policy.as_dict(),
        "items": items,
    }
    store.predictions.put_predictions(
        store.shard_of(user), {prediction_id: record}, settings.prediction_ttl_s,
        quota=quota,
    )  # fmt: skip
    return {
        "user": user,
        "base_version": clone.base.version,
        "prediction_id": prediction_id,
        "policy": policy.as_dict(),
        "items": [
            {"id": ids[i], "score": float(scores[i]), "propensity": propensity}
            for i, propensity in shown
        ],
    }
