"""``GET /v1/dashboard/data`` and the dashboard's static files, on a real redis-server with a
real trainer: events posted through the API, applied, published, aggregated, then read back."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from flask import Flask

from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.run import run_round_inline
from fedlearn.api import create_app, issue_token, routes_dashboard
from fedlearn.config import Settings, load_settings
from fedlearn.model import Base
from fedlearn.store import Store
from fedlearn.trainer.apply import CloneSettings
from fedlearn.trainer.trainer import Trainer, TrainerConfig

SECRET = "dashboard-test-secret-0123456789"
BASE = Base.fresh([f"item={i}" for i in range(30)], 4, version="1")


def dashboard_app(settings: Settings, store: Store) -> Flask:
    """The API app with the dashboard's blueprints (registered here until ``app.py`` does)."""
    app = create_app(settings, store)
    if "dashboard" not in app.blueprints:
        app.register_blueprint(routes_dashboard.bp)
    if "web_dashboard" not in app.blueprints:
        app.register_blueprint(routes_dashboard.page)
    return app


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return load_settings(
        redis_url=redis_url, secret_key=SECRET, n_shards=4, data_dir=tmp_path / "data"
    )


@pytest.fixture
def app(settings: Settings, store: Store) -> Flask:
    store.bases.put_base(BASE.version, BASE.to_bytes(), {"generation": 0})
    store.bases.set_current(BASE.version)
    return dashboard_app(settings, store)


def bearer(settings: Settings, user: str | None = None) -> dict[str, str]:
    token = issue_token(settings, user, admin=user is None).token
    return {"Authorization": f"Bearer {token}"}


def test_only_an_admin_reads_the_data(app: Flask, settings: Settings) -> None:
    client = app.test_client()
    assert client.get("/v1/dashboard/data").status_code == 401
    assert client.get("/v1/dashboard/data", headers=bearer(settings, "alice")).status_code == 403
    answer = client.get("/v1/dashboard/data", headers=bearer(settings))
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    data = answer.get_json()
    assert data["n_shards"] == 4 and len(data["shards"]) == 4
    assert data["trainers"] == [] and data["rounds"] == []
    assert data["bases"]["current"] == "1"
    bad = client.get("/v1/dashboard/data?rounds=0", headers=bearer(settings))
    assert bad.status_code == 422 and "rounds" in bad.get_data(as_text=True)


def test_the_data_shows_a_run_from_events_to_a_round(
    app: Flask, settings: Settings, store: Store
) -> None:
    client = app.test_client()
    admin = bearer(settings)
    rng = np.random.default_rng(5)
    users = [f"u{i}" for i in range(30)]
    events = [
        {"event_id": f"e{i}", "user": users[i % 30], "item": str(int(rng.integers(30))),
         "signal": "click" if rng.random() < 0.5 else "skip", "ts": 1.7e9 + i}
        for i in range(600)
    ]  # fmt: skip
    for half in (events[:300], events[300:]):
        answer = client.post("/v1/events", json={"events": half}, headers=admin)
        assert answer.status_code == 202 and answer.get_json()["accepted"] == 300

    waiting = client.get("/v1/dashboard/data", headers=admin).get_json()
    assert sum(s["length"] for s in waiting["shards"]) == 600
    assert sum(s["lag_events"] for s in waiting["shards"]) == 600
    assert all(s["holder"] is None for s in waiting["shards"])

    clone = CloneSettings(lr=0.1, l2=0.0, bias_lr=0.1)
    trainer = Trainer(store, lambda _: clone, TrainerConfig(name="dash", batch_size=100))
    trainer.ownership.maintain()
    trainer.telemetry.publish(trainer.telemetry_state())
    while trainer.step():
        pass
    trainer.telemetry.publish(trainer.telemetry_state())
    record = run_round_inline(store, AggregationConfig(min_users=2, min_row_users=1))
    assert record["status"] == "done"
    for _ in range(3):  # the promotion's rebase entries (no events: step() counts none)
        trainer.step()

    data = client.get("/v1/dashboard/data?rounds=5", headers=admin).get_json()
    assert data["totals"]["applied"] == 600
    assert data["totals"]["cached_users"] == 30
    (row,) = data["trainers"]
    assert row["name"] == "dash" and row["shards"] == [0, 1, 2, 3] and row["rate"] > 0
    assert sum(s["users"] for s in data["shards"]) == 30
    assert all(s["lag_events"] == 0 or s["pending"] == 0 for s in data["shards"])
    assert all(s["lag_seconds"] == 0 for s in data["shards"])
    assert all(s["holder"] == trainer.owner for s in data["shards"])
    # The progressive counters are the process's (other tests add to them): use the window.
    clone_all = data["progressive"]["all"]["clone"]
    assert clone_all["window_events"] == 600 and 0 < clone_all["window_log_loss"] < 5
    assert data["progressive"]["first"]["base"]["window_events"] == 30 * 5
    assert data["freshness"]["events"] > 0 and data["freshness"]["p50"] is not None
    versions = data["bases"]["versions"]
    assert [(v["version"], v["kind"], v["current"]) for v in versions] == [
        ("1", "trained", False),
        ("2", "round", True),
    ]
    assert versions[1]["round"] == record["id"] and versions[1]["users"] == 30
    (latest,) = data["rounds"]
    assert latest["id"] == record["id"] and latest["status"] == "done"
    assert latest["users"] == 30 and latest["version"] == "2" and latest["duration_s"] > 0


def fetch(app: Flask, path: str) -> tuple[int, str, dict[str, str]]:
    """Status, body and headers, the response closed (a file response holds the file)."""
    with app.test_client().get(path) as response:
        return response.status_code, response.get_data(as_text=True), dict(response.headers)


def test_the_page_and_its_files_are_static_and_outside_the_openapi(app: Flask) -> None:
    status, html, headers = fetch(app, "/dashboard")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert "<script>" not in html, "no inline script: the CSP allows only our files"
    files = re.findall(r'(?:src|href)="(dashboard/[^"]+)"', html)
    assert len(files) == 4
    for src in files:
        assert fetch(app, "/" + src)[0] == 200, src
    assert fetch(app, "/dashboard/?token=x")[2]["Location"] == "/dashboard?token=x"
    assert fetch(app, "/dashboard/dashboard.html")[0] == 404
    assert fetch(app, "/dashboard/vendor/uPlot.LICENSE")[0] == 404
    assert fetch(app, "/dashboard/../routes_dashboard.py")[0] == 404

    document = app.test_client().get("/openapi.json").get_json()
    assert "/v1/dashboard/data" in document["paths"]
    assert not any(path.startswith("/dashboard") for path in document["paths"])
    operation = document["paths"]["/v1/dashboard/data"]["get"]
    assert {"200", "401", "403"} <= operation["responses"].keys()


def test_the_data_and_metrics_show_served_vs_greedy_and_the_exploration_rate(
    app: Flask, settings: Settings, store: Store
) -> None:
    client = app.test_client()
    admin = bearer(settings)
    before = client.get("/v1/dashboard/data", headers=admin).get_json()
    assert before["off_policy"] is None and before["exploration"] == []
    alice = bearer(settings, "alice")
    items = [{"id": str(i)} for i in range(10)]
    for policy in ({"kind": "epsilon", "epsilon": 0.2},) * 4 + ({"kind": "greedy"},):
        answer = client.post("/v1/users/alice/rank", json={"items": items, "policy": policy},
                             headers=alice)  # fmt: skip
        assert answer.status_code == 200, answer.get_data(as_text=True)
    # What the beat task stores (tests/test_aggregate_celery.py runs it on a real worker).
    estimate = {"value": 0.25, "low": 0.2, "high": 0.3, "n": 400, "users": 40, "ess": 400.0}
    store.ope.put({"computed_at": 1.7e9, "last": 10_000, "error": None,
                   "served": estimate, "greedy": {**estimate, "value": 0.3, "n": 380}})  # fmt: skip

    data = client.get("/v1/dashboard/data", headers=admin).get_json()
    assert data["off_policy"]["served"]["value"] == 0.25
    assert data["off_policy"]["greedy"]["n"] == 380
    rows = {row["policy"]: row for row in data["exploration"]}
    assert rows["epsilon"]["shown"] == 40 and rows["greedy"]["shown"] == 10
    assert rows["greedy"]["explored"] == 0 and rows["greedy"]["rate"] == 0
    epsilon = rows["epsilon"]
    assert epsilon["rate"] == epsilon["explored"] / 40

    text = client.get("/metrics").get_data(as_text=True)
    assert 'fedlearn_ope_click_ratio{bound="estimate",policy="served"} 0.25' in text
    assert 'fedlearn_ope_click_ratio{bound="high",policy="greedy"} 0.3' in text
    assert 'fedlearn_ope_decisions{policy="greedy"} 380.0' in text


def test_the_exploration_counts_sum_every_worker_in_multiprocess_mode(tmp_path: Path) -> None:
    """Under gunicorn each worker counts its own rank calls: with PROMETHEUS_MULTIPROC_DIR the
    dashboard's counts are all workers' (two real processes here, then a third reads)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    count = (
        "from fedlearn.telemetry.api import Metrics; Metrics().observe_ranking('epsilon', 10, 2)"
    )
    for _ in range(2):
        subprocess.run([sys.executable, "-c", count], env=env, check=True, timeout=60)
    read = "from fedlearn.telemetry.api import Metrics; print(Metrics().ranking_counts())"
    done = subprocess.run([sys.executable, "-c", read], env=env, check=True, timeout=60,
                          capture_output=True, text=True)  # fmt: skip
    assert done.stdout.strip() == "{'epsilon': {'shown': 20.0, 'explored': 4.0}}"
