"""Learning cannot diverge: bounded feature values, clipped steps, a bounded delta, a row cap.

The first attack of issue #10: 40 schema-valid events with ``{"a": 1e6, "b": 1e6}`` turned a
clone into NaN, and a feature value of 10 over 200 events already diverged. Values that large
are now refused at the door; the update itself is still bounded for whatever gets through.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from fedlearn.api.schemas import Event, RankRequest
from fedlearn.data.validate import check_context
from fedlearn.model import Base, Clone, Delta, FeatureError, event_features, learn_many
from fedlearn.model.features import MAX_FEATURE_VALUE
from fedlearn.model.fm import MAX_DELTA

BASE = Base.fresh(["user=u", "item=1", "item=2", "a", "b"], 4, version="b")


def assert_bounded(delta: Delta) -> None:
    assert delta.is_finite()
    assert abs(delta.w0) <= MAX_DELTA
    assert np.abs(delta.w).max(initial=0) <= MAX_DELTA
    assert np.abs(delta.v).max(initial=0) <= MAX_DELTA


def test_values_at_the_bound_then_ten_thousand_events_of_ten_leave_the_clone_finite() -> None:
    clone = Clone(BASE, lr=0.05, bias_lr=0.2)
    at_bound = {"user=u": 1.0, "item=1": 1.0, "a": MAX_FEATURE_VALUE, "b": -MAX_FEATURE_VALUE}
    for i in range(40):
        assert np.isfinite(clone.learn_one(at_bound, i % 2))
    assert_bounded(clone.delta)
    events = [
        ("u", {"user=u": 1.0, f"item={1 + i % 2}": 1.0, "a": 10.0, "b": 10.0}, int(i % 3 == 0))
        for i in range(10_000)
    ]
    predictions = learn_many(BASE, {"u": clone.delta}, events, lr=0.05, bias_lr=0.2)
    assert np.isfinite(predictions).all()
    assert_bounded(clone.delta)
    again = Delta.from_bytes(clone.delta.to_bytes())
    assert np.isfinite(Clone(BASE, again).predict_proba_one(at_bound))


def test_even_values_the_api_refuses_cannot_make_a_clone_non_finite() -> None:
    # Defence in depth: a recorded prediction or an old stream entry might still hold one.
    clone = Clone(BASE, lr=0.5)
    for i in range(200):
        clone.learn_one({"user=u": 1.0, "a": 1e6, "b": -1e6}, i % 2)
    assert_bounded(clone.delta)


def test_the_validator_and_the_api_schema_refuse_values_beyond_the_bound_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"'context\.a' must be within \[-10, 10\]"):
        check_context({"a": 1e6})
    with pytest.raises(FeatureError, match="context value of 'a'"):
        event_features("u", "1", {"a": 1e6})
    with pytest.raises(ValidationError, match=r"context\.a\.number"):
        Event.model_validate(
            {"event_id": "e", "user": "u", "item": "1", "signal": "click", "ts": 1.0,
             "context": {"a": 1e6}}
        )  # fmt: skip
    assert check_context({"a": MAX_FEATURE_VALUE, "b": -0.5}) == {"a": 10.0, "b": -0.5}


@pytest.mark.parametrize("key", ["user", "item", "user=victim", "item=42"])
def test_context_keys_that_would_make_user_or_item_features_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="reserved"):
        check_context({key: "victim"})
    with pytest.raises(FeatureError, match="reserved"):
        event_features("u", "1", {key: "victim"})
    with pytest.raises(ValidationError, match="reserved"):
        Event.model_validate(
            {"event_id": "e", "user": "u", "item": "1", "signal": "click", "ts": 1.0,
             "context": {key: "victim"}}
        )  # fmt: skip
    # Names that only start with the same letters are ordinary context.
    assert event_features("u", "1", {"username": "x", "items": 2.0})["username=x"] == 1.0


def test_item_features_of_a_rank_call_are_bounded_and_cannot_name_user_or_item_rows() -> None:
    # They are recorded with the prediction and trained on when an event names it.
    def rank(features: dict[str, float]) -> RankRequest:
        return RankRequest.model_validate({"items": [{"id": "1", "features": features}]})

    with pytest.raises(ValidationError, match=r"items\.0\.features\.g"):
        rank({"g": 1e6})
    for name in ["user=victim", "item=42", "user"]:
        with pytest.raises(ValidationError, match=r"item feature .* is reserved"):
            rank({name: 1.0})
    assert rank({"genre=Drama": 1.0, "year": -MAX_FEATURE_VALUE}).items[0].features


def test_the_row_cap_evicts_the_least_recently_used_rows_into_the_base() -> None:
    clone = Clone(BASE, lr=0.1, max_rows=4)
    clone.learn_one({"user=u": 1.0, "item=1": 1.0}, 1)
    clone.learn_one({"user=u": 1.0, "item=2": 1.0}, 0)
    clone.learn_one({"user=u": 1.0, "x=3": 1.0}, 1)
    assert list(clone.delta.index) == ["item=1", "item=2", "user=u", "x=3"]
    clone.learn_one({"item=2": 1.0, "x=4": 1.0}, 1)
    # item=1 was least recently used; item=2 was used again, so it is now among the newest.
    assert list(clone.delta.index) == ["user=u", "x=3", "item=2", "x=4"]
    w, v = clone.delta.lookup(["item=1"])  # no delta row: the clone reads the base's value
    assert w[0] == 0.0 and not v.any()
    for again in (
        Delta.from_bytes(clone.delta.to_bytes()),
        Delta.from_json(clone.delta.to_json(), BASE.n_factors),
    ):
        assert list(again.index) == list(clone.delta.index), "recency survives serialization"
        x = {"user=u": 1.0, "item=2": 1.0, "x=4": 1.0}
        assert Clone(BASE, again).predict_proba_one(x) == pytest.approx(
            clone.predict_proba_one(x), abs=1e-6
        )


def test_a_batch_touches_rows_in_event_order_before_the_cap_applies() -> None:
    events = [
        ("u", {"user=u": 1.0, "item=1": 1.0}, 1),
        ("v", {"user=v": 1.0}, 0),
        ("u", {"item=2": 1.0, "item=1": 1.0}, 0),
        ("u", {"x=9": 1.0}, 1),
    ]
    deltas: dict[str, Delta] = {}
    learn_many(BASE, deltas, events, lr=0.1, max_rows=3)
    assert list(deltas["u"].index) == ["item=2", "item=1", "x=9"]
    assert list(deltas["v"].index) == ["user=v"]
