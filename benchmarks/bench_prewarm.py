"""The first session after a publish, with and without pre-warming the new base.

    .venv/bin/python benchmarks/bench_prewarm.py [--items 1000000] [--wait 3] [--users 10]

For each arm (``FEDLEARN_BASE_PREWARM_EVERY_S`` 0, then 1) it publishes a k = 10 base of
``--items`` items on an embedded redis-server, starts the API as ``fedlearn api`` does (one
gunicorn worker), runs a few partial sessions with the Python client (``fedlearn.client``,
as bench_session.py does), then publishes a second version and makes it current, waits
``--wait`` seconds (the time before the next user arrives), and times the next session start
(the model answer plus the buckets that scoring one item reads: a handful of requests, so the
figure is the server's wait, not a hundred round trips) and the median of ``--users`` more.
Without pre-warming the first of them decodes the new base and builds its bucket index in
its requests.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fedlearn.api import issue_token
from fedlearn.client import Client
from fedlearn.config import load_settings
from fedlearn.devtools import EmbeddedRedis
from fedlearn.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_session import N_SHARDS, make_base
from procs import SECRET, our_api


def session_seconds(url: str, token: str, user: str) -> float:
    """One session start with an empty client cache: the model answer and the buckets of
    one item's rows (the item, its genres, the user, the hour)."""
    item = {"id": "7", "features": {"genre=Drama": 1.0}}
    t0 = time.perf_counter()
    Client(url, token).start_session(user, [item], context={"hour": "21"})
    return time.perf_counter() - t0


def measure(n_items: int, every_s: float, wait_s: float, n_users: int, folder: Path) -> dict:
    first, second = make_base(n_items, "first"), make_base(n_items, "second")
    blobs = {base.version: base.to_bytes() for base in (first, second)}
    del first, second
    token = issue_token(load_settings(secret_key=SECRET), admin=True).token
    os.environ["FEDLEARN_BASE_PREWARM_EVERY_S"] = str(every_s)  # read by the API we start
    arm = f"prewarm-{every_s:g}"
    with (
        EmbeddedRedis(folder / f"redis-{arm}") as redis,
        Store.from_url(redis.url, N_SHARDS) as store,
    ):
        store.bases.put_base("first", blobs["first"], {"generation": 0})
        store.bases.set_current("first")
        with our_api(redis.url, folder / f"api-{arm}", N_SHARDS, workers=1) as url:
            for u in range(3):  # the process is up and has served the first version
                session_seconds(url, token, f"u{u}")
            store.bases.put_base("second", blobs["second"], {"generation": 0})
            store.bases.set_current("second")
            time.sleep(wait_s)
            after = session_seconds(url, token, "u100")
            more = [session_seconds(url, token, f"u{101 + u}") for u in range(n_users)]
    return {"every_s": every_s, "first_after_publish_s": after, "median_s": float(np.median(more))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--wait", type=float, default=3.0, help="seconds after the publish")
    parser.add_argument("--users", type=int, default=10)
    args = parser.parse_args()
    print(f"{args.items:,} items; first session {args.wait:g} s after a publish", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-prewarm-") as tmp:
        for every_s in (0.0, 1.0):
            r = measure(args.items, every_s, args.wait, args.users, Path(tmp))
            state = f"every {every_s:g} s" if every_s else "off"
            print(
                f"  pre-warm {state:<10} first session after the publish "
                f"{r['first_after_publish_s'] * 1000:,.0f} ms; the next {args.users}: median "
                f"{r['median_s'] * 1000:,.0f} ms",
                flush=True,
            )


if __name__ == "__main__":
    main()
