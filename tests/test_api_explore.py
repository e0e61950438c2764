"""Exploration in rank over real HTTP (an in-process werkzeug server, a real redis-server):
the operator's policy and a request's own within the limits, each shown item's propensity in
the answer and the prediction record, refusals that name the limit and store nothing, and the
propensity's trip rank -> event -> trainer -> event log -> ``datasets from-eventlog``, and
``fedlearn ope --policy`` on the log the service wrote (each top slot's candidates logged)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import urllib3
from click.testing import CliRunner

from fedlearn.cli import main
from fedlearn.config import Settings, load_settings
from fedlearn.data.eventlog import read_log
from fedlearn.data.fromlog import SERVED_FILE, dataset_from_eventlog
from fedlearn.model import Base
from fedlearn.model.policy import Policy, ranking_propensities
from fedlearn.store import Store, keys
from fedlearn.trainer.apply import CloneSettings
from fedlearn.trainer.eventlog import EventLogWriter
from fedlearn.trainer.trainer import Trainer

N_SHARDS = 2
ITEMS = [f"m{i}" for i in range(8)]
BASE = Base.fresh([f"item={i}" for i in ITEMS] + ["user=alice"], 4, version="v1", init_scale=0.5)
HTTP = urllib3.PoolManager(retries=False, timeout=30.0)
RANK = "/v1/users/alice/rank"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        auth=False, n_shards=N_SHARDS, data_dir=tmp_path, explore_policy="epsilon",
        explore_epsilon=0.1, explore_max_epsilon=0.5, explore_min_temperature=0.05,
    )  # fmt: skip


@pytest.fixture
def store(redis_url: str) -> Iterator[Store]:
    with Store.from_url(redis_url, N_SHARDS) as s:
        s.bases.put_base("v1", BASE.to_bytes(), {"generation": 0})
        s.bases.set_current("v1")
        yield s


def post(url: str, path: str, body: Any) -> urllib3.BaseHTTPResponse:
    return HTTP.request(
        "POST", url + path, body=orjson.dumps(body), headers={"Content-Type": "application/json"}
    )


def rank(url: str, **request: Any) -> dict[str, Any]:
    response = post(url, RANK, {"items": [{"id": i} for i in ITEMS], **request})
    assert response.status == 200, response.data[:500]
    return response.json()


def record_of(store: Store, prediction_id: str) -> dict[str, Any]:
    return store.predictions.get_predictions(store.shard_of("alice"), [(prediction_id, "alice")])[
        prediction_id
    ]


def problem(response: urllib3.BaseHTTPResponse, status: int = 422) -> dict[str, Any]:
    assert response.status == status, response.data[:500]
    assert response.headers["Content-Type"] == "application/problem+json"
    return response.json()


def event(i: int, item: str, **fields: Any) -> dict[str, Any]:
    return {"event_id": f"e{i}", "user": "alice", "item": item, "signal": "click", "ts": 1.7e9,
            **fields}  # fmt: skip


def train_and_log(url: str, store: Store, events: list[dict[str, Any]], log: Path) -> int:
    """Send ``events``, let a real trainer apply them all and write its event log under
    ``log``; returns how many lines the log got."""
    assert post(url, "/v1/events", {"events": events}).status == 202
    trainer = Trainer(
        store,
        lambda base: CloneSettings(lr=0.1, l2=0.0, bias_lr=0.1),
        eventlog=EventLogWriter(store, log),
    )
    trainer.ownership.maintain()
    while trainer.step() > 0:
        pass
    return trainer.drain_eventlog()


def test_the_operators_policy_ranks_and_every_shown_item_has_its_propensity(
    url: str, store: Store
) -> None:
    body = rank(url, k=3)
    assert body["policy"] == {"kind": "epsilon", "epsilon": 0.1}
    assert len(body["items"]) == 3
    record = record_of(store, body["prediction_id"])
    assert record["policy"] == body["policy"]
    for slot, shown in enumerate(body["items"]):
        assert 0.0 < shown["propensity"] <= 1.0
        stored = record["items"][shown["id"]]
        assert (stored["slot"], stored["propensity"]) == (slot, shown["propensity"])
    # Candidates not shown were scored (and kept for training) but have no slot.
    unshown = set(ITEMS) - {shown["id"] for shown in body["items"]}
    assert all("propensity" not in record["items"][item] for item in unshown)


@pytest.mark.parametrize(
    ("choice", "used"),
    [
        ({"kind": "softmax", "temperature": 0.2}, Policy("softmax", temperature=0.2)),
        ({"kind": "epsilon", "epsilon": 0.5}, Policy("epsilon", epsilon=0.5)),
        ({"kind": "epsilon"}, Policy("epsilon", epsilon=0.1)),  # the operator's epsilon
        ({"kind": "greedy"}, Policy.greedy()),
    ],
)
def test_a_requests_policy_is_followed_and_its_propensities_are_the_policys(
    url: str, store: Store, choice: dict[str, Any], used: Policy
) -> None:
    body = rank(url, policy=choice)
    assert body["policy"] == used.as_dict()
    scored = record_of(store, body["prediction_id"])["items"]
    scores = np.array([scored[item]["score"] for item in ITEMS])
    order = np.array([ITEMS.index(shown["id"]) for shown in body["items"]])
    expected = ranking_propensities(scores, order, used)
    assert [shown["propensity"] for shown in body["items"]] == pytest.approx(expected.tolist())
    if used.kind == "greedy":
        assert order.tolist() == np.argsort(-scores, kind="stable").tolist()


@pytest.mark.parametrize(
    ("choice", "field", "says"),
    [
        ({"kind": "epsilon", "epsilon": 0.6}, "policy.epsilon", "FEDLEARN_EXPLORE_MAX_EPSILON"),
        (
            {"kind": "softmax", "temperature": 0.01},
            "policy.temperature",
            "FEDLEARN_EXPLORE_MIN_TEMPERATURE",
        ),
        ({"kind": "epsilon", "temperature": 1.0}, "policy.temperature", "not a known field"),
        ({"kind": "epsilon", "epsilon": 1.5}, "policy.epsilon", "less than or equal to 1"),
        ({"kind": "thompson"}, "policy", "expected tags: 'greedy', 'epsilon', 'softmax'"),
    ],
)
def test_a_policy_beyond_the_limits_is_a_422_naming_it_and_nothing_is_stored(
    url: str, store: Store, choice: dict[str, Any], field: str, says: str
) -> None:
    body = problem(post(url, RANK, {"items": [{"id": "m1"}], "policy": choice}))
    assert body["errors"][0]["field"] == field
    assert says in body["detail"] + body["errors"][0]["message"]
    assert store.client.hlen(keys.predictions_of(store.shard_of("alice"), "alice")) == 0


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"propensity": 0.0, "policy": {"kind": "greedy"}}, "greater than 0"),
        ({"propensity": 1.5, "policy": {"kind": "greedy"}}, "less than or equal to 1"),
        ({"propensity": 0.5}, "propensity was sent without the other"),
        ({"policy": {"kind": "softmax", "temperature": 0.1}}, "policy was sent without"),
        ({"propensity": 0.5, "policy": {"kind": "softmax"}}, "is required"),
        ({"propensity": None, "policy": {"kind": "greedy"}}, "propensity is null"),
        ({"propensity": 0.5, "policy": {"kind": "greedy"}, "slot": -1}, "greater than or equal"),
    ],
)
def test_an_event_with_a_bad_propensity_is_a_422_and_nothing_is_written(
    url: str, store: Store, fields: dict[str, Any], says: str
) -> None:
    body = problem(post(url, "/v1/events", {"events": [event(0, "m1", **fields)]}))
    assert says in str(body["errors"])
    assert sum(store.streams.length(s) for s in store.shards) == 0


def test_propensities_reach_the_event_log_and_the_dataset(
    url: str, store: Store, tmp_path: Path
) -> None:
    ranked = rank(url, k=3, policy={"kind": "softmax", "temperature": 0.3})
    pid = ranked["prediction_id"]
    first, second = ranked["items"][0], ranked["items"][1]
    browser = {"propensity": 0.25, "slot": 4, "policy": {"kind": "epsilon", "epsilon": 0.2}}
    events = [
        event(0, first["id"], prediction_id=pid),
        # The server's record of its own ranking wins over what a client claims for it.
        event(1, second["id"], prediction_id=pid, **browser),
        event(2, "m7", **browser),  # ranked in the browser: the client's own fields
        event(3, "m6"),  # no ranking known: no propensity
    ]
    log_root = tmp_path / "log"
    assert train_and_log(url, store, events, log_root) == 4
    logged = {line["event_id"]: line for line in read_log(log_root)}
    softmax = {"kind": "softmax", "temperature": 0.3}
    assert [logged["e0"][k] for k in ("propensity", "slot", "policy")] == [
        first["propensity"], 0, softmax,
    ]  # fmt: skip
    assert [logged["e1"][k] for k in ("propensity", "slot", "policy")] == [
        second["propensity"], 1, softmax,
    ]  # fmt: skip
    assert [logged["e2"][k] for k in ("propensity", "slot", "policy")] == list(browser.values())
    assert not {"propensity", "slot", "policy"} & logged["e3"].keys()
    # Slot 0's line carries the ranking's candidates, as scored, in the record's order.
    record = record_of(store, pid)
    assert logged["e0"]["candidates"] == [
        {"item": item, "features": scored["features"]} for item, scored in record["items"].items()
    ]
    assert [c["item"] for c in logged["e0"]["candidates"]] == ITEMS
    assert not {"candidates"} & (logged["e1"].keys() | logged["e2"].keys())

    manifest = dataset_from_eventlog(log_root, tmp_path / "ds")
    assert manifest.counts["with_propensity"] == 3
    served = [orjson.loads(line) for line in (tmp_path / "ds" / SERVED_FILE).read_bytes().split()]
    by_id = {line["event_id"]: line for line in served}
    assert by_id["e0"]["propensity"] == first["propensity"] and "propensity" not in by_id["e3"]
    assert by_id["e0"]["candidates"] == logged["e0"]["candidates"]


def test_metrics_count_shown_and_explored_items_by_policy(url: str, store: Store) -> None:
    for _ in range(5):
        rank(url, policy={"kind": "epsilon", "epsilon": 0.5})
    rank(url, policy={"kind": "greedy"})
    text = HTTP.request("GET", url + "/metrics").data.decode()

    def metric(name: str, policy: str) -> float:
        found = re.search(rf'^{name}{{policy="{policy}"}} (\S+)$', text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    assert metric("fedlearn_rank_shown_items_total", "epsilon") == 5 * len(ITEMS)
    assert metric("fedlearn_rank_shown_items_total", "greedy") == len(ITEMS)
    assert metric("fedlearn_rank_explored_items_total", "greedy") == 0
    # Epsilon 0.5 over 8 slots, 5 times: some picks explore (the chance that none of the
    # 35 slots with a choice does is the product of (1 + 1/m) / 2 over them: below 1e-7).
    assert 0 < metric("fedlearn_rank_explored_items_total", "epsilon") <= 5 * len(ITEMS)


RANKINGS = 40


def _write(root: Path, lines: list[dict]) -> None:
    folder = root / "shard=000"
    folder.mkdir(parents=True)
    (folder / "2026-01-01.jsonl").write_bytes(
        b"".join(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE) for line in lines)
    )


def _ope(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["ope", *args])
    return result.exit_code, result.output


def test_ope_estimates_a_policy_on_the_log_the_service_wrote(
    url: str, store: Store, tmp_path: Path
) -> None:
    events = []
    for n in range(RANKINGS):
        user = f"u{n % 8}"  # several users: the interval is clustered by user
        response = post(url, f"/v1/users/{user}/rank", {
            "items": [{"id": i} for i in ITEMS], "k": 2,
            "policy": {"kind": "epsilon", "epsilon": 0.3},
        })  # fmt: skip
        assert response.status == 200, response.data[:500]
        ranked = response.json()
        top = ranked["items"][0]["id"]
        # The users like the even items: a click when one is on top, else a skip.
        signal = "click" if int(top[1:]) % 2 == 0 else "skip"
        events.append(
            event(n, top, user=user, prediction_id=ranked["prediction_id"], signal=signal)
        )
    events.append(event(RANKINGS, "m3", propensity=0.5, slot=0,  # ranked in the browser
                        policy={"kind": "epsilon", "epsilon": 0.2}))  # fmt: skip
    log = tmp_path / "log"
    assert train_and_log(url, store, events, log) == RANKINGS + 1
    base = str(BASE.save(tmp_path / "base.flfm"))

    code, out = _ope(str(log), "--base", base, "--policy", "epsilon:0.05", "--json")
    assert code == 0, out
    summary = orjson.loads(out)
    assert (summary["decisions"], summary["without_candidates"]) == (RANKINGS, 1)
    (value,) = summary["policies"]
    assert value["policy"] == "epsilon:0.05"
    for name in ("ips", "snips", "dr"):
        estimate = value[name]
        assert estimate["n"] == RANKINGS  # the browser's top slot has no candidates: skipped
        assert estimate["low"] <= estimate["value"] <= estimate["high"]
    code, out = _ope(str(log), "--base", base, "--policy", "epsilon:0.05")
    assert code == 0 and "1 top-slot events without candidates skipped" in out

    # The same log as a service that did not log candidates wrote it: refused, precisely.
    lines = [{k: v for k, v in line.items() if k != "candidates"} for line in read_log(log)]
    _write(tmp_path / "old", lines)
    code, out = _ope(str(tmp_path / "old"), "--base", base, "--policy", "epsilon:0.05")
    assert code == 1
    assert "2026-01-01.jsonl line 1" in out and "not the ranking's candidates" in out


@pytest.mark.parametrize("bad", [[{"item": "m1"}], "m1", [["m1", {}]]])
def test_malformed_candidates_are_refused_with_their_line(tmp_path: Path, bad: object) -> None:
    line = event(0, "m1", prediction_id="p", propensity=0.5, slot=0, stream_id="1-0",
                 policy={"kind": "greedy"}, candidates=bad)  # fmt: skip
    _write(tmp_path, [line])
    base = str(BASE.save(tmp_path / "base.flfm"))
    code, out = _ope(str(tmp_path), "--base", base)
    assert code == 1 and "line 1" in out and "candidates must be a list" in out
