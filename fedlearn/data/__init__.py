"""Event, item and user data: the formats, the dataset folder, MovieLens and synthetic sources.

The converters live in ``fedlearn.data.movielens`` and ``fedlearn.data.synthetic`` (they pull
in numpy and tqdm, so they are not imported here).
"""

from __future__ import annotations

from fedlearn.data.catalog import (
    Dataset,
    FeatureTable,
    Manifest,
    read_manifest,
    read_table,
    write_dataset,
    write_manifest,
    write_table,
)
from fedlearn.data.errors import BadRows, DataError, MissingDataError
from fedlearn.data.events import Event, read_events, write_events

__all__ = [
    "BadRows",
    "DataError",
    "Dataset",
    "Event",
    "FeatureTable",
    "Manifest",
    "MissingDataError",
    "read_events",
    "read_manifest",
    "read_table",
    "write_dataset",
    "write_events",
    "write_manifest",
    "write_table",
]
