"""The dashboard page in a real headless Chromium (Playwright driving Debian's ``chromium``),
showing a live run: events streamed through the HTTP API while a trainer applies them and
publishes its snapshots, and aggregation rounds publishing base versions.

What must hold: the page signs in with the token from its address (and drops it from the
address bar), polls the data endpoint, keeps a rolling series that grows without a reload,
draws its charts with data in them, and fills the tables with the real rounds and shards. The
screenshot lands in ``artifacts/dashboard/dashboard.png``.

Skipped, saying why, when node, Chromium or ``client_js/node_modules/playwright-core`` is
missing (``.ci/run`` and ``scripts/test`` install them). Loopback only.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
import urllib3

from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.run import run_round_inline
from fedlearn.api import issue_token
from fedlearn.api.server import ThreadedServer
from fedlearn.config import load_settings
from fedlearn.model import Base
from fedlearn.store import Store
from fedlearn.store.drift import DriftEvent
from fedlearn.trainer.apply import CloneSettings
from fedlearn.trainer.publisher import Publisher
from fedlearn.trainer.trainer import Trainer, TrainerConfig
from tests.test_dashboard_data import dashboard_app

ROOT = Path(__file__).resolve().parents[1]
PLAYWRIGHT = ROOT / "client_js" / "node_modules" / "playwright-core" / "index.mjs"
ARTIFACTS = ROOT / "artifacts" / "dashboard"
BROWSERS = (Path("/usr/bin/chromium"), Path("/usr/bin/chromium-headless-shell"))
SECRET = "dashboard-page-secret-0123456789"
N_USERS = 200
POLLS = 10  # the page polls every 0.5 s here: about 5 s of live data

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

# The browser side: open the page, wait for POLLS polls, screenshot, report what it shows.
SCRIPT = """
import { chromium } from %(playwright)s;
const [url, out, executablePath, polls] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const problems = [];
  page.on('pageerror', (e) => problems.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
  await page.goto(url);
  await page.waitForFunction((n) => window.fedlearnDashboard && window.fedlearnDashboard.polls >= n,
                             Number(polls), { timeout: 40000 });
  await page.screenshot({ path: out, fullPage: true });
  const facts = await page.evaluate(() => {
    const s = window.fedlearnDashboard;
    const text = (id) => document.getElementById(id).textContent;
    const rows = (id) => [...document.querySelectorAll(`#${id} tbody tr`)].map(
      (tr) => [...tr.cells].map((td) => td.textContent));
    return {
      address: location.href, polls: s.polls, errors: s.errors, lastError: s.lastError,
      points: s.series.t.length, rateSeries: s.series.rate, aucClone: s.series.aucClone,
      canvases: document.querySelectorAll('.uplot canvas').length,
      chartPoints: Object.fromEntries(
        Object.entries(s.charts).map(([id, c]) => [id, c.data[0].length])),
      applied: text('kpi-applied'), base: text('kpi-base'), status: text('status'),
      rounds: rows('rounds'), shards: rows('shards'), trainers: rows('trainers'),
      drift: rows('drift'), ope: rows('ope'), exploration: rows('exploration'),
      opeTile: text('kpi-ope'), exploreTile: text('kpi-explore'), opeNote: text('ope-note'),
      loginShown: document.getElementById('login').offsetParent !== null,
      boardShown: document.getElementById('board').offsetParent !== null,
    };
  });
  console.log(JSON.stringify({ ...facts, problems }));
} finally {
  await browser.close();
}
"""


def _browser() -> Path | None:
    chosen = os.environ.get("FEDLEARN_CHROMIUM")
    candidates = [Path(chosen)] if chosen else list(BROWSERS)
    return next((p for p in candidates if p.is_file()), None)


def _missing_tools() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed (apt-get install nodejs npm)"
    if _browser() is None:
        return "no Chromium at /usr/bin/chromium (apt-get install chromium)"
    if not PLAYWRIGHT.is_file():
        return "client_js/node_modules/playwright-core is missing (cd client_js && npm install)"
    return None


def _events(rng: np.random.Generator, start: int, n: int) -> list[dict]:
    """Each user clicks mostly the items of its own taste (item % 3 == user % 3), which the
    base cannot know and the user's clone learns: the AUC chart shows the gap."""
    events = []
    for i in range(start, start + n):
        user, item = int(rng.integers(N_USERS)), int(rng.integers(12))
        liked = item % 3 == user % 3
        click = rng.random() < (0.8 if liked else 0.1)
        events.append(
            {"event_id": f"e{i}", "user": f"u{user}", "item": str(item),
             "signal": "click" if click else "skip", "ts": 1.7e9 + i}
        )  # fmt: skip
    return events


class Run:
    """A live run in this process: the API on a real socket, a trainer thread publishing its
    snapshots, and a driver thread streaming events through HTTP (bounded in count)."""

    def __init__(self, store: Store, url: str, token: str) -> None:
        self.store = store
        self.url = url
        self.http = urllib3.PoolManager(retries=False, timeout=10.0)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.stop = threading.Event()
        self.sent = 0
        clone = CloneSettings(lr=0.1, l2=0.0, bias_lr=0.1)
        self.trainer = Trainer(store, lambda _: clone, TrainerConfig(name="trainer-1"))
        self.publisher = Publisher(
            store.telemetry, owner=self.trainer.owner, name="trainer-1", every_s=0.5, ttl_s=5
        )
        self.threads = [
            threading.Thread(target=self._train, daemon=True),
            threading.Thread(target=self._drive, daemon=True),
        ]
        self.rng = np.random.default_rng(7)

    def post(self, events: list[dict]) -> None:
        answer = self.http.request(
            "POST", self.url + "/v1/events", body=orjson.dumps({"events": events}),
            headers=self.headers,
        )  # fmt: skip
        assert answer.status == 202, answer.data[:300]
        self.sent += len(events)

    def _train(self) -> None:
        """What ``Trainer.run`` does, plus the publisher in the same loop."""
        beat = -math.inf
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if now - beat >= 1.0:
                    self.trainer.ownership.maintain()
                    for shard in list(self.trainer.shards):
                        self.store.streams.trim_acked(shard)
                    beat = now
                applied = self.trainer.step()
                self.publisher.maybe_publish(self.trainer.telemetry_state, now)
                if not applied:
                    self.stop.wait(0.01)
        finally:
            self.trainer.shutdown()
            self.publisher.withdraw()

    def _drive(self) -> None:
        for second in range(60):  # bounded: 60 s at most, 1,000 events a second
            if self.stop.is_set():
                return
            for _ in range(5):
                self.post(_events(self.rng, self.sent, 200))
                self.stop.wait(0.2)
            if second == 3:
                run_round_inline(self.store, AggregationConfig(min_users=2, min_row_users=1))

    def applied(self) -> int:
        return self.trainer.applied_total


@pytest.fixture
def run(tmp_path: Path, redis_url: str, store: Store) -> Iterator[Run]:
    base = Base.fresh([f"item={i}" for i in range(40)], 4, version="1")
    store.bases.put_base("1", base.to_bytes(), {"generation": 0})
    store.bases.set_current("1")
    settings = load_settings(
        redis_url=redis_url, secret_key=SECRET, n_shards=4, data_dir=tmp_path / "data"
    )
    app = dashboard_app(settings, store)
    with ThreadedServer(app) as server:
        live = Run(store, server.url, issue_token(settings, admin=True).token)
        live.threads[0].start()
        try:
            yield live
        finally:
            live.stop.set()
            for thread in live.threads:
                if thread.is_alive():
                    thread.join(20)


def test_the_dashboard_shows_a_live_run_in_chromium(run: Run, tmp_path: Path) -> None:
    missing = _missing_tools()
    if missing:
        pytest.skip(missing)
    # A first stretch of traffic and a round, so the page opens on a history.
    for _ in range(10):
        run.post(_events(run.rng, run.sent, 200))
    deadline = time.monotonic() + 30
    while run.applied() < run.sent:
        assert time.monotonic() < deadline, f"applied {run.applied()} of {run.sent} in 30 s"
        time.sleep(0.05)
    first = run_round_inline(run.store, AggregationConfig(min_users=2, min_row_users=1))
    assert first["status"] == "done"
    run.threads[1].start()
    # A drift event a second into the page's watch, so its marker falls inside the charts.
    early = {"early_round": {"outcome": "started", "round": first["id"]}}
    run.store.drift.record(
        DriftEvent("click_rate", 2, 0.3, 0.5, 4000, trainer="trainer-1", at=time.time() + 1,
                   actions=early)
    )  # fmt: skip

    # Rank under epsilon, and what the beat task stores (tests/test_aggregate_celery.py).
    for _ in range(3):
        ranked = run.http.request(
            "POST", run.url + "/v1/users/u1/rank", headers=run.headers,
            body=orjson.dumps({"items": [{"id": str(i)} for i in range(12)],
                               "policy": {"kind": "epsilon", "epsilon": 0.2}}),
        )  # fmt: skip
        assert ranked.status == 200, ranked.data[:300]
    figure = {"value": 0.25, "low": 0.2, "high": 0.3, "n": 400, "users": 40, "ess": 400.0}
    run.store.ope.put({"computed_at": time.time(), "last": 10_000, "error": None,
                       "served": figure, "greedy": {**figure, "value": 0.31}})  # fmt: skip

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    script = tmp_path / "dashboard.mjs"
    script.write_text(SCRIPT % {"playwright": orjson.dumps(PLAYWRIGHT.as_uri()).decode()})
    token = run.headers["Authorization"].split()[1]
    url = f"{run.url}/dashboard?every=500&token={token}"
    done = subprocess.run(
        ["node", str(script), url, str(shot), str(_browser()), str(POLLS)],
        capture_output=True, text=True, timeout=90, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    facts = orjson.loads(done.stdout.strip().splitlines()[-1])

    assert facts["problems"] == [] and facts["errors"] == 0, facts
    assert "token=" not in facts["address"], "the token must leave the address bar"
    assert facts["boardShown"] and not facts["loginShown"]
    assert facts["polls"] >= POLLS and facts["points"] >= POLLS
    assert facts["canvases"] >= 5
    assert all(n >= POLLS for id_, n in facts["chartPoints"].items() if id_ != "chart-bases")
    assert facts["chartPoints"]["chart-bases"] >= 2, "two base versions: trained, then a round"
    assert max(facts["rateSeries"]) > 0, "events were applied while the page watched"
    assert any(a is not None and 0 < a < 1 for a in facts["aucClone"])
    assert int(facts["applied"].replace(",", "")) >= 2000
    assert first["id"] in [row[0] for row in facts["rounds"]]
    assert {row[1] for row in facts["rounds"]} <= {"done", "published", "running", "publishing"}
    assert len(facts["shards"]) == 4 and all(row[-1] == "trainer-1" for row in facts["shards"])
    assert [row[0] for row in facts["trainers"]] == ["trainer-1"]
    assert [row[1:3] + row[-1:] for row in facts["drift"]] == [
        ["click_rate", "2", f"early_round: started ({first['id']})"]
    ]
    assert facts["opeTile"] == "0.250 / 0.310"
    assert [row[:2] + row[3:] for row in facts["ope"]] == [
        ["served", "0.250", "400", "40"], ["greedy", "0.310", "400", "40"],
    ]  # fmt: skip
    assert "newest 10,000 top-slot events" in facts["opeNote"]
    assert [row[:2] for row in facts["exploration"]] == [["epsilon", "36"]]
    assert facts["exploreTile"].endswith("of 36")
    assert shot.is_file() and shot.stat().st_size > 20_000
