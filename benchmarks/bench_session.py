"""Session start bytes with partial bases: a catalog of a thousand items against a million.

    .venv/bin/python benchmarks/bench_session.py [--items 1000 1000000] [--users 100]

For each catalog size it publishes a k = 10 base (items, genres, users, hours; weights drawn
at random through ``fedlearn.model.Base``) on an embedded redis-server, starts the API as
``fedlearn api`` does, and runs user sessions with the Python client (``fedlearn.client``,
a fresh client per user: a browser with an empty cache). A session start is the user's model
answer plus the buckets of every row that ranking ``--candidates`` items in one context reads;
candidates are drawn from a Zipf popularity over the catalog, as a front page's would be.

It prints, per catalog size, the bytes received (status lines, headers and bodies, as HTTP/1.1
sends them) for:

- ``buckets`` (what the clients do): the model answer and one immutable bucket per needed row;
- ``exact``: the model answer and one ``POST /v1/base/{version}/rows`` naming the rows;
- ``whole``: the model answer and ``GET /v1/base/{version}`` (what old clients do);

and what a shared HTTP cache (a CDN) in front of the API would fetch from it for all the
sessions: each distinct bucket URL once, every exact request (a POST, per user) every time.
It checks the local scores against ``POST /v1/users/{user}/rank`` and prints the largest gap.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import urllib3

from fedlearn.api import issue_token
from fedlearn.client import Client
from fedlearn.client.local import candidates as as_candidates
from fedlearn.client.local import needed_features
from fedlearn.config import load_settings
from fedlearn.devtools import EmbeddedRedis
from fedlearn.model import Base
from fedlearn.model.rowset import BucketIndex, bucket_count
from fedlearn.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import SECRET, our_api

K = 10
GENRES = [f"genre={g}" for g in ("Drama", "Comedy", "Action", "Thriller", "Romance", "Sci-Fi",
                                 "Horror", "Crime", "Animation", "Documentary")]  # fmt: skip
N_USERS_IN_BASE = 10_000
N_SHARDS = 8


def make_base(n_items: int, version: str) -> Base:
    """A k = 10 base over ``n_items`` items, the genres, users and hours, random weights."""
    rng = np.random.default_rng(0)
    names = [f"item={i}" for i in range(n_items)] + GENRES
    names += [f"user=u{i}" for i in range(N_USERS_IN_BASE)] + [f"hour={h}" for h in range(24)]
    w = rng.normal(0, 0.3, len(names))
    v = rng.normal(0, 0.1, (len(names), K))
    return Base(names, -1.0, w, v, version=version, init_seed=7, init_scale=0.1)


def candidates(rng: np.random.Generator, n_items: int, n: int) -> list[dict[str, Any]]:
    """``n`` distinct items by Zipf popularity (a = 1.2), each with one or two genres."""
    chosen: dict[int, None] = {}
    while len(chosen) < n:
        item = int(rng.zipf(1.2)) - 1
        if item < n_items:
            chosen[item] = None
    return [
        {"id": str(i), "features": {GENRES[i % 10]: 1.0, GENRES[(i * 7 + 3) % 10]: 1.0}}
        for i in chosen
    ]


def wire_size(response: urllib3.BaseHTTPResponse) -> int:
    head = sum(len(k) + len(v) + 4 for k, v in response.headers.items())
    return len("HTTP/1.1 200 OK\r\n\r\n") + head + len(response.data)


def measure(
    n_items: int, bucket_rows: int, n_users: int, n_candidates: int, folder: Path
) -> dict[str, Any]:
    version = f"bench-{n_items}"
    base = make_base(n_items, version)
    blob = base.to_bytes()
    t0 = time.perf_counter()  # what a process does once per version: hash and group the rows
    BucketIndex(base, bucket_count(base.n_features, bucket_rows))
    index_s = time.perf_counter() - t0
    del base
    settings = load_settings(secret_key=SECRET)
    token = issue_token(settings, admin=True).token
    rng = np.random.default_rng(1)  # the same users and candidates for every bucket size
    out: dict[str, Any] = {"items": n_items, "bucket_rows": bucket_rows}
    out["whole_base_bytes"] = len(blob)
    out["index_build_s"] = index_s
    os.environ["FEDLEARN_BASE_BUCKET_ROWS"] = str(bucket_rows)  # read by the API we start
    with EmbeddedRedis(folder / f"redis-{n_items}-{bucket_rows}") as redis:
        with Store.from_url(redis.url, N_SHARDS) as store:
            store.bases.put_base(version, blob, {"generation": 0})
            store.bases.set_current(version)
        del blob
        api_dir = folder / f"api-{n_items}-{bucket_rows}"
        with our_api(redis.url, api_dir, N_SHARDS, workers=1) as url:
            http = urllib3.PoolManager(retries=False, timeout=120.0)
            auth = {"Authorization": f"Bearer {token}"}
            t0 = time.perf_counter()
            first = Client(url, token).start_session("u0", ["0"])  # builds the bucket index
            out["first_bucket_s"] = time.perf_counter() - t0
            out["n_buckets"] = first.model["base_rows"]["n_buckets"]
            bucket_bytes, bodies, requests, exact_bytes, seconds, fetched = [], [], [], [], [], []
            urls: set[str] = set()
            gap = 0.0
            for u in range(n_users):
                user = f"u{u}"
                items = candidates(rng, n_items, n_candidates)
                context = {"hour": str(u % 24)}
                client = Client(url, token)
                t0 = time.perf_counter()
                session = client.start_session(user, items, context=context)
                seconds.append(time.perf_counter() - t0)
                bucket_bytes.append(client.received_bytes)
                bodies.append(client.received_body_bytes)
                requests.append(client.responses)
                template = session.model["base_rows"]["url"]
                fetched.append(len(session.base.buckets))
                urls.update(template.replace("{bucket}", str(b)) for b in session.base.buckets)
                model_bytes = wire_size(http.request("GET", f"{url}/v1/users/{user}/model",
                                                     headers=auth))  # fmt: skip
                rows = http.request(
                    "POST", f"{url}/v1/base/{version}/rows", headers=auth,
                    json={"features": needed_features(user, as_candidates(items), context)},
                )  # fmt: skip
                exact_bytes.append(model_bytes + wire_size(rows))
                if u < 5:  # parity on a few sessions: local scores against the server's
                    local = dict(session.rank_locally(items, context=context))
                    served = client.rank(user, items, context=context).items
                    gap = max(gap, max(abs(local[i] - p) for i, p in served))
            whole = http.request("GET", f"{url}/v1/base/{version}", headers=auth)
            out["whole_session_bytes"] = model_bytes + wire_size(whole)
    out.update(
        sessions=n_users,
        buckets_per_session=float(np.mean(fetched)),
        bucket_session_bytes=float(np.median(bucket_bytes)),
        bucket_session_bytes_max=max(bucket_bytes),
        bucket_session_body_bytes=float(np.median(bodies)),
        requests_per_session=float(np.median(requests)),
        exact_session_bytes=float(np.median(exact_bytes)),
        bucket_total_bytes=sum(bucket_bytes),
        distinct_bucket_urls=len(urls),
        exact_total_bytes=sum(exact_bytes),
        session_s=float(np.median(seconds)),
        max_score_gap=gap,
    )
    # What a shared cache in front of the API fetches from it: each distinct bucket once.
    per_bucket = (sum(bucket_bytes) - n_users * model_bytes) / max(1, sum(fetched))
    out["cdn_origin_bucket_bytes"] = len(urls) * per_bucket + n_users * model_bytes
    return out


def report(r: dict[str, Any]) -> None:
    kb = 1024
    lines = [
        f"catalog {r['items']:,} items, {r['bucket_rows']} rows per bucket: base "
        f"{r['whole_base_bytes'] / kb / kb:.1f} MB in {r['n_buckets']:,} buckets; "
        f"bucket index built in {r['index_build_s']:.2f} s; the API's first session (base "
        f"decoded, index built) {r['first_bucket_s']:.2f} s",
        f"  session start, buckets (median of {r['sessions']}): "
        f"{r['bucket_session_bytes'] / kb:.1f} KB on the wire (max "
        f"{r['bucket_session_bytes_max'] / kb:.1f}), {r['bucket_session_body_bytes'] / kb:.1f} KB "
        f"of bodies, {r['requests_per_session']:.0f} requests ({r['buckets_per_session']:.0f} "
        f"buckets), {r['session_s'] * 1000:.0f} ms",
        f"  session start, exact rows: {r['exact_session_bytes'] / kb:.1f} KB, 2 requests; "
        f"whole base: {r['whole_session_bytes'] / kb / kb:.1f} MB, 2 requests",
        f"  {r['sessions']} sessions through a shared cache: buckets "
        f"{r['bucket_total_bytes'] / kb:.0f} KB to clients, "
        f"{r['cdn_origin_bucket_bytes'] / kb:.0f} KB from the API "
        f"({r['distinct_bucket_urls']:,} distinct buckets); exact rows "
        f"{r['exact_total_bytes'] / kb:.0f} KB, all from the API",
        f"  local scores vs POST /rank: largest gap {r['max_score_gap']:.1e}",
    ]
    print("\n".join(lines), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[1000, 1_000_000])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--bucket-rows", type=int, nargs="+", default=[2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-session-") as tmp:
        for n_items in args.items:
            for rows in args.bucket_rows:
                report(measure(n_items, rows, args.users, args.candidates, Path(tmp)))


if __name__ == "__main__":
    main()
