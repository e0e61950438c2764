"""Stream entries in bulk: the fast paths of decoding and screening decide as the precise ones.

``parse_entries`` and ``screen_events`` take a shortcut for the common entry (a JSON object,
a plain event); every entry must still end up exactly where ``_decode`` and ``event_problem``,
applied one by one, put it, with their reasons.
"""

from __future__ import annotations

import orjson
import pytest

from fedlearn.store.entries import (
    DELETED,
    FIELD,
    NO_FIELD,
    Batch,
    Entry,
    Rejected,
    _parse_columns,
    _plain_columns,
    event_problem,
    parse_entries,
    parse_read_many,
    screen_events,
)


def _event(i: int, **changes: object) -> dict:
    event = {"event_id": f"e{i}", "user": f"u{i % 7}", "item": f"i{i % 11}", "signal": "click",
             "context": {"hour": str(i % 3)}}  # fmt: skip
    event.update(changes)
    return {k: v for k, v in event.items() if v is not None}


BAD = [
    _event(100, user="u\x07bell"),  # plain shape, a control character: caught in bulk
    _event(101, item="i\x1b"),
    _event(102, signal="like"),
    _event(103, context={"hour": "2\n1"}),
    _event(104, context={"user": "victim"}),  # a reserved context key
    _event(105, context={"tags": ["a"]}),  # an unhashable value: checked in full
    _event(106, context={"price": 1e9}),
    _event(107, user="x" * 129),
    _event(108, type="replay"),
    _event(109, prediction_id=""),
]
GOOD = [_event(i) for i in range(40)] + [
    _event(200, user="ユーザー"),
    _event(201, user="u\u2028sep"),  # printable per the id rule, not per isprintable: slow path
    _event(202, prediction_id="p1"),
    {"event_id": "forget:1", "user": "u1", "type": "forget", "ts": 1.0},
]


def test_screening_in_bulk_rejects_exactly_what_event_problem_rejects() -> None:
    events = GOOD[:20] + BAD + GOOD[20:]
    for round_ in range(2):  # the second time, the good contexts are remembered
        batch = screen_events(Batch([Entry(f"{i}-{round_}", e) for i, e in enumerate(events)]))
        expected = {f"{i}-{round_}": event_problem(e) for i, e in enumerate(events)}
        assert [e.id for e in batch.entries] == [i for i, p in expected.items() if p is None]
        assert {r.id: r.reason for r in batch.rejected} == {
            i: f"invalid event: {p}" for i, p in expected.items() if p is not None
        }
        assert len(batch.rejected) == len(BAD)


def test_a_control_character_sends_the_whole_batch_to_the_precise_check() -> None:
    events = [*GOOD[:5], _event(300, user="bad\x00"), *GOOD[5:10]]
    batch = screen_events(Batch([Entry(f"{i}-0", e) for i, e in enumerate(events)]))
    assert [r.id for r in batch.rejected] == ["5-0"]
    assert "control characters" in batch.rejected[0].reason
    assert len(batch.entries) == 10


def _as_redis_sends(fields: dict[bytes, bytes] | None) -> list[bytes] | None:
    return None if fields is None else [part for pair in fields.items() for part in pair]


@pytest.mark.parametrize("shape", ["parsed", "as sent"])
def test_decoding_in_bulk_keeps_order_and_says_why_an_entry_is_rejected(shape: str) -> None:
    raw = [
        (b"1-0", {FIELD: orjson.dumps(GOOD[0])}),
        (b"2-0", {FIELD: b"{not json"}),
        (b"3-0", {FIELD: b"[1, 2]"}),
        (b"4-0", None),
        (b"5-0", {b"other": b"x"}),
        (b"6-0", {b"other": b"x", FIELD: orjson.dumps(GOOD[1])}),
    ]
    if shape == "as sent":  # the trainer's reader: [field, value, ...] as Redis sends them
        raw = [(entry_id, _as_redis_sends(fields)) for entry_id, fields in raw]
    batch = parse_entries(raw)
    assert batch.entries == [
        Entry("1-0", GOOD[0], orjson.dumps(GOOD[0])),  # with its text, for the event log
        Entry("6-0", GOOD[1], orjson.dumps(GOOD[1])),
    ]
    reasons = {r.id: r.reason for r in batch.rejected}
    assert reasons["2-0"].startswith("field 'e' is not JSON")
    assert reasons["3-0"] == "field 'e' is JSON list, not an object"
    assert reasons["4-0"] == DELETED
    assert reasons["5-0"] == NO_FIELD
    assert batch.ids == ["1-0", "6-0", "2-0", "3-0", "4-0", "5-0"]


def test_a_raw_read_over_several_streams_is_decoded_per_stream() -> None:
    entries = [[b"1-0", [FIELD, orjson.dumps(GOOD[0])]], [b"2-0", None]]
    for reply in ({b"s:1": entries, b"s:2": []}, [[b"s:1", entries]]):  # RESP3, RESP2
        batches = parse_read_many(reply, raw=True)
        assert list(batches) == ["s:1"]
        assert batches["s:1"].entries == [Entry("1-0", GOOD[0], orjson.dumps(GOOD[0]))]
        assert batches["s:1"].rejected == [Rejected("2-0", DELETED)]


PLAIN = [
    *(_event(i) for i in range(40)),
    _event(202, prediction_id="p1"),
    _event(203, context={}),
    _event(204, context=None),
]
ODD = [  # each alone makes a batch of plain events go one by one
    *BAD,
    _event(110, signal=["click"]),  # unhashable: the columns cannot take it
    _event(111, context=""),  # falsy but no object
    _event(112, context={"hour": {"h": 1}}),
    _event(113, user=None),
    _event(114, prediction_id=7),
    {"event_id": "forget:2", "user": "u2", "type": "forget", "ts": 1.0},
]


def _screened(events: list[dict]) -> Batch:
    return screen_events(Batch([Entry(f"{i}-0", e) for i, e in enumerate(events)]))


def _assert_columns_match(batch: Batch) -> None:
    assert batch.users == [e.event["user"] for e in batch.entries]
    assert batch.items == [e.event.get("item") for e in batch.entries]
    assert batch.prediction_ids == [e.event.get("prediction_id") for e in batch.entries]


def test_a_batch_of_plain_events_is_kept_whole_with_its_columns() -> None:
    assert _plain_columns(PLAIN) is not None  # the bulk path, not the one by one
    batch = _screened(PLAIN)
    assert [e.event for e in batch.entries] == PLAIN and not batch.rejected
    _assert_columns_match(batch)
    assert batch.prediction_ids[-3] == "p1"


@pytest.mark.parametrize("odd", ODD, ids=lambda e: e["event_id"])
def test_one_odd_entry_among_plain_ones_is_judged_as_event_problem_judges_it(odd: dict) -> None:
    events = [*PLAIN[:10], odd, *PLAIN[10:]]
    batch = _screened(events)
    problem = event_problem(odd)
    if problem is None:  # a forget entry: kept, in its place
        assert [e.event for e in batch.entries] == events and not batch.rejected
    else:
        assert [e.event for e in batch.entries] == PLAIN
        assert batch.rejected == [Rejected("10-0", f"invalid event: {problem}", orjson.dumps(odd))]
    _assert_columns_match(batch)


def _ours(payloads: list[bytes]) -> list[list]:
    """Entries as Redis sends them to the trainer's reader."""
    return [[f"{i + 1}-0".encode(), [FIELD, payload]] for i, payload in enumerate(payloads)]


def _one_by_one(raw: list) -> Batch:
    batch = Batch()
    for entry in raw:  # one entry at a time cannot take the bulk path's view of a batch
        batch.extend(parse_entries([entry]))
    return batch


@pytest.mark.parametrize(
    "bad",
    [b"{not json", b"[1, 2]", b"7", b"", b'{"a": 1}{"b": 2}', b'{"a": 1},{"b": 2}'],
    ids=["not-json", "a-list", "a-number", "empty", "two-objects", "two-with-a-comma"],
)
def test_one_malformed_entry_among_good_ones_is_rejected_alone_with_its_reason(bad: bytes) -> None:
    payloads = [orjson.dumps(e) for e in PLAIN]
    raw = _ours([*payloads[:5], bad, *payloads[5:]])
    batch = parse_entries(raw)
    assert [e.raw for e in batch.entries] == payloads
    assert [e.event for e in batch.entries] == PLAIN
    assert batch.rejected == _one_by_one(raw).rejected
    assert [r.id for r in batch.rejected] == ["6-0"]
    assert batch.ids == [f"{i}-0" for i in [1, 2, 3, 4, 5, *range(7, len(raw) + 1), 6]]


def test_payloads_are_decoded_each_alone_not_as_one_json_text() -> None:
    """Joined by commas these three read as three objects ({"a": [1, 2]}, {}, {}); each on
    its own is no JSON object, and none may be paired with another's id or text."""
    raw = _ours([orjson.dumps(PLAIN[0]), b'{"a": [1', b"2]}", b"{},{}"])
    batch = parse_entries(raw)
    assert batch.entries == [Entry("1-0", PLAIN[0], orjson.dumps(PLAIN[0]))]
    assert [r.id for r in batch.rejected] == ["2-0", "3-0", "4-0"]
    assert all(r.reason.startswith("field 'e' is not JSON") for r in batch.rejected)


def test_a_batch_of_ours_decodes_in_bulk_as_one_by_one() -> None:
    raw = _ours([orjson.dumps(e) for e in PLAIN])
    assert _parse_columns(raw) is not None  # the bulk path, not the one by one
    batch = parse_entries(raw)
    assert batch.entries == _one_by_one(raw).entries
    assert all(type(e) is Entry and type(e.id) is str for e in batch.entries)
