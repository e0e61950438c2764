"""Shared test vectors of partial bases: what the JavaScript client must read and score alike.

``python -m fedlearn.model.rowset_vectors client_js/test/rowset-vectors.json`` writes them; the
Node tests (``client_js/test/rowset.test.js``) and ``tests/test_base_rows.py`` read that file,
so both sides agree on bucket numbers, the ``.flrs`` bytes and the scores over a partial base.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from fedlearn.model.base import Base
from fedlearn.model.clone import Clone
from fedlearn.model.delta import Delta
from fedlearn.model.features import event_features
from fedlearn.model.rowset import BucketIndex, bucket_of

N_BUCKETS = 8
USER = "alice"


def _base() -> Base:
    rng = np.random.default_rng(5)
    names = [f"item={i}" for i in range(30)] + ["genre=Drama", "genre=Comédie", "hour=21"]
    names += [f"user={USER}"]
    fresh = Base.fresh(names, 3, init_seed=9, init_scale=0.1)
    return Base(
        names, -0.3, rng.normal(0, 0.3, len(names)), fresh.v + rng.normal(0, 0.1, fresh.v.shape),
        version="rows-v1", init_seed=9, init_scale=0.1,
    )  # fmt: skip


def make_rowset_vectors() -> dict[str, Any]:
    base = _base()
    index = BucketIndex(base, N_BUCKETS)
    rng = np.random.default_rng(6)
    delta = Delta(base.n_factors)
    clone = Clone(base, delta, lr=0.3)
    for i in range(6):  # a delta that touches known and unknown rows
        clone.learn_one(event_features(USER, str(i * 7), {"hour": "21"}), int(i % 2))
    cases = []
    for i in range(12):
        item = str(int(rng.integers(0, 40)))  # items 30.. are unknown to the base
        genre = {"genre=Drama": 1.0} if i % 2 else {"genre=Comédie": 1.0}
        features = event_features(USER, item, {"hour": "21" if i % 3 else "22"}, genre)
        cases.append({"features": features, "expected_score": clone.predict_proba_one(features)})
    names = [*base.features, "item=99", "ü", "", "genre=Sci-Fi"]
    return {
        "base": base64.b64encode(base.to_bytes()).decode(),
        "base_rows": {
            "url": "/v1/base/rows-v1/buckets/8/{bucket}", "n_buckets": N_BUCKETS,
            "n_factors": base.n_factors, "w0": base.w0, "init_seed": base.init_seed,
            "init_scale": base.init_scale,
        },
        "buckets": {
            str(b): base64.b64encode(index.rowset(b).to_bytes()).decode() for b in range(N_BUCKETS)
        },
        "bucket_of": {name: bucket_of(name, N_BUCKETS) for name in names},
        "user": USER,
        "delta": delta.to_json(),
        "cases": cases,
    }  # fmt: skip


def main() -> None:
    out = orjson.dumps(make_rowset_vectors(), option=orjson.OPT_INDENT_2)
    Path(sys.argv[1]).write_bytes(out + b"\n")


if __name__ == "__main__":
    main()
