"""Stream ids compare as (ms, seq) integer pairs, never as strings."""

from __future__ import annotations

import pytest

from fedlearn.store import StreamId, already_applied, compare_ids


def test_ids_compare_numerically_not_as_strings():
    assert "9-0" > "10-0"  # the trap
    assert compare_ids("9-0", "10-0") == -1
    assert compare_ids(b"10-0", "9-0") == 1
    assert compare_ids("5-10", "5-9") == 1
    assert compare_ids("5-3", StreamId(5, 3)) == 0
    assert sorted(map(StreamId.parse, ["10-0", "9-5", "9-10"])) == [(9, 5), (9, 10), (10, 0)]


def test_parse_and_format_round_trip():
    sid = StreamId.parse(b"1700000000000-12")
    assert sid == StreamId(1700000000000, 12)
    assert str(sid) == "1700000000000-12"
    assert StreamId.parse("17") == StreamId(17, 0)


@pytest.mark.parametrize("bad", ["", "-1", "a-1", "1-b", "1-2-3", "1 -2", "١-2"])
def test_malformed_ids_are_refused_with_the_value(bad):
    with pytest.raises(ValueError, match="stream id must"):
        StreamId.parse(bad)


def test_next_is_the_smallest_later_id():
    assert StreamId(5, 3).next() == StreamId(5, 4)
    assert StreamId(5, 2**64 - 1).next() == StreamId(6, 0)


def test_previous_is_the_largest_earlier_id():
    assert StreamId(5, 3).previous() == StreamId(5, 2)
    assert StreamId(6, 0).previous() == StreamId(5, 2**64 - 1)
    assert StreamId(6, 0).previous().next() == StreamId(6, 0)
    with pytest.raises(ValueError, match="0-0 is the first stream id"):
        StreamId(0, 0).previous()


def test_already_applied_skips_ids_up_to_the_stored_one():
    assert already_applied("10-1", "10-1")
    assert already_applied("9-99", "10-0")
    assert not already_applied("10-2", "10-1")
    assert not already_applied("10-0", "9-0")
    assert not already_applied("1-0", None)
    assert not already_applied("1-0", b"")
