"""A pass's batches of several shards applied as one (``trainer.passes``): what goes
together, the ranking records each batch may see, and each shard's part of the result."""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from fedlearn.store import Batch
from fedlearn.store.entries import Entry
from fedlearn.store.streamid import StreamId
from fedlearn.trainer import passes
from fedlearn.trainer.apply import AppliedBatch, UserState


def batch_of(*events: dict) -> Batch:
    entries = [Entry(f"{i + 1}-0", event, b"") for i, event in enumerate(events)]
    return Batch(
        entries=entries,
        users=[e["user"] for e in events],
        items=[e.get("item") for e in events],
        prediction_ids=[e.get("prediction_id") for e in events],
    )


def test_batches_with_a_forget_or_rebase_are_applied_alone() -> None:
    batches = {
        0: batch_of({"user": "a", "item": "x"}),
        1: batch_of({"user": "b", "type": "forget"}),
        2: batch_of({"user": "c", "item": "y"}),
        3: batch_of({"user": "d", "type": "rebase"}, {"user": "d", "item": "z"}),
    }
    assert passes.groups(batches) == [[0, 2], [1], [3]]


def test_a_ranking_named_from_two_shards_reaches_neither() -> None:
    """The store leaves out an id several users of one shard name; across the shards of a
    pass the same holds, or one user's record would reach another's events."""
    batches = {
        0: batch_of({"user": "a", "item": "x", "prediction_id": "p1"},
                    {"user": "a", "item": "y", "prediction_id": "p2"}),
        1: batch_of({"user": "b", "item": "x", "prediction_id": "p1"}),
    }  # fmt: skip
    records = {0: {("p1", "x"): {"slot": 0}, ("p2", "y"): {"slot": 1}}, 1: {}}
    assert passes.recorded_in(records, batches) == {("p2", "y"): {"slot": 1}}
    assert passes.recorded_in(records, {0: batches[0]}) == records[0]


def test_each_shard_gets_its_users_events_and_figures_in_order() -> None:
    batches = {
        0: batch_of({"user": "a", "item": "x"}, {"user": "a", "item": "y"}),
        1: batch_of({"user": "b", "item": "x"}, {"user": "b", "item": "z"}),
    }
    events = [e.event for b in batches.values() for e in b.entries]
    events = [events[0], events[2], events[3]]  # b's first was skipped (a redelivery)
    result = AppliedBatch(
        users={"a": UserState(StreamId(2, 0)), "b": UserState(StreamId(4, 0))},
        log={"events": events, "stream_id": ["1-0", "3-0", "4-0"], "base_version": "v1"},
        applied=3,
        skipped=1,
        reset=["b"],
        labels=np.array([1.0, 0.0, 1.0]),
        predictions=np.array([0.1, 0.2, 0.3]),
        base_predictions=np.array([0.4, 0.5, 0.6]),
        served_predictions=np.array([0.7, 0.8, 0.9]),
        positions=np.array([0, 0, 1]),
    )
    parts = passes.split(result, batches)
    a, b = parts[0], parts[1]
    assert list(a.users) == ["a"] and list(b.users) == ["b"]
    assert a.log == {"events": events[:1], "stream_id": ["1-0"], "base_version": "v1"}
    assert b.log == {"events": events[1:], "stream_id": ["3-0", "4-0"], "base_version": "v1"}
    assert (a.applied, a.skipped, b.applied, b.skipped) == (1, 1, 2, 0)
    assert a.reset == [] and b.reset == ["b"]
    assert b.predictions.tolist() == [0.2, 0.3] and a.served_predictions.tolist() == [0.7]
    assert b.positions.tolist() == [0, 1] and a.labels.tolist() == [1.0]


def test_split_knows_every_field_of_an_applied_batch() -> None:
    """A field added to AppliedBatch must be carried by passes.split (or this test says
    why not): else a shard's commit silently loses it when its batch shared a pass."""
    carried = {"users", "log", "applied", "skipped", "reset", "labels", "predictions",
               "base_predictions", "served_predictions", "positions"}  # fmt: skip
    # only batches with forget or rebase entries have these, and they are applied alone
    alone = {"forgotten", "rebased", "rebase_notes"}
    assert {f.name for f in fields(AppliedBatch)} == carried | alone
