"""Partial bases as the API serves them: the head a session needs, and a base's buckets.

A client never needs the whole base: the user's model answer carries the base's scalars and
the bucket URL (:func:`rows_head`), and each bucket is an immutable ``.flrs`` blob sliced from
a per-version index (``BaseCache.bucket_index``). The bucket count is the one the settings give
for the base's size; a URL with another count names a layout this service does not serve.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedlearn.config import Settings
from fedlearn.model import Base
from fedlearn.model.rowset import bucket_count, exact_rowset
from fedlearn.serving.base_cache import BaseCache


class BucketNotServedError(LookupError):
    """A bucket URL whose count or number this service does not serve for the version."""

    def __init__(self, version: str, n_buckets: int, asked: int, bucket: int) -> None:
        if asked != n_buckets:
            detail = (
                f"base {version!r} is served in {n_buckets} buckets (FEDLEARN_BASE_BUCKET_ROWS), "
                f"not {asked}; GET /v1/users/{{user}}/model names its bucket URL"
            )
        else:
            detail = f"bucket {bucket} does not exist: base {version!r} has 0..{n_buckets - 1}"
        super().__init__(detail)
        self.n_buckets = n_buckets


def served_buckets(base: Base, settings: Settings) -> int:
    """How many buckets ``base``'s rows are served in."""
    return bucket_count(base.n_features, settings.base_bucket_rows)


def rows_head(base: Base, settings: Settings, url: str) -> dict[str, Any]:
    """The ``base_rows`` object of the model answer; ``url`` holds ``{bucket}``."""
    return {
        "url": url,
        "n_buckets": served_buckets(base, settings),
        "n_factors": base.n_factors,
        "w0": base.w0,
        "init_seed": base.init_seed,
        "init_scale": base.init_scale,
    }


def bucket_bytes(
    bases: BaseCache, settings: Settings, version: str, n_buckets: int, bucket: int
) -> bytes:
    """The ``.flrs`` bytes of one bucket (``UnknownVersionError``, ``BucketNotServedError``)."""
    served = served_buckets(bases.get(version), settings)
    if n_buckets != served or not 0 <= bucket < served:
        raise BucketNotServedError(version, served, n_buckets, bucket)
    return bases.bucket_index(version, served).rowset(bucket).to_bytes()


def exact_bytes(bases: BaseCache, version: str, features: Sequence[str]) -> bytes:
    """The ``.flrs`` bytes of exactly the rows of ``features`` that the base holds."""
    return exact_rowset(bases.get(version), features).to_bytes()
