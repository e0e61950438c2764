"""README's "Your own data" walkthrough, step by step, as a user runs it: the `fedlearn`
commands in a fresh folder (no repository files, no demo) on generated non-MovieLens data
(a bookshop: shelves and formats), then the event log it wrote back into a dataset, and the
reproduction of its predictions. Real processes: `fedlearn up` (embedded Redis, gunicorn,
trainer), HTTP on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedlearn.api.auth import issue_token
from fedlearn.config import load_settings
from fedlearn.devtools.embedded import free_port
from fedlearn.devtools.runtime import read_runtime
from tests.live import Api, stop_gracefully, wait_for, wait_healthy

SECRET = "walkthrough-secret-0123456789abcdef"
SHELVES = ("poetry", "travel", "crime", "cooking", "history")


def write_shop(folder: Path, seed: int = 11) -> None:
    """clicks.csv and items.csv of a made-up bookshop: readers like one or two shelves."""
    rng = np.random.default_rng(seed)
    books = [(f"bk{i:03d}", SHELVES[i % 5], ("paperback", "ebook")[i % 2]) for i in range(60)]
    rows = ["item,title,shelf,format"]
    rows += [f"{b},Book {b[2:]},{shelf}|{SHELVES[(i + 2) % 5]},{fmt}"
             for i, (b, shelf, fmt) in enumerate(books)]  # fmt: skip
    (folder / "items.csv").write_text("\n".join(rows) + "\n")
    clicks = ["user,item,signal,ts"]
    for r in range(40):
        liked = {SHELVES[r % 5], SHELVES[(r * 3) % 5]}
        for t in rng.choice(len(books), 25, replace=False):
            book, shelf, _ = books[t]
            p = 0.8 if shelf in liked else 0.15
            signal_ = "click" if rng.random() < p else "skip"
            clicks.append(f"reader{r},{book},{signal_},{1_700_000_000 + int(rng.integers(10**6))}")
    (folder / "clicks.csv").write_text("\n".join(clicks) + "\n")


def fedlearn(folder: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "fedlearn", *args], cwd=folder, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"fedlearn {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_the_walkthrough_from_clicks_to_a_running_service(tmp_path: Path) -> None:
    write_shop(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "FEDLEARN_REDIS_URL")}
    env.update(FEDLEARN_SECRET_KEY=SECRET, FEDLEARN_N_SHARDS="2", PYTHONUNBUFFERED="1",
               FEDLEARN_DATA_DIR=str(tmp_path / ".fedlearn"))  # fmt: skip
    assert "1,000 events" in fedlearn(
        tmp_path, env, "datasets", "import", "clicks.csv", "--items", "items.csv", "--out", "mydata"
    )
    fedlearn(tmp_path, env, "train-base", "mydata", "--out", "base.flfm", "--factors", "4",
             "--epochs", "3", "--version", "shop-1")  # fmt: skip
    port = free_port()
    with (tmp_path / "up.out").open("wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "fedlearn", "up", "--no-celery", "--port", str(port)],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        data = tmp_path / ".fedlearn"
        wait_for(lambda: bool((read_runtime(data) or {}).get("redis_url")), 60, "up's Redis")
        assert "current" in fedlearn(tmp_path, env, "base", "publish", "base.flfm")
        assert "60 items" in fedlearn(tmp_path, env, "catalog", "load", "items.csv")
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, up, tmp_path / "up.out", timeout=60)
        settings = load_settings(secret_key=SECRET, n_shards=2, data_dir=data)
        token = fedlearn(tmp_path, env, "token", "reader3").strip()
        api = Api(url, token)
        ranked = api.call("POST", "/v1/users/reader3/rank",
                          {"items": [{"id": "bk001"}, {"id": "bk002"}]})  # fmt: skip
        assert ranked.status == 200, ranked.data
        events = [
            {"event_id": f"w{i}", "user": "reader3", "item": f"bk{i:03d}",
             "signal": "click" if i % 2 else "skip", "ts": 1.8e9 + i}
            for i in range(12)
        ]  # fmt: skip
        assert api.call("POST", "/v1/events", {"events": events}).status == 202

        def applied() -> bool:
            model = api.call("GET", "/v1/users/reader3/model").json()
            return model["events_applied"] == 12 and model["base_version"] == "shop-1"

        wait_for(applied, 60, "the trainer to apply the events on base shop-1")
        admin = Api(url, issue_token(settings, admin=True).token)
        assert admin.call("GET", "/v1/items?limit=1000").json()["items"][0]["features"]
        wait_for(lambda: len(list((data / "eventlog").glob("shard=*/*.jsonl"))) > 0, 30,
                 "the event log")  # fmt: skip
        wait_for(lambda: "12 events" in fedlearn(tmp_path, env, "datasets", "from-eventlog",
                                                 str(data / "eventlog"), "--out", "lastmonth"),
                 30, "all 12 events in the event log")  # fmt: skip
        assert '"reproduced": true' in fedlearn(tmp_path, env, "reproduce", str(data / "eventlog"))
    finally:
        stop_gracefully(up)
    assert up.returncode == 0, (tmp_path / "up.out").read_text(errors="replace")[-3000:]
