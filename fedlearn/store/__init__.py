"""All of fedlearn's Redis traffic: keys and shards, base versions, user deltas, the shard
streams and their exactly-once commit, leases, the applied-event log. Start from ``Store``;
see ``store.py`` for the map."""

from __future__ import annotations

from fedlearn.store.bases import BaseInfo
from fedlearn.store.commit import CommitResult
from fedlearn.store.connection import connect
from fedlearn.store.deadletters import DeadLetter
from fedlearn.store.deltas import DeltaRecord
from fedlearn.store.entries import Batch, Entry, Rejected
from fedlearn.store.errors import (
    LeaseLostError,
    PrunedVersionError,
    ShardCountError,
    StaleCommitError,
    StoreError,
    StreamFullError,
    UnknownVersionError,
    VersionConflictError,
    VersionExistsError,
    VersionInUseError,
)
from fedlearn.store.keys import shard_of
from fedlearn.store.leases import new_owner_token
from fedlearn.store.store import Store
from fedlearn.store.streamid import StreamId, already_applied, compare_ids
from fedlearn.store.streams import AppendResult

__all__ = [
    "AppendResult",
    "BaseInfo",
    "Batch",
    "CommitResult",
    "DeadLetter",
    "DeltaRecord",
    "Entry",
    "LeaseLostError",
    "PrunedVersionError",
    "Rejected",
    "ShardCountError",
    "StaleCommitError",
    "Store",
    "StoreError",
    "StreamFullError",
    "StreamId",
    "UnknownVersionError",
    "VersionConflictError",
    "VersionExistsError",
    "VersionInUseError",
    "already_applied",
    "compare_ids",
    "connect",
    "new_owner_token",
    "shard_of",
]
