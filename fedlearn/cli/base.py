"""``fedlearn base``: the published base versions: list them, roll back, retrain monthly."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fedlearn.cli.common import fail_with_config_errors, service_store

if TYPE_CHECKING:
    from fedlearn.config import Settings
    from fedlearn.store import Store


def _store() -> tuple[Settings, Store]:
    from fedlearn.devtools.runtime import service_settings

    settings = service_settings()
    return settings, service_store(settings)


@click.group()
def base() -> None:
    """Base model versions: immutable; the current one is a pointer."""


@base.command("list")
@fail_with_config_errors
def list_versions() -> None:
    """Published versions, oldest first; '*' marks the current one."""
    _, store = _store()
    current = store.bases.current_version()
    history = store.bases.history()
    pruned = store.bases.pruned()
    if not history:
        click.echo("no base version is published yet")
        return
    click.echo(f"  {'version':<10} {'published (UTC)':<20} {'gen':>3}  origin")
    for info in history:
        meta = info.meta
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(info.created_at))
        if meta.get("round"):
            origin = (
                f"round {meta['round']} on {meta.get('parent')}: {meta.get('users', 0):,} users, "
                f"{(meta.get('strategy') or {}).get('name')}"
            )
        elif meta.get("kind") == "monthly":
            origin = f"monthly retrain on {meta.get('n_events', 0):,} events"
        else:
            origin = str(meta.get("kind") or meta.get("source") or "published")
        mark = "*" if info.version == current else " "
        if info.version in pruned:
            origin += "  [pruned: `base prune`]"
        click.echo(f"{mark} {info.version:<10} {when:<20} {meta.get('generation', 0):>3}  {origin}")


@base.command()
@click.argument("version")
@fail_with_config_errors
def rollback(version: str) -> None:
    """Make the published VERSION current again (versions never change; retention deletes
    old ones: `fedlearn base prune`)."""
    _, store = _store()
    previous = store.bases.rollback(version)
    click.echo(f"current base: {previous} -> {version}")


@base.command()
@click.option(
    "--from-eventlog", "eventlog", type=click.Path(file_okay=False, path_type=Path),
    default=None, help="Event log folder (default: the monthly setting, else DATA_DIR/eventlog).",
)  # fmt: skip
@click.option("--no-publish", is_flag=True, help="Train and report, publish nothing.")
@fail_with_config_errors
def retrain(eventlog: Path | None, no_publish: bool) -> None:
    """Retrain the base on the event log and start a new generation (the monthly job)."""
    from fedlearn.aggregate.config import AggregationConfig
    from fedlearn.aggregate.monthly import retrain_from_eventlog
    from fedlearn.aggregate.run import RoundError

    settings, store = _store()
    config = AggregationConfig.from_settings(settings)
    folder = eventlog or Path(config.monthly_eventlog_dir or settings.data_dir / "eventlog")
    try:
        summary = retrain_from_eventlog(
            store, folder, publish=not no_publish, shadow_events=config.shadow_events,
            shadow_margin=config.shadow_margin,
            progress=lambda r: click.echo(f"  epoch {r['epoch']:.0f}: {r}", err=True),
        )  # fmt: skip
    except (ValueError, RoundError) as exc:
        raise click.ClickException(str(exc)) from None
    if "rejected" in summary:
        version, why = summary["version"], summary["rejected"]
        raise click.ClickException(f"base {version} not published: {why}")
    what = "trained (not published)" if no_publish else "published"
    click.echo(
        f"base {summary['version']} {what}: generation {summary['generation']}, "
        f"{summary['n_events']:,} events, {summary['epochs']} epochs"
        + (f", {summary['archived']:,} deltas archived" if "archived" in summary else "")
    )


@base.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--version", default=None, help="Version id to publish as [default: the file's].")
@click.option("--stage", is_flag=True, help="Store only; `base rollback VERSION` makes it current.")
@fail_with_config_errors
def publish(file: Path, version: str | None, stage: bool) -> None:
    """Publish the base model FILE (.flfm, from `fedlearn train-base`) and make it current."""
    from fedlearn.aggregate.publish import BaseRefused, publish_base
    from fedlearn.store import VersionExistsError

    settings, store = _store()
    try:
        done = publish_base(
            store, file.read_bytes(), version=version, make_current=not stage,
            max_row_norm=settings.aggregation_max_row_norm,
            max_features=settings.aggregation_max_base_features, source=str(file),
        )  # fmt: skip
    except (BaseRefused, VersionExistsError) as exc:
        raise click.ClickException(f"{file}: {exc}") from None
    state = "current" if done.current else "staged (not current)"
    again = "" if done.created else " (already published with these bytes)"
    click.echo(
        f"base {done.version}{again}: {done.n_features:,} features, {done.n_factors} factors, "
        f"{state}" + (f"; was {done.previous}" if done.previous and not stage else "")
    )


@base.command()
@click.option("--dry-run", is_flag=True, help="Show what would be pruned; delete nothing.")
@click.option(
    "--keep", type=click.IntRange(min=0), default=None,
    help="Versions kept besides the current one and those in use "
    "[default: FEDLEARN_BASE_KEEP_VERSIONS].",
)  # fmt: skip
@fail_with_config_errors
def prune(dry_run: bool, keep: int | None) -> None:
    """Delete the bytes of old base versions that nothing needs (what each promotion does)."""
    from fedlearn.aggregate.retention import prune_bases

    settings, store = _store()
    keep = settings.base_keep_versions if keep is None else keep
    if not store.bases.history():
        raise click.ClickException("no base version is published yet: nothing to prune")
    report = prune_bases(store, store.rounds, keep, dry_run=dry_run)
    for version, why in report.plan.kept.items():
        click.echo(f"  keep         {version:<10} {why}")
    gone = report.plan.prune if dry_run else report.pruned
    for version in gone:
        click.echo(f"  {'would prune' if dry_run else 'pruned':<12} {version}")
    for version, why in report.skipped.items():
        click.echo(f"  left         {version:<10} {why}")
    freed = f"{report.freed / 1e6:,.1f} MB"
    if dry_run:
        click.echo(f"dry run: would prune {len(gone)} version(s), {freed}; nothing was deleted")
    else:
        click.echo(f"pruned {len(gone)} version(s), {freed} freed; {len(report.plan.kept)} kept")
