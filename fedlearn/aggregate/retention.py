"""Retention of base versions: delete the bytes of the versions nothing needs any more.

Every promotion stores a whole new base (56 MB at a million items; ~1.4 GB a day of hourly
rounds), and Redis never evicts. After a promotion (``jobs/tasks.py``) and from
``fedlearn base prune``, the bytes of every published version go except those of:

- the current version;
- a version an open round maps against (its ``base``) or is publishing (its ``new_version``);
- the rollback target: the current version's parent (what it was built on), else the version
  published just before it;
- the current version's lineage as far as its rebase notes reach (``REBASE_LOOKBACK``
  parents): ``rebase_versions`` names them for the on-the-fly rebase. The notes are keyed by
  the id, not the bytes, but an id the API still applies should name a version that
  ``base list`` shows and a rollback can reach;
- the ``keep_versions`` most recently published besides the current one (a rollback to any
  of them, and forward again after a rollback, keeps working).

Nothing else reads a base's bytes by version: a delta names its base but is applied on the
current one, and partial-base buckets are sliced from the version's bytes, so they go with
them. History entries stay, and a pruned id is never published again (``store/bases.py``):
a client that asks for one hears that it was pruned and that the current one is the cure.
Each deletion checks "not current" in the same step as it deletes, so pruning is safe to
run twice, concurrently, and beside a rollback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from fedlearn.aggregate.promote import REBASE_LOOKBACK
from fedlearn.store import Store, UnknownVersionError, VersionInUseError
from fedlearn.store.rounds import Rounds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionPlan:
    """What retention keeps and why, in publishing order, and what it deletes."""

    kept: dict[str, str]
    prune: list[str]  # oldest first
    pruned_before: dict[str, float]  # version -> unix time its bytes went


@dataclass
class PruneReport:
    """What a run deleted (``pruned``, ``freed`` bytes; a dry run counts what it would
    free), and what it left because it changed meanwhile."""

    plan: RetentionPlan
    pruned: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    freed: int = 0


def plan_retention(store: Store, rounds: Rounds, keep_versions: int) -> RetentionPlan:
    """Which published versions keep their bytes (with the reason) and which lose them."""
    if keep_versions < 0:
        raise ValueError(f"keep_versions must be 0 or more, got {keep_versions}")
    infos = store.bases.history()
    history = list(dict.fromkeys(info.version for info in infos))  # publishing order, once
    parents = {info.version: info.meta.get("parent") for info in infos}
    pruned = store.bases.pruned()
    current = store.bases.current_version()
    reasons: dict[str, str] = {}

    def hold(version: object, reason: str) -> None:
        if isinstance(version, str) and version not in reasons:
            reasons[version] = reason

    hold(current, "current")
    for round_id in rounds.open_rounds():
        record = rounds.get(round_id) or {}
        hold(record.get("base"), f"round {round_id} maps against it")
        hold(record.get("new_version"), f"round {round_id} publishes it")
    for depth, version in enumerate(_lineage(history, parents, current)):
        hold(version, "rollback target" if depth == 0 else "in the current rebase lineage")
    newest = [v for v in reversed(history) if v != current][:keep_versions]
    for version in newest:
        hold(version, f"among the {keep_versions} newest")
    kept = {v: reasons[v] for v in history if v in reasons}
    prune = [v for v in history if v not in reasons and v not in pruned]
    return RetentionPlan(kept, prune, {v: pruned[v] for v in history if v in pruned})


def prune_bases(
    store: Store, rounds: Rounds, keep_versions: int, *, dry_run: bool = False
) -> PruneReport:
    """Delete the bytes of the versions :func:`plan_retention` lets go (none with
    ``dry_run``). Idempotent: a version pruned meanwhile by another run is left as it is."""
    report = PruneReport(plan_retention(store, rounds, keep_versions))
    for version in report.plan.prune:
        size = store.bases.size(version)
        if dry_run:
            report.freed += size
            continue
        try:
            if store.bases.prune(version):
                report.pruned.append(version)
                report.freed += size
            else:
                report.skipped[version] = "pruned meanwhile by another run"
        except VersionInUseError:
            report.skipped[version] = "became current meanwhile (a rollback)"
        except UnknownVersionError:  # listed, but its key was deleted by hand: nothing to do
            report.skipped[version] = "has no bytes (deleted outside retention)"
    if report.pruned:
        log.info(
            "base retention: pruned %d version(s) (%s), kept %d",
            len(report.pruned), ", ".join(report.pruned), len(report.plan.kept),
        )  # fmt: skip
    return report


def _lineage(history: list[str], parents: Mapping[str, object], current: str | None) -> list[str]:
    """The rollback target of ``current`` first, then its ancestors as far as a rebase
    lineage reaches (``REBASE_LOOKBACK`` versions, ``current`` included)."""
    if current is None:
        return []
    parent = parents.get(current)
    if not isinstance(parent, str):  # published, not built: roll back to what came before
        at = history.index(current) if current in history else 0
        return history[at - 1 : at] if at > 0 else []
    line: list[str] = []
    while isinstance(parent, str) and parent != current and parent not in line:
        if len(line) >= REBASE_LOOKBACK - 1:
            break
        line.append(parent)
        parent = parents.get(parent)
    return line
