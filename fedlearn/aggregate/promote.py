"""Promotion's rebase: each participant of a published round gets its share taken out.

Before a published round's snapshot candidates become the users' snapshots
(``Rounds.promote``), every participant's share of the step (``rebase``) is worked out again
from what the map step read (the candidate, the old snapshot: both still in Redis) and the
round's share table (stored by the reducer with the version), then

1. sent through the user's shard stream as a ``rebase`` entry (``serving.ingest``), so the
   trainer takes it out of the delta in order with the user's events, in memory and in Redis
   at once; the entry's id is fixed by (version, user), so a resend is a duplicate;
2. taken out of the candidate itself, which becomes the snapshot: the next round's change
   (delta now minus snapshot) then holds what the user learned since, not the rebase.

Safe to repeat after a crash anywhere: a user whose snapshot already moved to its candidate
is skipped (promoted, its entry sent before); for the others the same inputs give the same
entries (duplicates) and the same rebased candidates.
"""

from __future__ import annotations

import logging
from typing import Any

from fedlearn.aggregate.changes import UserPair, user_changes
from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.mapper import read_pair, snapshot_of
from fedlearn.aggregate.rebase import ShareTable, is_empty, rebase, user_shares
from fedlearn.aggregate.snapshots import Snapshot
from fedlearn.model import Delta
from fedlearn.model.block import RowTable
from fedlearn.serving.ingest import rebase_entry
from fedlearn.store import Store
from fedlearn.store.rounds import Rounds

log = logging.getLogger(__name__)

# How long the API can find a rebase it may have to apply on the fly: far beyond how long a
# trainer takes to reach its entry, unless its shard is down for a week.
NOTES_TTL_S = 7 * 24 * 3600
# How many of the latest promotions a base's meta lists for the API (``rebase_versions``): a
# trainer more rounds behind than this is served without their rebase until it catches up.
REBASE_LOOKBACK = 8


def rebase_participants(store: Store, rounds: Rounds, record: dict[str, Any]) -> bool:
    """Rebase the participants of the published round ``record`` on its new version, shard
    by shard. False when the round has no share table (published before rebasing existed):
    its candidates are promoted as they were."""
    version = record["new_version"]
    blob = rounds.get_shares(version)
    if blob is None:
        log.warning("round %s: no share table for version %s; not rebased", record["id"], version)
        return False
    table = ShareTable.from_bytes(blob)
    config = AggregationConfig.from_json(record["config"])
    for shard in range(store.n_shards):
        rebase_shard(store, rounds, record, shard, table, config)
    return True


def rebase_shard(
    store: Store,
    rounds: Rounds,
    record: dict[str, Any],
    shard: int,
    table: ShareTable,
    config: AggregationConfig,
) -> int:
    """Send ``shard``'s rebase entries and keep its rebased candidates; returns how many
    users had something to take out."""
    round_id, version = record["id"], record["new_version"]
    generation, k = int(record["generation"]), int(record["n_factors"])
    sent = 0
    for chunk in rounds.candidates(shard, round_id):
        snapshots = rounds.snapshots(shard, list(chunk))
        users: list[str] = []
        pairs: list[UserPair] = []
        rebased: dict[str, bytes] = {}
        for user, blob in chunk.items():
            candidate = Snapshot.from_bytes(blob)
            old = snapshot_of(snapshots.get(user), generation)
            if old is not None and old.position >= candidate.position:
                continue  # promoted by an earlier attempt: its entry was sent before
            read = read_pair(candidate.delta, old, config)
            if isinstance(read, str):  # the map step read it: cannot happen, but never guess
                rebased[user] = blob
                continue
            users.append(user)
            pairs.append((read[0], read[1], candidate.events - (old.events if old else 0)))
            rebased[user] = blob
        entries: dict[str, dict[str, Any]] = {}
        for i, share in _shares(pairs, k, table, config).items():
            if is_empty(share):
                continue
            user, delta = users[i], pairs[i][0]
            entries[user] = rebase_entry(user, version, generation, share.to_json())
            candidate = Snapshot.from_bytes(chunk[user])
            rebased[user] = Snapshot(
                candidate.generation, candidate.last_event, candidate.events,
                rebase(delta, share).to_bytes(),
            ).to_bytes()  # fmt: skip
        # entries first: once a snapshot moved, a retry skips its user
        store.streams.append_rebases(shard, version, entries, notes_ttl_s=NOTES_TTL_S)
        rounds.write_rebased(shard, round_id, rebased)
        sent += len(entries)
    return sent


def _shares(
    pairs: list[UserPair], k: int, table: ShareTable, config: AggregationConfig
) -> dict[int, Delta]:
    """The users' shares: their clipped changes exactly as the map step computed them."""
    if not pairs:
        return {}
    rows = RowTable()
    changes = user_changes(
        pairs, k, rows, clip_norm=config.clip_norm, max_weight=config.max_weight,
        max_norm=config.max_user_norm,
    )  # fmt: skip
    return user_shares(changes, rows.names, table)
