"""The one fold (``aggregate.fold``) on deltas held in memory, as the replay's aggregated arms
call it; its agreement with the service's rounds is tested in ``test_aggregate_store``."""

from __future__ import annotations

import numpy as np
import pytest

from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.fold import fold_pairs
from fedlearn.model import Base, Delta

# No clipping, every user weighs one: the averages below can be read off by hand.
PLAIN = AggregationConfig(clip_norm=None, max_weight=1, min_users=1, min_row_users=1)


def _base() -> Base:
    return Base.fresh(["item=a", "item=b", "genre=x"], n_factors=3, init_seed=5)


def _two_users() -> tuple[Delta, Delta]:
    a, b = Delta(3), Delta(3)
    a.w0, b.w0 = 0.4, -0.2
    a._w[a.rows_of(["item=a", "genre=x", "user=1"])] = [1.0, 0.5, 9.0]
    b._w[b.rows_of(["genre=x", "item=new"])] = [0.1, 2.0]
    b._v[b.rows_of(["item=new"])] = [0.3, 0.3, 0.3]
    return a, b


def test_each_row_moves_by_the_mean_of_the_users_who_changed_it() -> None:
    base = _base()
    a, b = _two_users()
    folded, _, summary = fold_pairs(base, [(a, None, 1), (b, None, 1)], PLAIN, version="v2")
    assert folded is not None and folded.version == "v2"
    w, v = folded.rows(["item=a", "item=b", "genre=x", "item=new"])
    np.testing.assert_allclose(w, [1.0, 0.0, 0.3, 2.0])
    np.testing.assert_allclose(v[3], base.rows(["item=new"])[1][0] + 0.3, rtol=1e-6)
    assert folded.w0 == pytest.approx(0.1)
    # min_row_users 1 folds every row but a user's own (private by name: tested below)
    assert summary["users"] == 2 and summary["rows_withheld"] == 1


@pytest.mark.parametrize("config", [PLAIN, AggregationConfig(min_users=1)], ids=["1", "default"])
def test_a_user_s_own_row_is_never_folded_even_if_many_users_moved_it(
    config: AggregationConfig,
) -> None:
    # Two users moving the same own row (a sybil, or a shared device) still do not publish it.
    a, b = _two_users()
    b._w[b.rows_of(["user=1"])] = [9.0]
    folded, _, summary = fold_pairs(_base(), [(a, None, 1), (b, None, 1)], config, version="2")
    assert folded is not None and "user=1" not in folded.index
    assert "item=a" in folded.index and "item=new" in folded.index  # one user's rows are folded
    assert summary["rows_withheld"] == 1


def test_rows_fewer_users_changed_than_min_row_users_stay_private() -> None:
    a, b = _two_users()
    config = PLAIN.with_(min_row_users=2)
    folded, _, summary = fold_pairs(_base(), [(a, None, 1), (b, None, 1)], config, version="2")
    assert folded is not None
    assert "user=1" not in folded.index and "item=new" not in folded.index
    assert folded.rows(["genre=x"])[0][0] == pytest.approx(0.3)
    assert summary["rows_withheld"] == 3


def test_the_naive_mean_dilutes_a_row_over_all_participants() -> None:
    a, b = _two_users()
    pairs = [(a, None, 1), (b, None, 1)]
    naive, _, _ = fold_pairs(_base(), pairs, PLAIN, version="2", per_row=False)
    assert naive is not None
    np.testing.assert_allclose(naive.rows(["item=a", "item=new", "genre=x"])[0], [0.5, 1.0, 0.3])


def test_only_the_change_since_the_last_contribution_counts() -> None:
    before = Delta(3)
    before._w[before.rows_of(["item=a"])] = [1.0]
    after = before.copy()
    after._w[after.rows_of(["item=a"])] = [1.5]
    folded, _, _ = fold_pairs(_base(), [(after, before, 1)], PLAIN, version="2")
    assert folded is not None and folded.rows(["item=a"])[0][0] == pytest.approx(0.5)


def test_too_few_users_publish_nothing() -> None:
    a, _ = _two_users()
    folded, state, summary = fold_pairs(_base(), [(a, None, 1)], AggregationConfig(), version="2")
    assert folded is None and state is None and summary["status"] == "skipped"
