"""``fedlearn datasets``: make a dataset folder from MovieLens, the synthetic generator, the
production event log or one's own files.

Both commands write the same folder layout (events.jsonl, items.jsonl, [users.jsonl],
dataset.json) that ``train-base``, ``replay`` and the benchmarks read. A data problem ends the
command with the file, the line and what to do, never with a traceback.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from fedlearn.cli.common import count_option, default_of
from fedlearn.data.catalog import Manifest
from fedlearn.data.errors import BadRows, DataError
from fedlearn.data.synthetic import SyntheticConfig


def _summary(out: Path, manifest: Manifest, seconds: float) -> str:
    c = manifest.counts
    return (
        f"wrote {out}: {c['events']:,} events ({c['clicks']:,} clicks, {c['skips']:,} skips), "
        f"{c['users']:,} users, {c['items']:,} items"
        + (
            f", {c['users_with_features']:,} users with features"
            if c["users_with_features"]
            else ""
        )
        + f" in {seconds:.1f} s"
    )


@click.group()
def datasets() -> None:
    """Make dataset folders (events.jsonl, items.jsonl, users.jsonl, dataset.json)."""


@datasets.command()
@click.argument("src", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write; replaced in one step if it is an earlier dataset folder.",
)
@click.option(
    "--skip-bad", is_flag=True, help="Count and skip bad rows instead of stopping at the first."
)
def movielens(src: Path, out: Path, skip_bad: bool) -> None:
    """Convert the unzipped MovieLens folder SRC (ml-latest[-small], ml-100k or ml-1m).

    A rating of 4 or more becomes a click, lower a skip.
    """
    from fedlearn.data.movielens import convert_movielens

    bad = BadRows()
    started = time.perf_counter()
    try:
        manifest = convert_movielens(src, out, skip_bad=skip_bad, bad=bad, progress=True)
    except DataError as exc:
        about_a_row = exc.line is not None and not skip_bad
        hint = " (or pass --skip-bad to count and skip bad rows)" if about_a_row else ""
        raise click.ClickException(f"{exc}{hint}") from None
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or out}: {exc.strerror or exc}") from None
    click.echo(f"{manifest.source}: " + _summary(out, manifest, time.perf_counter() - started))
    if bad.count:
        click.echo(bad.summary())


@datasets.command()
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@count_option("--users", "n_users", default=default_of(SyntheticConfig, "n_users"))
@count_option("--items", "n_items", default=default_of(SyntheticConfig, "n_items"))
@count_option("--genres", "n_genres", default=default_of(SyntheticConfig, "n_genres"))
@count_option(
    "--events-per-user",
    default=default_of(SyntheticConfig, "events_per_user"),
    help="Mean events per user (exact with --fixed-counts).",
)
@click.option(
    "--fixed-counts", is_flag=True, help="Every user gets exactly --events-per-user events."
)
@click.option("--seed", default=default_of(SyntheticConfig, "seed"), show_default=True, type=int)
@click.option(
    "--drift",
    default=default_of(SyntheticConfig, "drift"),
    show_default=True,
    type=click.FloatRange(min=0.0),
    help="How far tastes turn over the time span, in quarter turns (0 = none).",
)
@click.option(
    "--repeat",
    default=default_of(SyntheticConfig, "repeat"),
    show_default=True,
    type=click.FloatRange(0.0, 1.0, max_open=True),
    help="Chance that an impression shows one of the user's last few items again.",
)
@click.option(
    "--affinity",
    "affinity_scale",
    default=default_of(SyntheticConfig, "affinity_scale"),
    show_default=True,
    type=click.FloatRange(min=0.0),
    help="Spread of each (user, item) pair's own taste, which no shared feature explains.",
)
@click.option(
    "--population-taste",
    "population_taste_scale",
    default=default_of(SyntheticConfig, "population_taste_scale"),
    show_default=True,
    type=click.FloatRange(min=0.0),
    help="Spread of the genre taste all users share (each adds their own to it).",
)
@click.option(
    "--shift-at",
    default=None,
    type=click.FloatRange(min=0.0, max=1.0, min_open=True, max_open=True),
    help="A sudden shift of tastes and item biases at this fraction of the time span.",
)
def synthetic(
    out: Path,
    n_users: int,
    n_items: int,
    n_genres: int,
    events_per_user: int,
    fixed_counts: bool,
    seed: int,
    drift: float,
    repeat: float,
    affinity_scale: float,
    population_taste_scale: float,
    shift_at: float | None,
) -> None:
    """Draw a seeded synthetic log with known per-user tastes (and optional drift)."""
    from fedlearn.data.synthetic import write_synthetic

    try:
        config = SyntheticConfig(
            n_users=n_users,
            n_items=n_items,
            n_genres=n_genres,
            events_per_user=events_per_user,
            counts="fixed" if fixed_counts else "zipf",
            seed=seed,
            drift=drift,
            repeat=repeat,
            affinity_scale=affinity_scale,
            population_taste_scale=population_taste_scale,
            shift_at=shift_at,
            genres_per_item=min(default_of(SyntheticConfig, "genres_per_item"), n_genres),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    started = time.perf_counter()
    try:
        manifest, _ = write_synthetic(out, config, progress=True)
    except DataError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or out}: {exc.strerror or exc}") from None
    click.echo(_summary(out, manifest, time.perf_counter() - started))


def _convert(make, out: Path, *sources: Path) -> None:
    started = time.perf_counter()
    try:
        manifest = make(*sources, out)
    except DataError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or out}: {exc.strerror or exc}") from None
    click.echo(_summary(out, manifest, time.perf_counter() - started))
    if manifest.counts.get("features_differ"):
        click.echo(
            f"note: {manifest.counts['features_differ']:,} events were trained on other "
            f"features than the item table rebuilds (see served.jsonl)"
        )


@datasets.command("from-eventlog")
@click.argument("eventlog", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
def from_eventlog(eventlog: Path, out: Path) -> None:
    """The production event log EVENTLOG (the trainers' folder) as a dataset folder, with what
    the service trained on and predicted for each event (served.jsonl)."""
    from fedlearn.data.fromlog import dataset_from_eventlog

    _convert(dataset_from_eventlog, out, eventlog)


@datasets.command("import")
@click.argument("events", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--items", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="The item table: CSV (item, title, categorical columns) or JSON Lines.",
)  # fmt: skip
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
def import_files(events: Path, items: Path, out: Path) -> None:
    """Your own clicks: EVENTS (CSV or JSON Lines: user, item, signal click|skip, ts) and an
    item table, as a dataset folder for `train-base`."""
    from fedlearn.data.fromlog import dataset_from_files

    _convert(dataset_from_files, out, events, items)
