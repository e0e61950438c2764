"""Partial bases: the ``.flrs`` row set and its checks, buckets by name hash, the routes that
serve them (gunicorn on a real redis-server), and the Python client's partial session, whose
local scores equal the server's rank scores."""

from __future__ import annotations

import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from fedlearn.api import issue_token
from fedlearn.client import ApiError, Client
from fedlearn.config import Settings, load_settings
from fedlearn.devtools import EmbeddedRedis
from fedlearn.devtools.embedded import free_port
from fedlearn.model import Base, ModelFormatError
from fedlearn.model.hashinit import fnv1a32, fnv1a32_many, init_latent, init_latents
from fedlearn.model.rowset import (
    BucketIndex,
    MissingRowsError,
    PartialBase,
    RowSet,
    bucket_count,
    bucket_of,
    exact_rowset,
)
from fedlearn.model.rowset_vectors import make_rowset_vectors
from fedlearn.store import Store
from fedlearn.trainer.apply import CloneSettings
from fedlearn.trainer.trainer import Trainer
from tests.live import Api, gunicorn_api
from tests.test_api_http import problem
from tests.test_browser_e2e import ROOT, _missing_tools
from tests.test_vectors import assert_close

SECRET = "test-secret-key-0123456789abcdef"
N_SHARDS = 2
ROWS_PER_BUCKET = 4
PARTIAL_SCRIPT = ROOT / "client_js" / "test" / "e2e" / "partial.mjs"
ROWSET_VECTORS = Path(__file__).resolve().parents[1] / "client_js" / "test" / "rowset-vectors.json"
GENRES = ("Drama", "Comedy", "Sci-Fi", "Noir")


def random_base(n_items: int, version: str = "v1", k: int = 4) -> Base:
    rng = np.random.default_rng(3)
    names = [f"item={i}" for i in range(n_items)] + [f"genre={g}" for g in GENRES]
    names += ["user=alice", "hour=21", "hour=22"]
    fresh = Base.fresh(names, k, init_seed=11, init_scale=0.1)
    return Base(
        names, 0.2, rng.normal(0, 0.3, len(names)), fresh.v + rng.normal(0, 0.1, fresh.v.shape),
        version=version, init_seed=11, init_scale=0.1,
    )  # fmt: skip


BASE = random_base(300)


def candidates(n: int) -> list[dict[str, Any]]:
    """Known and unknown items (ids from 290 up are not in the base), with genres or none."""
    return [
        {"id": str(290 + i), "features": {f"genre={GENRES[i % 4]}": 1.0} if i % 3 else {}}
        for i in range(n)
    ]


# --- the format and the buckets ------------------------------------------------------------


def test_names_hash_alike_one_by_one_and_vectorized() -> None:
    names = [f"item={i}" for i in range(500)] + ["", "é", "genre=Sci-Fi", "a\x00b", "x" * 200]
    assert [int(h) for h in fnv1a32_many(names)] == [fnv1a32(n.encode()) for n in names]
    assert fnv1a32_many([]).shape == (0,)


@pytest.mark.parametrize("seed", [0, 7, 0xFFFFFFFF])
def test_starting_latents_drawn_for_many_names_at_once_are_the_per_name_draws(seed) -> None:
    """The vectorized draws (a batch of new users' rows) are the JS-parity per-name ones."""
    names = [f"user={i}" for i in range(300)] + ["é", "genre=Sci-Fi", "a\x00b", "x" * 200]
    one_by_one = np.stack([init_latent(n, 10, seed, 0.1) for n in names])
    assert np.array_equal(init_latents(names, 10, seed, 0.1), one_by_one)
    # A name asked for many times (every user's ``hour=21`` row) is drawn once, the same.
    repeated = ["hour=21", *names[:3]] * 20
    expected = np.stack([init_latent(n, 10, seed, 0.1) for n in repeated])
    assert np.array_equal(init_latents(repeated, 10, seed, 0.1), expected)
    assert np.array_equal(init_latents(names * 2, 10, seed, 0.1), np.vstack([one_by_one] * 2))


def test_every_row_is_in_exactly_the_bucket_its_name_hashes_to() -> None:
    n = bucket_count(BASE.n_features, ROWS_PER_BUCKET)
    assert n == 128 and bucket_count(0, 8) == 1 and bucket_count(1_000_000, 8) == 1 << 17
    index = BucketIndex(BASE, n)
    seen: list[str] = []
    for bucket in range(n):
        rows = index.rowset(bucket)
        assert all(bucket_of(name, n) == bucket for name in rows.features)
        for name, w, v in zip(rows.features, rows.w, rows.v, strict=True):
            assert w == BASE.w[BASE.index[name]] and np.array_equal(v, BASE.v[BASE.index[name]])
        seen += rows.features
    assert sorted(seen) == sorted(BASE.features)
    with pytest.raises(ValueError, match=r"bucket must be in 0\.\.127"):
        index.rowset(128)


def test_a_row_set_round_trips_and_refuses_what_is_not_one() -> None:
    rows = BucketIndex(BASE, 16).rowset(5)
    blob = rows.to_bytes()
    back = RowSet.from_bytes(blob)
    assert back.features == rows.features and back.buckets == (5,) and back.n_buckets == 16
    assert np.array_equal(back.v, rows.v) and back.to_bytes() == blob
    flipped = bytearray(blob)
    flipped[-3] ^= 0x40
    bad = {
        "checksum mismatch": bytes(flipped),
        "shorter than its prefix": blob[:10],
        "magic": b"FLFM" + blob[4:],
        "checksum mismatch ": blob[:-4],  # truncated: the CRC no longer matches
        "format 9": blob[:4] + (9).to_bytes(4, "little") + blob[8:],
    }
    for message, data in bad.items():
        with pytest.raises(ModelFormatError, match=message.strip()):
            RowSet.from_bytes(data)
    with pytest.raises(ModelFormatError, match="not a row set"):
        RowSet.from_bytes(BASE.to_bytes())  # a whole base is not a row set, nor the reverse
    with pytest.raises(ModelFormatError, match="not a fedlearn base"):
        Base.from_bytes(blob)


def forged(rows: RowSet, **header: Any) -> bytes:
    """``rows`` with header fields replaced and a valid checksum: only the field checks stand."""
    blob = RowSet(rows.version, rows.features, rows.w, rows.v, rows.n_buckets, rows.buckets)
    data = bytearray(blob.to_bytes())
    head_len = int.from_bytes(data[8:12], "little")
    head = {**orjson.loads(bytes(data[16 : 16 + head_len])), **header}
    raw = orjson.dumps(head)
    raw += b" " * (-len(raw) % 8)
    body = raw + bytes(data[16 + head_len :])
    prefix = bytes(data[:8]) + len(raw).to_bytes(4, "little")
    return prefix + zlib.crc32(body).to_bytes(4, "little") + body


def test_a_row_set_whose_header_lies_is_refused_with_the_field_named() -> None:
    rows = BucketIndex(BASE, 16).rowset(3)
    assert len(rows.features) > 1
    other = next(b for b in range(16) if b != 3)
    cases = {
        "'buckets' must list": {"buckets": [99]},
        "outside the buckets": {"buckets": [other]},
        "'features' must list n_rows": {"n_rows": len(rows.features) + 1},
        "'n_factors' must be": {"n_factors": 0},
        "'version' must be": {"version": ""},
        "distinct": {"features": [rows.features[0]] * len(rows.features)},
    }
    for message, header in cases.items():
        with pytest.raises(ModelFormatError, match=message):
            RowSet.from_bytes(forged(rows, **header))
    nan = RowSet(rows.version, rows.features, rows.w * np.nan, rows.v, 16, (3,))
    with pytest.raises(ModelFormatError, match="non-finite"):
        RowSet.from_bytes(nan.to_bytes())


def test_a_partial_base_scores_like_the_whole_and_refuses_rows_it_lacks() -> None:
    n = bucket_count(BASE.n_features, ROWS_PER_BUCKET)
    index = BucketIndex(BASE, n)
    head = {"n_buckets": n, "n_factors": 4, "w0": BASE.w0, "init_seed": 11, "init_scale": 0.1}
    partial = PartialBase.from_json(BASE.version, head)
    names = ["user=alice", "item=3", "item=299", "item=7000", "genre=Noir", "hour=23"]
    with pytest.raises(MissingRowsError) as caught:
        partial.rows(names)
    assert set(caught.value.buckets) == {bucket_of(name, n) for name in names}
    for bucket in partial.missing(names):
        partial.add(RowSet.from_bytes(index.rowset(bucket).to_bytes()))
    assert partial.missing(names) == []
    for got, want in zip(partial.rows(names), BASE.rows(names), strict=True):
        assert np.array_equal(got, want)  # unseen names (item=7000, hour=23) included
    with pytest.raises(ValueError, match="does not belong"):
        partial.add(BucketIndex(random_base(10, "v2"), n).rowset(0))
    exact = exact_rowset(BASE, ["item=1", "nope", "item=1"])
    assert exact.features == ["item=1"] and exact.n_buckets == 0


# --- over HTTP -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def settings(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load_settings(
        redis_url=redis_server.url, secret_key=SECRET, n_shards=N_SHARDS,
        data_dir=tmp_path_factory.mktemp("rows-data"), api_port=free_port(), api_workers=1,
        base_bucket_rows=ROWS_PER_BUCKET, max_base_rows_features=50,
        rate_rank_per_s=0, rate_events_per_s=0,
    )  # fmt: skip


@pytest.fixture(scope="module")
def server(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with gunicorn_api(settings, tmp_path_factory.mktemp("gunicorn")) as (url, _log):
        yield url


@pytest.fixture
def admin(server: str, settings: Settings, redis_url: str) -> Iterator[Api]:
    """An admin's HTTP client, on a clean database (``redis_url`` flushes it) with BASE."""
    with Store.from_url(redis_url, N_SHARDS) as s:
        s.bases.put_base(BASE.version, BASE.to_bytes(), {"generation": 0})
        s.bases.set_current(BASE.version)
    yield Api(server, issue_token(settings, admin=True).token)


@pytest.fixture
def store(admin: Api, redis_url: str) -> Iterator[Store]:
    with Store.from_url(redis_url, N_SHARDS) as s:
        yield s


def test_the_model_answer_names_the_buckets_and_each_bucket_is_immutable(
    admin: Api, store: Store
) -> None:
    head = admin.call("GET", "/v1/users/alice/model").json()["base_rows"]
    assert head["url"] == "/v1/base/v1/buckets/128/{bucket}" and head["n_buckets"] == 128
    assert (head["n_factors"], head["init_seed"], head["w0"]) == (4, 11, pytest.approx(0.2))
    url = head["url"].format(bucket=bucket_of("item=3", 128))
    answer = admin.call("GET", url)
    assert answer.status == 200 and answer.headers["Cache-Control"].endswith("immutable")
    rows = RowSet.from_bytes(answer.data)
    assert "item=3" in rows.features and rows.version == "v1"
    etag = answer.headers["ETag"]
    again = admin.call("GET", url, headers={"If-None-Match": etag})
    assert again.status == 304 and again.data == b"" and again.headers["ETag"] == etag


def test_bad_bucket_requests_are_404_problems_that_name_what_exists(
    admin: Api, store: Store
) -> None:
    body = problem(admin.call("GET", "/v1/base/v1/buckets/64/0"), 404)
    assert "served in 128 buckets" in body["detail"] and body["n_buckets"] == 128
    body = problem(admin.call("GET", "/v1/base/v1/buckets/128/128"), 404)
    assert "bucket 128 does not exist" in body["detail"]
    body = problem(admin.call("GET", "/v1/base/v0/buckets/128/1"), 404)
    assert "'v0' does not exist; the current one is 'v1'" in body["detail"]
    assert body["current_version"] == "v1"
    problem(admin.call("GET", "/v1/base/v1/buckets/128/-1"), 404)
    assert admin.call("GET", "/v1/base/v1/buckets/128/0", token="").status == 401


def test_exact_rows_are_limited_and_validated(admin: Api, store: Store) -> None:
    answer = admin.call("POST", "/v1/base/v1/rows", {"features": ["item=1", "item=999"]})
    assert answer.status == 200 and answer.headers["Cache-Control"] == "no-store"
    assert RowSet.from_bytes(answer.data).features == ["item=1"]
    too_many = {"features": [f"item={i}" for i in range(51)]}
    body = problem(admin.call("POST", "/v1/base/v1/rows", too_many), 413)
    assert "51 feature names sent, at most 50" in body["detail"]
    assert "FEDLEARN_MAX_BASE_ROWS_FEATURES" in body["detail"]
    body = problem(admin.call("POST", "/v1/base/v1/rows", {"features": ["ok", ""]}), 422)
    assert body["errors"][0]["field"].startswith("features")
    problem(admin.call("POST", "/v1/base/v1/rows", {"features": []}), 422)
    body = problem(admin.call("POST", "/v1/base/v7/rows", {"features": ["item=1"]}), 404)
    assert body["current_version"] == "v1"


def trained_user(admin: Api, store: Store, user: str) -> None:
    """Events through the API and a real trainer: the user has a delta to score with."""
    events = [
        {"event_id": f"{user}-{i}", "user": user, "item": str(item), "signal": signal,
         "ts": 1.7e9 + i, "context": {"hour": "21"}}
        for i, (item, signal) in enumerate([(290, "click"), (291, "skip"), (295, "click"),
                                            (7, "click"), (300, "skip")])
    ]  # fmt: skip
    assert admin.call("POST", "/v1/events", {"events": events}).status == 202
    trainer = Trainer(store, lambda base: CloneSettings(lr=0.2, l2=0.0, bias_lr=0.2))
    trainer.ownership.maintain()
    assert trainer.step() == len(events)


def test_a_partial_session_scores_what_the_server_ranks(
    server: str, settings: Settings, admin: Api, store: Store
) -> None:
    trained_user(admin, store, "alice")
    client = Client(server, issue_token(settings, user="alice").token)
    items = candidates(40)
    context = {"hour": "21"}
    session = client.start_session("alice", items, context=context)
    assert isinstance(session.base, PartialBase) and session.events_applied == 5
    assert session.model["delta"]["features"]  # the clone is not the base
    fetched = len(session.base.buckets)
    assert 0 < fetched < 128 and len(session.base.w) < BASE.n_features / 2
    local = session.rank_locally(items, context=context)
    served = client.rank("alice", items, context=context).items
    assert [i for i, _ in local] == [i for i, _ in served]
    for (_, mine), (_, theirs) in zip(local, served, strict=True):
        assert mine == pytest.approx(theirs, rel=1e-12, abs=1e-15)
    whole = client.start_session("alice")  # an old client: the whole base, same scores
    assert whole.base.n_features == BASE.n_features
    assert whole.rank_locally(items, context=context) == local
    with pytest.raises(MissingRowsError):
        session.rank_locally(candidates(120), context=context)
    assert client.prepare(session, candidates(120), context=context) > 0
    assert client.prepare(session, candidates(120), context=context) == 0


def test_a_partial_session_on_an_unknown_bucket_url_raises_the_problem(
    server: str, settings: Settings, store: Store
) -> None:
    client = Client(server, issue_token(settings, user="alice").token)
    session = client.start_session("alice", ["1"])
    session.model["base_rows"]["url"] = "/v1/base/v1/buckets/64/{bucket}"
    with pytest.raises(ApiError) as caught:
        client.prepare(session, ["2", "3", "4", "5", "6"])
    assert caught.value.status == 404 and caught.value.problem["n_buckets"] == 128


def test_the_committed_rowset_vectors_are_what_python_computes() -> None:
    """client_js/test/rowset-vectors.json holds the buckets and scores the JS tests check;
    regenerate it with `python -m fedlearn.model.rowset_vectors <that path>`."""
    committed = orjson.loads(ROWSET_VECTORS.read_bytes())
    fresh = orjson.loads(orjson.dumps(make_rowset_vectors()))
    assert committed.keys() == fresh.keys()
    for key in fresh:
        assert_close(committed[key], fresh[key], key)


def test_a_partial_session_in_chromium_ranks_as_the_server_and_caches_buckets(
    server: str, settings: Settings, admin: Api, store: Store
) -> None:
    """The browser client (client_js/test/e2e/partial.mjs) in headless Chromium, loaded from
    the API's origin: the same order and scores as POST /rank, never the whole base, and a
    second session whose buckets all come from the browser's HTTP cache."""
    reason = _missing_tools()
    if reason:
        pytest.skip(f"browser test skipped: {reason}")
    trained_user(admin, store, "alice")
    request = {"items": candidates(30), "context": {"hour": "21"}}
    token = issue_token(settings, user="alice").token
    done = subprocess.run(
        ["node", str(PARTIAL_SCRIPT), server, "alice", token, orjson.dumps(request).decode()],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    run = orjson.loads(done.stdout.splitlines()[-1])
    assert run["problems"] == []
    first, second = run["first"], run["second"]
    assert [i for i, _ in first["ranked"]] == [i for i, _ in run["served"]]
    for (_, mine), (_, theirs) in zip(first["ranked"], run["served"], strict=True):
        assert mine == pytest.approx(theirs, abs=1e-6)
    assert second["ranked"] == first["ranked"]
    buckets = [r for r in first["requests"] if "/buckets/" in r["url"]]
    assert first["fetched"] > 0 and len(buckets) == first["fetched"] + 1  # + the user's row
    assert not any(r["url"] == "/v1/base/v1" for r in first["requests"] + second["requests"])
    cached = [r for r in second["requests"] if "/buckets/" in r["url"]]
    assert len(cached) == len(buckets) and all(r["transfer"] == 0 for r in cached), cached
