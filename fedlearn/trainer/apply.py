"""One batch of a shard's stream applied to its users' clones: the trainer's pure core.

Given the entries a trainer read and the users' current deltas, this decides what each event
trains on (the features recorded at prediction time when the event names a ``prediction_id``,
else the event's own item and context), skips entries already applied (a redelivery after a
crash: id ``<=`` the user's ``last_event``), runs test-then-train for all users at once on the
shard's table of deltas (``model.table``, changed in place: the trainer's working copy), and
returns everything else the atomic commit needs. No I/O happens here, so it is tested without
Redis.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter, eq, itemgetter, methodcaller
from typing import Any

import numpy as np

from fedlearn.data.eventlog import CANDIDATES, SHOWN_KEYS
from fedlearn.model import Base, Delta, event_features
from fedlearn.model.batch import learn_many_shadow, user_index
from fedlearn.model.delta import DEFAULT_MAX_ROWS, rebase
from fedlearn.model.features import encode_context
from fedlearn.model.gating import Gate, GateSettings, serve_then_update
from fedlearn.model.table import DeltaTable, UserIndex
from fedlearn.serving.ingest import FORGET, REBASE
from fedlearn.store.entries import Entry
from fedlearn.store.streamid import StreamId
from fedlearn.telemetry.trainer import CLONE_RESETS

DEFAULT_GATING = GateSettings()
NEVER = StreamId(0, 0)  # the last_event of a user who has no applied event yet
# An event with none of these fields was shown with nothing known: ``shown_with`` gives {}.
_SHOWN_FIELDS = frozenset({"prediction_id", *SHOWN_KEYS})
# A batch whose events hold none of these is taken whole (no erasure or rebase): each event's
# features are its own, or its ranking's record's.
_PLAIN_FIELDS = frozenset({"type"})
_EVENT, _RAW, _ID = attrgetter("event"), attrgetter("raw"), attrgetter("id")
_USER, _ITEM, _SIGNAL = itemgetter("user"), itemgetter("item"), itemgetter("signal")
_CONTEXT, _PREDICTION_ID = methodcaller("get", "context"), methodcaller("get", "prediction_id")

ItemFeatures = Callable[[str], Mapping[str, float] | None]
PredictionFeatures = Callable[[str, str], Mapping[str, float] | None]
PredictionShown = Callable[[str, str], Mapping[str, Any] | None]


@dataclass(frozen=True, slots=True)
class CloneSettings:
    """How clones learn: SGD step, intercept step, L2 pull toward the base, and the cap on a
    delta's rows (least recently used rows are evicted beyond it); the levers of
    :func:`fedlearn.model.learn_many` (item and context rows' step multiple, the step's decay
    with the user's event count)."""

    lr: float
    l2: float
    bias_lr: float
    max_rows: int | None = DEFAULT_MAX_ROWS  # None: no cap (the replay's one global model)
    shared_lr_scale: float = 1.0
    lr_half_life: float | None = None


@dataclass(slots=True)
class UserState:
    """What the trainer holds of a user between batches besides their delta (which is in the
    shard's :class:`DeltaTable`): the last event applied and the gate."""

    last_event: StreamId = NEVER
    gate: Gate = field(default_factory=Gate)


@dataclass
class AppliedBatch:
    """What to commit: last ids and gates of the touched users (their deltas are in the table),
    and the applied log."""

    users: dict[str, UserState] = field(default_factory=dict)
    log: dict[str, Any] = field(default_factory=dict)  # columns; see data.eventlog.expand
    applied: int = 0
    skipped: int = 0
    forgotten: int = 0
    rebased: int = 0
    # (version, user) of every rebase entry the batch passed: once committed, the user's
    # last_event is past the entry, so its note is read by nobody (Streams.drop_rebase_notes).
    rebase_notes: list[tuple[str, str]] = field(default_factory=list)
    reset: list[str] = field(default_factory=list)  # users whose clone went non-finite
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0))
    predictions: np.ndarray = field(default_factory=lambda: np.zeros(0))
    base_predictions: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # What each event's user was served (their gate's mix of the two, before the event).
    served_predictions: np.ndarray = field(default_factory=lambda: np.zeros(0))
    positions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def _reset_non_finite(working: dict[str, Delta], n_factors: int) -> list[str]:
    """Replace every delta that went non-finite by an empty one (the base), and count it.

    The update clips its steps and bounds the delta, so this should never fire; it is the last
    line that keeps NaN or infinity out of Redis, the aggregation rounds and the clients.
    """
    reset = [user for user, delta in working.items() if not delta.is_finite()]
    for user in reset:
        working[user] = Delta(n_factors)
        CLONE_RESETS.labels(reason="non_finite").inc()
    return reset


def rebase_user(delta: Delta, event: Mapping[str, Any], generation: int) -> Delta:
    """``delta`` with a ``rebase`` entry's share taken out (what the round that promoted
    ``event["base"]`` folded in for the user, ``fedlearn.aggregate.rebase``), as a new delta.
    A share of another generation than ``generation`` (the trainer's base's) is no rebase:
    monthly retraining restarted the clone from a base that never folded it in."""
    if event.get("generation", generation) != generation:
        return delta.copy()
    try:
        share = Delta.from_json(event["share"], delta.n_factors, dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        return delta.copy()
    return rebase(delta, share) if share.is_finite() else delta.copy()


def features_of(
    event: Mapping[str, Any],
    item_features: ItemFeatures,
    prediction_features: PredictionFeatures,
    contexts: dict[Any, dict[str, float]] | None = None,
) -> tuple[dict[str, float], str]:
    """The features an event trains on, and where they came from (``prediction`` or ``event``).

    ``contexts`` (one per batch) remembers each context's encoding: a batch's events share a
    few hours and devices, and encoding them for every event was a tenth of ``apply_batch``.
    The features are :func:`fedlearn.model.event_features`'s, in its order.
    """
    prediction_id = event.get("prediction_id")
    if prediction_id:
        recorded = prediction_features(prediction_id, event["item"])
        if recorded is not None:
            return dict(recorded), "prediction"
    user, item, context = event["user"], event["item"], event.get("context")
    if contexts is None or not context:
        return event_features(user, item, context, item_features(item)), "event"
    try:
        key = tuple(context.items())
        encoded = contexts.get(key)
    except TypeError:  # an unhashable value: no memo (event_features says what is wrong)
        return event_features(user, item, context, item_features(item)), "event"
    if encoded is None:
        encoded = contexts[key] = encode_context(context, {})
    # One dict display: as event_features' updates (a later duplicate overwrites in place).
    if (of_item := item_features(item)) is not None:
        return {f"user={user}": 1.0, f"item={item}": 1.0, **of_item, **encoded}, "event"
    return {f"user={user}": 1.0, f"item={item}": 1.0, **encoded}, "event"


def shown_with(event: Mapping[str, Any], prediction_shown: PredictionShown) -> dict[str, Any]:
    """The policy, slot and propensity the event's item was shown with: the server's record
    when the event names a ranking that recorded them, else what the client sent, if any;
    with the ranking's candidates when the record has them (its slot-0 item's). Candidates
    come only from the server's record: a client's list would be features nobody scored."""
    if event.get("prediction_id"):
        recorded = prediction_shown(event["prediction_id"], event["item"])
        if recorded is not None and recorded.get("propensity") is not None:
            shown = {key: recorded[key] for key in SHOWN_KEYS if recorded.get(key) is not None}
            if recorded.get(CANDIDATES):
                shown[CANDIDATES] = recorded[CANDIDATES]
            return shown
    return {key: event[key] for key in SHOWN_KEYS if event.get(key) is not None}


def learn_clones(
    base: Base,
    deltas: dict[str, Delta],
    events: Sequence[tuple[str, Mapping[str, float], int]],
    settings: CloneSettings,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Test-then-train labelled ``(user, features, label)`` events on the clones in ``deltas``
    (updated in place): the clone's and the base's predictions, and the users reset.

    This is the trainer's learning without its stream bookkeeping, so the offline replay runs
    exactly what the service runs.
    """
    p, base_p = learn_many_shadow(
        base, deltas, events, settings.lr, settings.l2, settings.bias_lr, settings.max_rows,
        shared_lr_scale=settings.shared_lr_scale, lr_half_life=settings.lr_half_life,
    )  # fmt: skip
    return p, base_p, _reset_non_finite(deltas, base.n_factors)


def apply_batch(
    base: Base,
    table: DeltaTable,
    states: dict[str, UserState],
    entries: list[Entry],
    settings: CloneSettings,
    *,
    item_features: ItemFeatures,
    prediction_features: PredictionFeatures,
    applied_at: float,
    gating: GateSettings = DEFAULT_GATING,
    prediction_shown: PredictionShown = lambda pid, item: None,
) -> AppliedBatch:
    """Test-then-train ``entries`` (in stream order) on the clones in ``table``.

    ``states`` must hold every user of ``entries`` (a user never seen gets a fresh
    :class:`UserState` from the caller; a user ``table`` lacks starts from the base). ``states``
    is not modified: the returned batch holds updated copies, which the caller adopts only once
    the commit succeeded. ``table`` is changed in place: a caller whose commit fails must drop
    its users and reload them from Redis, the truth.
    """
    if settings.lr_half_life is not None:  # checked before the table changes
        raise ValueError("lr_half_life is a replay lever; the trainer's update does not take it")
    out = AppliedBatch()
    chosen = _plain_batch(entries, states, item_features, prediction_features)
    if chosen is None:
        chosen = _choose(base, table, states, entries, out, item_features, prediction_features)
    kept, features, sources, last_ids = chosen
    if not kept:
        return out
    events = list(map(_EVENT, kept))
    users = list(map(_USER, events))
    n = len(kept)
    labels = np.fromiter(map(eq, map(_SIGNAL, events), repeat("click")), np.float64, n)
    index = user_index(users)  # the table, the positions and the gates share it
    before = _positions(table, index)
    p, base_p, out.reset = table.learn_columns(
        base, users, features, labels, settings.lr, settings.l2, settings.bias_lr,
        settings.max_rows, shared_lr_scale=settings.shared_lr_scale, index=index,
    )  # fmt: skip
    for _ in out.reset:
        CLONE_RESETS.labels(reason="non_finite").inc()
    gates: dict[str, Gate] = {}
    for user, sid in last_ids.items():
        state = out.users.get(user)
        if state is None:
            previous = states[user].gate
            gate = Gate(previous.loss_clone, previous.loss_base, previous.events)
            state = out.users[user] = UserState(sid, gate)
        elif sid > state.last_event:
            state.last_event = sid
        gates[user] = state.gate
    out.served_predictions = serve_then_update(gates, users, labels, p, base_p, gating, index=index)
    # Columns, not one dict per event: the trainer's hot path only builds lists here, and the
    # event log writer (off the hot path) turns them into one line per event.
    out.log = {
        "events": events,
        "raw": list(map(_RAW, kept)),
        "stream_id": list(map(_ID, kept)),
        "features": features,
        "features_from": sources,
        "shown": _shown_column(events, prediction_shown),
        "prediction": p.tolist(),
        "base_prediction": base_p.tolist(),
        "base_version": base.version,
        "applied_at": applied_at,
    }
    out.applied = n
    out.labels = labels
    out.predictions = p
    out.base_predictions = base_p
    out.positions = before
    return out


# What apply_batch picked from a batch's entries: the entries to learn, each one's features
# and where they came from, and each learning user's last id among them.
Chosen = tuple[list[Entry], list[dict[str, float]], list[str], dict[str, StreamId]]


def _choose(
    base: Base,
    table: DeltaTable,
    states: dict[str, UserState],
    entries: list[Entry],
    out: AppliedBatch,
    item_features: ItemFeatures,
    prediction_features: PredictionFeatures,
) -> Chosen:
    """The entries to learn, entry by entry: redeliveries skipped, ``forget`` and ``rebase``
    entries carried out on ``table`` (recorded in ``out``), features of each event."""
    kept: list[Entry] = []
    features: list[dict[str, float]] = []
    sources: list[str] = []
    last_ids: dict[str, StreamId] = {}
    generation = int(base.meta.get("generation", 0))
    # A user forgotten in this batch: events before the (last) forget are dropped unapplied,
    # later ones start a new clone. Erasure means the event log does not get them either.
    last_forget = {
        e.event["user"]: i for i, e in enumerate(entries) if e.event.get("type") == FORGET
    }
    forgotten: dict[str, StreamId] = {}
    rebased: dict[str, StreamId] = {}
    contexts: dict[Any, dict[str, float]] = {}
    for i, entry in enumerate(entries):
        event = entry.event
        user = event["user"]
        state = states[user]
        ms, _, seq = entry.id.partition("-")  # an id Redis gave: no need to validate it
        sid = StreamId(int(ms), int(seq))
        kind = event.get("type")
        if kind == REBASE:  # applied, skipped or erased: its note is done with
            out.rebase_notes.append((str(event.get("base")), user))
        if sid <= state.last_event:
            out.skipped += 1
            continue
        if i <= last_forget.get(user, -1):
            if i == last_forget[user]:
                forgotten[user] = sid
                table.reset(user)
            out.forgotten += 1
            continue
        if kind == REBASE:
            if user in forgotten:  # an erased clone keeps nothing derived from its data
                forgotten[user] = sid
            else:
                table.put(user, rebase_user(table.delta(user), event, generation))
                rebased[user] = sid
            out.rebased += 1
            continue
        x, source = features_of(event, item_features, prediction_features, contexts)
        kept.append(entry)
        features.append(x)
        sources.append(source)
        if sid > last_ids.get(user, NEVER):
            last_ids[user] = sid
    for user, sid in forgotten.items():
        out.users[user] = UserState(sid)
    for user, sid in rebased.items():
        previous = states[user].gate
        gate = Gate(previous.loss_clone, previous.loss_base, previous.events)
        out.users[user] = UserState(sid, gate)
    return kept, features, sources, last_ids


def _plain_batch(
    entries: list[Entry],
    states: Mapping[str, UserState],
    item_features: ItemFeatures,
    prediction_features: PredictionFeatures,
) -> Chosen | None:
    """The common batch, chosen over whole columns: events only (no ``forget`` or
    ``rebase``; a ranking named or not), in stream order, none applied before, contexts of
    plain values. None when the batch is not that: :func:`_choose` then goes entry by entry.

    What it gives is what :func:`_choose` would: every entry, each event's
    :func:`features_of` (its ranking's record's, else the item's and the context's part
    worked out once per batch), and each user's last id (the ids rise, so a user's last entry
    has it, and none was applied before when each user's first one was not).
    """
    events = list(map(_EVENT, entries))
    if not events or not all(map(_PLAIN_FIELDS.isdisjoint, events)):
        return None
    # All ids parsed in one call: "<ms>-<seq>" pairs, as Redis wrote them.
    ids = np.fromstring(" ".join(map(_ID, entries)).replace("-", " "), np.uint64, sep=" ")
    if ids.size != 2 * len(events):
        return None
    ms, seq = ids[0::2], ids[1::2]
    if not ((ms[1:] > ms[:-1]) | ((ms[1:] == ms[:-1]) & (seq[1:] > seq[:-1]))).all():
        return None
    users = list(map(_USER, events))
    first = dict(zip(reversed(users), range(len(users) - 1, -1, -1), strict=True))
    ms_list, seq_list = ms.tolist(), seq.tolist()
    for user, i in first.items():
        if StreamId(ms_list[i], seq_list[i]) <= states[user].last_event:
            return None
    recorded = _recorded_features(events, prediction_features)
    try:
        if recorded is None:  # no ranking named: all the events' own features
            features = _plain_features(events, users, item_features)
            sources = ["event"] * len(events)
        else:
            own = [i for i, x in enumerate(recorded) if x is None]
            computed = iter(
                _plain_features([events[i] for i in own], [users[i] for i in own], item_features)
            )
            features = [next(computed) if x is None else x for x in recorded]
            sources = ["event" if x is None else "prediction" for x in recorded]
    except TypeError:  # an unhashable context value: features_of says what is wrong
        return None
    last = dict(zip(users, range(len(users)), strict=True))
    last_ids = {user: StreamId(ms_list[i], seq_list[i]) for user, i in last.items()}
    return entries, features, sources, last_ids


def _recorded_features(
    events: list[dict[str, Any]], prediction_features: PredictionFeatures
) -> list[dict[str, float] | None] | None:
    """Each event's features as its ranking's record holds them (a copy, as
    :func:`features_of` gives), or None when it names no ranking or the record lacks it;
    None for the whole batch when no event names a ranking."""
    if not any(map(_PREDICTION_ID, events)):
        return None
    found: list[dict[str, float] | None] = []
    for event in events:
        pid = event.get("prediction_id")
        recorded = prediction_features(pid, event["item"]) if pid else None
        found.append(None if recorded is None else dict(recorded))
    return found


def _plain_features(
    events: list[dict[str, Any]], users: list[str], item_features: ItemFeatures
) -> list[dict[str, float]]:
    """:func:`features_of` of events that name no ranking, with each user's, item's and
    context's part worked out once per batch (one dict display per event, in its order)."""
    contexts = list(map(_CONTEXT, events))
    keys = [tuple(c.items()) if c else () for c in contexts]
    # Each context encoded once, from its first event (reversed: a dict keeps the last value).
    firsts = dict(zip(reversed(keys), reversed(contexts), strict=True))
    encoded = {key: encode_context(context, {}) for key, context in firsts.items()}
    items = list(map(_ITEM, events))
    of_items = {}
    for item in dict.fromkeys(items):
        part = of_items[item] = {f"item={item}": 1.0}
        if (of_item := item_features(item)) is not None:
            part.update(of_item)
    of_users = {user: f"user={user}" for user in dict.fromkeys(users)}
    return [
        {of_users[user]: 1.0, **of_items[item], **encoded[key]}
        for user, item, key in zip(users, items, keys, strict=True)
    ]


def _shown_column(
    events: list[dict[str, Any]], prediction_shown: PredictionShown
) -> list[dict[str, Any]]:
    """How each event's item was shown (:func:`shown_with`); one check for the whole batch
    when no event names a ranking or carries how it was shown (the common case)."""
    if all(map(_SHOWN_FIELDS.isdisjoint, events)):
        return [{} for _ in events]
    return [
        {} if _SHOWN_FIELDS.isdisjoint(event) else shown_with(event, prediction_shown)
        for event in events
    ]


def _positions(table: DeltaTable, index: UserIndex) -> np.ndarray:
    """How many events each event's user had learned before it (the table's count, plus the
    user's earlier events in the batch); ``index`` is ``batch.user_index`` of the events."""
    batch_users, uid = index
    prior = np.fromiter(map(table.events_of, batch_users), np.int64, len(batch_users))
    counts = np.bincount(uid, minlength=len(batch_users))
    order = np.argsort(uid, kind="stable")
    rank = np.empty(len(uid), dtype=np.int64)
    rank[order] = np.arange(len(uid)) - np.repeat(np.cumsum(counts) - counts, counts)
    return prior[uid] + rank
