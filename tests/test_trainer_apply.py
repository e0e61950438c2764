"""apply_batch: what an event trains on, and what a redelivery does (no Redis needed)."""

from __future__ import annotations

import orjson
import pytest

from fedlearn.data.eventlog import expand, render_applied
from fedlearn.model import Base, Clone, Delta, event_features
from fedlearn.model.gating import Gate
from fedlearn.model.table import DeltaTable
from fedlearn.store.entries import Entry
from fedlearn.store.streamid import StreamId
from fedlearn.trainer.apply import (
    NEVER,
    CloneSettings,
    UserState,
    _plain_batch,
    apply_batch,
    features_of,
)

BASE = Base.fresh([f"item={i}" for i in range(5)] + ["genre=Drama"], 4, version="b1")
SETTINGS = CloneSettings(lr=0.1, l2=0.0, bias_lr=0.1)


def entry(sid: str, user: str, item: str, signal: str = "click", **extra: object) -> Entry:
    event = {"event_id": sid, "user": user, "item": item, "signal": signal, "ts": 1.0, **extra}
    return Entry(sid, event)


def no_catalog(_item: str) -> None:
    return None


def apply(table: DeltaTable, states: dict[str, UserState], entries: list[Entry], **kwargs: object):
    """``apply_batch`` with no catalog and no stored predictions, unless ``kwargs`` say so."""
    options = {
        "item_features": no_catalog,
        "prediction_features": lambda pid, item: None,
        "applied_at": 1.0,
    }
    return apply_batch(BASE, table, states, entries, SETTINGS, **{**options, **kwargs})


def table_of(deltas: dict[str, Delta]) -> DeltaTable:
    table = DeltaTable(4)
    for user, delta in deltas.items():
        table.put(user, delta)
    return table


def test_an_event_naming_its_prediction_trains_on_the_features_prediction_saw() -> None:
    recorded = {"user=a": 1.0, "item=1": 1.0, "genre=Drama": 1.0, "hour=9": 1.0}
    event = {"user": "a", "item": "1", "prediction_id": "p1", "context": {"hour": "21"}}
    found, source = features_of(event, no_catalog, lambda pid, item: recorded)
    assert (found, source) == (recorded, "prediction")
    # An expired or unknown prediction falls back to the event's own context.
    found, source = features_of(event, no_catalog, lambda pid, item: None)
    assert source == "event" and found == event_features("a", "1", {"hour": "21"})


def test_a_batchs_context_memo_gives_event_features_in_its_order() -> None:
    """The memo of encoded contexts (one per batch) changes nothing a feature dict holds,
    its order included, whether a context is met for the first time or again."""
    catalog = {"1": {"genre=Drama": 1.0, "year": 0.5}}.get
    contexts: dict = {}
    for context in ({"hour": "21", "dark": True, "temp": 0.25}, {"hour": "21", "dark": True,
                    "temp": 0.25}, {"hour": "9"}, None, {}):  # fmt: skip
        event = {"user": "a", "item": "1", "context": context}
        found, source = features_of(event, catalog, lambda pid, item: None, contexts)
        expected = event_features("a", "1", context, catalog("1"))
        assert source == "event" and list(found.items()) == list(expected.items())
    assert len(contexts) == 2


def test_entries_already_applied_are_skipped_and_the_rest_logged_with_predictions() -> None:
    states = {"a": UserState(StreamId(5, 0)), "b": UserState(NEVER)}
    entries = [entry("4-0", "a", "1"), entry("6-0", "a", "2", "skip"), entry("7-0", "b", "3")]
    table = DeltaTable(4)
    out = apply(table, states, entries, applied_at=2.0)
    assert (out.applied, out.skipped) == (2, 1)
    records = list(expand(out.log))
    assert [r["event_id"] for r in records] == ["6-0", "7-0"]
    assert out.users["a"].last_event == StreamId(6, 0)
    assert states["a"].last_event == StreamId(5, 0), "the caller's state is replaced on commit"
    assert table.events_of("a") == table.events_of("b") == 1
    # The logged prediction is the clone's before learning: the base's, for a fresh delta.
    expected = Clone(BASE).predict_proba_one(event_features("b", "3"))
    assert records[1]["prediction"] == expected
    assert list(out.positions) == [0, 0]


def test_a_forget_entry_drops_the_users_earlier_events_and_starts_a_new_clone() -> None:
    learned = Delta(4)
    learned.rows_of(["item=1"])
    learned._w[0] = 0.5
    learned.n_events = 3
    states = {"a": UserState(StreamId(1, 0)), "b": UserState(NEVER)}
    forget = Entry("5-0", {"event_id": "f", "user": "a", "type": "forget", "ts": 1.0})
    entries = [entry("4-0", "a", "1"), forget, entry("6-0", "a", "2"), entry("7-0", "b", "3")]
    table = table_of({"a": learned})
    out = apply(table, states, entries, applied_at=2.0)
    assert (out.applied, out.forgotten) == (2, 2)
    assert out.users["a"].last_event == StreamId(6, 0)
    a = table.delta("a")
    assert a.n_events == 1 and "item=1" not in a.names, "the old clone is gone"
    assert [r["event_id"] for r in expand(out.log)] == ["6-0", "7-0"]


def test_a_clone_that_goes_non_finite_is_reset_to_the_base_counted_and_never_stored() -> None:
    from prometheus_client import REGISTRY

    def resets() -> float:
        labels = {"reason": "non_finite"}
        return REGISTRY.get_sample_value("fedlearn_clone_resets_total", labels) or 0.0

    before = resets()
    learned = Delta(4)
    learned.rows_of(["item=1"])
    learned._w[0] = 0.5
    states = {"a": UserState(), "b": UserState()}
    table = table_of({"a": learned})
    # A recorded feature value of NaN cannot come through the API; here it stands for any way
    # the update might still produce a non-finite number.
    poisoned = {"user=a": 1.0, "item=1": float("nan")}
    entries = [
        entry("1-0", "a", "1", prediction_id="p"),
        entry("2-0", "b", "2"),
    ]
    out = apply(table, states, entries, prediction_features=lambda pid, item: poisoned)
    assert out.reset == ["a"]
    assert resets() == before + 1
    reset = table.delta("a")
    assert len(reset) == 0 and reset.w0 == 0.0, "back to the base"
    assert out.users["a"].last_event == StreamId(1, 0), "consumed, not retried forever"
    assert Delta.from_bytes(table.to_bytes_many(["a"])["a"]).is_finite()
    assert table.delta("b").is_finite() and len(table.delta("b")) > 0


def test_a_user_sending_a_new_context_string_with_every_event_keeps_a_bounded_delta() -> None:
    states = {"a": UserState()}
    table = DeltaTable(4)
    sizes, rows = [], []
    for batch in range(12):  # 6,000 events, each with a context value never seen before
        entries = [
            entry(f"{batch * 500 + i + 1}-0", "a", str(i % 5), context={"q": f"s{batch}-{i}"})
            for i in range(500)
        ]
        out = apply(table, states, entries)
        states["a"] = out.users["a"]
        sizes.append(len(table.to_bytes_many(["a"])["a"]))
        rows.append(len(table.delta("a")))
    assert table.n_rows == SETTINGS.max_rows, "evicted rows are freed in the table too"
    delta = table.delta("a")
    assert max(rows) == rows[-1] == SETTINGS.max_rows
    row_bytes = len("q=s11-499\n") + 4 * (1 + 4)  # the longest name, its floats
    assert max(sizes) <= 40 + SETTINGS.max_rows * row_bytes  # 0.12 MB at k = 4
    # The newest strings survive, the oldest went back to the base's value.
    assert "q=s11-499" in delta.index and "q=s0-0" not in delta.index
    assert "user=a" in delta.index, "a row used by every event is never the least recent"


def test_a_replay_only_lever_is_refused_before_the_table_changes() -> None:
    import pytest

    table = DeltaTable(4)
    settings = CloneSettings(lr=0.1, l2=0.0, bias_lr=0.1, lr_half_life=3.0)
    forget = Entry("1-0", {"event_id": "f", "user": "a", "type": "forget", "ts": 1.0})
    table.put("a", Delta.from_rows(4, ["item=1"], [0.5], [[0.1] * 4]))
    with pytest.raises(ValueError, match="lr_half_life"):
        apply_batch(BASE, table, {"a": UserState()}, [forget], settings,
                    item_features=no_catalog, prediction_features=lambda p, i: None,
                    applied_at=1.0)  # fmt: skip
    assert len(table.delta("a")) == 1


def plain_batch(n: int, seed: int) -> list[Entry]:
    """``n`` events of a few users, items with and without catalog features, mixed contexts."""
    import random

    rng = random.Random(seed)
    contexts = [None, {}, {"hour": "21"}, {"hour": "9", "dark": True, "temp": 0.25}]
    return [
        entry(f"{100 + i}-{i % 3}", f"u{rng.randrange(6)}", str(rng.randrange(5)),
              rng.choice(["click", "skip"]), context=rng.choice(contexts))
        for i in range(n)
    ]  # fmt: skip


def rank_some(entries: list[Entry]) -> dict[tuple[str, str], dict]:
    """Make some of ``entries`` name a ranking (some found, some expired, an empty id) and
    some carry how they were shown as the client sent it; the records of the rankings."""
    policy = {"kind": "epsilon", "epsilon": 0.1}
    records = {
        (f"p{p}", str(item)): {
            "features": {f"user=u{p}": 1.0, f"item={item}": 1.0, f"hour={p}": 1.0},
            "score": 0.5, "slot": item, "propensity": 0.9 if item else 0.1, "policy": policy,
        }
        for p in range(3) for item in range(3)
    }  # fmt: skip
    for i, e in enumerate(entries):
        if i % 3 == 0:
            e.event["prediction_id"] = f"p{i % 5}" if i % 4 else ""
        elif i % 11 == 0:
            e.event.update(propensity=0.5, policy={"kind": "greedy"})
    return records


@pytest.mark.parametrize("ranked", [False, True])
def test_a_plain_batch_taken_whole_gives_what_entry_by_entry_gives(*, ranked: bool) -> None:
    """A batch of events only, in stream order, none applied before, is chosen over whole
    columns, whether some events name a ranking or not; one entry already applied sends the
    same batch entry by entry. Both must give the same predictions, states, log columns,
    delta bytes and event-log lines."""
    catalog = {"1": {"genre=Drama": 1.0, "year": 0.5}, "3": {"hour=21": 2.0}}.get
    entries = plain_batch(300, seed=3)
    records = rank_some(entries) if ranked else {}
    ranking = {
        "prediction_features": lambda pid, item: records.get((pid, item), {}).get("features"),
        "prediction_shown": lambda pid, item: records.get((pid, item)),
    }
    fresh = {user: UserState() for user in {e.event["user"] for e in entries}}
    assert _plain_batch(entries, fresh, catalog, ranking["prediction_features"]) is not None
    users = sorted({e.event["user"] for e in entries})
    outs, tables = [], []
    for redelivered in ([], [entry("50-0", "old", "1")]):  # "old" applied up to 60-0
        states = {user: UserState(StreamId(99, 0), Gate(0.5, 0.25, 2)) for user in users}
        states["old"] = UserState(StreamId(60, 0))
        table = table_of({"u1": Delta.from_rows(4, ["item=1"], [0.5], [[0.1] * 4])})
        outs.append(apply(table, states, redelivered + entries, item_features=catalog, **ranking))
        tables.append(table.to_bytes_many(users))
    whole, one_by_one = outs
    assert (whole.skipped, one_by_one.skipped) == (0, 1) and whole.applied == 300
    assert whole.predictions.tobytes() == one_by_one.predictions.tobytes()
    assert whole.served_predictions.tobytes() == one_by_one.served_predictions.tobytes()
    assert whole.positions.tolist() == one_by_one.positions.tolist()
    assert whole.users == {u: s for u, s in one_by_one.users.items() if u != "old"}
    for column in ("events", "stream_id", "features_from", "shown", "prediction"):
        assert whole.log[column] == one_by_one.log[column], column
    assert [list(x.items()) for x in whole.log["features"]] == [
        list(x.items()) for x in one_by_one.log["features"]
    ]
    assert tables[0] == tables[1]
    assert ("prediction" in whole.log["features_from"]) == ranked
    assert any(whole.log["shown"]) == ranked
    by_record = render_applied({**one_by_one.log, "raw": [b""] * whole.applied})["lines"]
    own_text = [orjson.dumps(e) for e in whole.log["events"]]  # as the stream holds them
    assert render_applied({**whole.log, "raw": own_text})["lines"] == by_record


def test_ids_out_of_stream_order_go_entry_by_entry_and_keep_the_highest() -> None:
    states = {"a": UserState(StreamId(2, 0))}
    out = apply(DeltaTable(4), states, [entry("5-0", "a", "1"), entry("3-0", "a", "2")])
    assert out.applied == 2 and out.users["a"].last_event == StreamId(5, 0)
    # Not above last_event: skipped even after a higher one.
    out = apply(DeltaTable(4), states, [entry("5-0", "a", "1"), entry("2-0", "a", "2")])
    assert (out.applied, out.skipped) == (1, 1)
