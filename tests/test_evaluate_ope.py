"""Off-policy estimators: unbiased with known propensities, intervals that cover, bad logs
refused; the candidate's own policy reweights its own log by exactly 1."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from fedlearn.data.errors import DataError
from fedlearn.evaluate.decisions import decisions_from_eventlog
from fedlearn.evaluate.ope import Scored, estimate

N_DECISIONS, N_CANDIDATES, N_USERS = 2000, 5, 200


def _softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    w = np.exp((scores - scores.max(axis=1, keepdims=True)) / temperature)
    return w / w.sum(axis=1, keepdims=True)


def _bandit_log(seed: int) -> tuple[Scored, float, float]:
    """A logged contextual bandit whose truth is known: every decision's candidates have
    true click probabilities ``p``; the log picks by a softmax of noisy scores (propensities
    known), the target by a sharper softmax of other scores; the reward model is ``p`` plus
    noise. Returns the log scored for the target, its true value, and the log's click rate."""
    rng = np.random.default_rng(seed)
    shape = (N_DECISIONS, N_CANDIDATES)
    # Users differ in how much they click: decisions of one user are correlated.
    user_bias = rng.normal(0.0, 0.8, N_USERS)
    users = rng.integers(0, N_USERS, N_DECISIONS)
    p = 1.0 / (1.0 + np.exp(-(rng.normal(-1.0, 1.0, shape) + user_bias[users, None])))
    logging = _softmax(p + rng.normal(0.0, 0.3, shape), 0.5)
    target = _softmax(p + rng.normal(0.0, 0.1, shape), 0.1)
    shown = (rng.random(N_DECISIONS)[:, None] > np.cumsum(logging, axis=1)).sum(axis=1)
    rows = np.arange(N_DECISIONS)
    reward = (rng.random(N_DECISIONS) < p[rows, shown]).astype(float)
    q = np.clip(p + rng.normal(0.0, 0.1, shape), 0.0, 1.0)
    scored = Scored(
        users, reward, logging[rows, shown], target[rows, shown], q[rows, shown],
        (target * q).sum(axis=1),
    )  # fmt: skip
    return scored, float((target * p).sum(axis=1).mean()), float(reward.mean())


def test_estimators_are_unbiased_and_their_intervals_cover() -> None:
    runs = [(_bandit_log(seed), estimate(_bandit_log(seed)[0])) for seed in range(150)]
    truths = np.array([truth for (_, truth, _), _ in runs])
    logged = np.array([rate for (_, _, rate), _ in runs])
    # The target is better than the log: reweighting has something to correct.
    assert (truths - logged).mean() > 0.05
    for name in ("ips", "snips", "dr"):
        errors = np.array([e[name].value for _, e in runs]) - truths
        se = errors.std(ddof=1) / np.sqrt(len(errors))
        assert abs(errors.mean()) < 3 * se + 1e-3, (name, errors.mean(), se)
        covered = np.mean([e[name].covers(t) for (_, t, _), e in runs])
        assert 0.90 <= covered <= 0.99, (name, covered)
    naive = logged - truths  # what ignoring the propensities gives: far outside
    assert abs(naive.mean()) > 10 * naive.std(ddof=1) / np.sqrt(len(naive))


def test_dr_is_steadier_than_ips_with_a_good_reward_model() -> None:
    estimates = [estimate(_bandit_log(seed)[0]) for seed in range(40)]
    width = {n: np.mean([e[n].high - e[n].low for e in estimates]) for n in ("ips", "dr")}
    assert width["dr"] < width["ips"]


def test_a_propensity_outside_zero_one_is_refused_with_its_value() -> None:
    ones = np.ones(3)
    with pytest.raises(ValueError, match=r"propensity must be in \(0, 1\], decision 1 has 0.0"):
        Scored(np.arange(3), ones, np.array([0.5, 0.0, 1.0]), ones, ones, ones)
    with pytest.raises(ValueError, match="no logged decisions"):
        estimate(Scored(*(np.zeros(0) for _ in range(6))))


def _write_log(root, records) -> None:
    folder = root / "shard=000"
    folder.mkdir(parents=True)
    lines = b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in records)
    (folder / "2026-01-01.jsonl").write_bytes(lines)


EVENT = {
    "event_id": "e1", "user": "u1", "item": "i1", "signal": "click", "ts": 1.0,
    "context": {}, "prediction_id": "p1", "stream_id": "1000-0",
    "features": {"user=u1": 1.0, "item=i1": 1.0}, "features_from": "prediction",
    "prediction": 0.5, "base_prediction": 0.5, "base_version": "1", "applied_at": 2.0,
}  # fmt: skip


def test_an_event_log_without_propensities_is_refused_precisely(tmp_path) -> None:
    _write_log(tmp_path, [EVENT])
    with pytest.raises(DataError) as info:
        decisions_from_eventlog(tmp_path)
    message = str(info.value)
    assert "2026-01-01.jsonl line 1" in message
    assert "lacks propensity, slot, candidates" in message
    assert "written before propensities" in message


def test_an_event_log_with_propensities_gives_its_top_slot_decisions(tmp_path) -> None:
    candidates = [
        {"item": "i0", "features": {"user=u1": 1.0, "item=i0": 1.0}},
        {"item": "i1", "features": EVENT["features"]},
    ]
    top = {**EVENT, "propensity": 0.25, "slot": 0, "candidates": candidates}
    second = {**top, "event_id": "e2", "slot": 1, "stream_id": "1001-0"}
    _write_log(tmp_path, [second, top])
    (decision,), without = decisions_from_eventlog(tmp_path)
    assert without == 0
    got = (decision.user, decision.shown, decision.propensity, decision.click)
    assert got == ("u1", 1, 0.25, 1)
    assert decision.candidates[1] == EVENT["features"]
    _write_log(tmp_path / "bad", [{**top, "propensity": 0}])
    with pytest.raises(DataError, match=r"propensity must be in \(0, 1\], got 0"):
        decisions_from_eventlog(tmp_path / "bad")


def _base_file(tmp_path):
    from fedlearn.model import TrainConfig, train_base

    samples = [({"user=u1": 1.0, f"item=i{i % 2}": 1.0}, i % 2) for i in range(40)]
    return train_base(samples, TrainConfig(epochs=1)).base.save(tmp_path / "base.flfm")


def test_the_ope_command_refuses_an_old_log_and_estimates_a_new_one(tmp_path) -> None:
    from click.testing import CliRunner

    from fedlearn.cli import main

    base = str(_base_file(tmp_path))
    _write_log(tmp_path / "old", [EVENT])
    result = CliRunner().invoke(main, ["ope", str(tmp_path / "old"), "--base", base])
    assert result.exit_code == 1
    assert "lacks propensity, slot, candidates" in result.output
    result = CliRunner().invoke(
        main, ["ope", str(tmp_path / "old"), "--base", base, "--policy", "epsilon:2"]
    )
    assert result.exit_code == 2 and "epsilon must be in [0, 1], got 2.0" in result.output
    candidates = [
        {"item": "i0", "features": {"user=u1": 1.0, "item=i0": 1.0}},
        {"item": "i1", "features": EVENT["features"]},
    ]
    records = [
        {**EVENT, "event_id": f"e{n}", "user": f"u{n % 7}", "stream_id": f"{1000 + n}-0",
         "signal": "click" if n % 3 else "skip", "propensity": 0.5, "slot": 0,
         "candidates": candidates, "prediction_id": f"p{n}"}
        for n in range(30)
    ]  # fmt: skip
    # A ranking's top item skipped then clicked is one decision, clicked; and one top-slot
    # line ranked in the browser (no candidates) is counted as skipped.
    again = {**records[0], "event_id": "again", "signal": "click", "stream_id": "2000-0"}
    local = {**records[1], "event_id": "local", "prediction_id": None}
    del local["candidates"]
    _write_log(tmp_path / "new", [*records, again, local])
    args = ["ope", str(tmp_path / "new"), "--base", base, "--policy", "softmax:0.5", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    out = orjson.loads(result.output)
    assert (out["decisions"], out["without_candidates"]) == (30, 1)
    assert decisions_from_eventlog(tmp_path / "new").decisions[0].click == 1
    (value,) = out["policies"]
    assert value["policy"] == "softmax:0.5"
    assert 0 <= value["snips"]["value"] <= 1 and value["dr"]["n"] == 30


def test_a_log_with_propensities_but_no_candidates_gives_the_served_value_only(tmp_path) -> None:
    from click.testing import CliRunner

    from fedlearn.cli import main

    records = [
        {**EVENT, "event_id": f"e{n}", "user": f"u{n % 5}", "signal": "click" if n < 6 else "skip",
         "propensity": 0.9, "slot": 0, "policy": {"kind": "epsilon", "epsilon": 0.1}}
        for n in range(20)
    ]  # fmt: skip
    _write_log(tmp_path, records)
    with pytest.raises(DataError, match="not the ranking's candidates"):
        decisions_from_eventlog(tmp_path)
    result = CliRunner().invoke(main, ["ope", str(tmp_path), "--served", "--json"])
    assert result.exit_code == 0, result.output
    values = orjson.loads(result.output)
    served, greedy = values["served"], values["greedy"]
    assert (served["value"], served["n"], served["users"]) == (0.3, 20, 5)
    assert served["low"] < 0.3 < served["high"]
    # Every item was shown with 0.9 >= 1 - 0.1: greedy's own choice, weight 1/0.9 each.
    assert greedy["value"] == pytest.approx(0.3) and greedy["ess"] == pytest.approx(20)
    result = CliRunner().invoke(main, ["ope", str(tmp_path), "--served", "--last", "5", "--json"])
    assert orjson.loads(result.output)["served"]["n"] == 5
    result = CliRunner().invoke(main, ["ope", str(tmp_path)])
    assert result.exit_code == 2 and "--base is required" in result.output


def test_greedys_estimate_from_epsilon_traffic_counts_only_what_greedy_would_have_shown(
    tmp_path,
) -> None:
    from fedlearn.evaluate.decisions import served_and_greedy

    epsilon = {"kind": "epsilon", "epsilon": 0.2}
    # Greedy's item (propensity 0.84 = 1 - 0.2 + 0.2 / 5) always clicked, explored ones
    # (0.04 = 0.2 / 5) never: served 0.5, greedy 1.
    records = [
        {**EVENT, "event_id": f"e{n}", "user": f"u{n % 4}", "stream_id": f"{2000 + n}-0",
         "signal": "click" if n % 2 else "skip", "propensity": 0.84 if n % 2 else 0.04,
         "slot": 0, "policy": epsilon}
        for n in range(40)
    ] + [{**EVENT, "event_id": "soft", "stream_id": "3000-0", "propensity": 0.3, "slot": 0,
          "policy": {"kind": "softmax", "temperature": 1.0}, "prediction_id": None}]  # fmt: skip
    _write_log(tmp_path, records)  # the last one was ranked in the browser: no prediction_id
    values = served_and_greedy(tmp_path)
    assert values["served"].n == 41
    assert values["greedy"].value == pytest.approx(1.0) and values["greedy"].n == 40
    softmax_only = served_and_greedy(tmp_path, last=1)
    assert softmax_only["served"].n == 1 and softmax_only["greedy"] is None


def test_the_last_n_reads_only_the_newest_days_files(tmp_path) -> None:
    from fedlearn.evaluate.decisions import dashboard_estimate, served_and_greedy

    top = {**EVENT, "propensity": 1.0, "slot": 0, "policy": {"kind": "greedy"}}
    _write_log(tmp_path, [top])  # 2026-01-01
    newest = [{**top, "event_id": f"n{n}", "user": f"u{n % 3}", "stream_id": f"{5000 + n}-0",
               "signal": "skip"} for n in range(6)]  # fmt: skip
    (tmp_path / "shard=000" / "2026-01-02.jsonl").write_bytes(
        b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in newest)
    )
    (tmp_path / "shard=000" / "2026-01-01.jsonl").write_bytes(b"{torn\n")  # never read
    assert served_and_greedy(tmp_path, last=6)["served"].value == 0.0
    assert served_and_greedy(tmp_path, last=4)["served"].n == 4
    with pytest.raises(DataError, match="not valid JSON"):
        served_and_greedy(tmp_path, last=7)  # needs the older day: reads it
    stored = dashboard_estimate(tmp_path, last=7, now=1.0)
    assert stored["served"] is None and "not valid JSON" in stored["error"]
    assert "is it an event log?" in dashboard_estimate(tmp_path / "none", last=5, now=1.0)["error"]
