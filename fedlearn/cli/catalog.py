"""``fedlearn catalog``: load one's own item table into the running service's catalog."""

from __future__ import annotations

from pathlib import Path

import click

from fedlearn.cli.common import fail_with_config_errors


@click.group()
def catalog() -> None:
    """The item catalog the service ranks with and builds events' features from."""


@catalog.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@fail_with_config_errors
def load(file: Path) -> None:
    """Replace the catalog with the items of FILE, in one step.

    FILE is JSON Lines ({"item": id, "title": ..., "features": {name: number}} per line, e.g.
    a dataset folder's items.jsonl) or CSV (an `item` column, an optional `title`, and
    categorical columns: `genre` = `Drama|Comedy` gives the features genre=Drama, genre=Comedy).
    """
    from fedlearn.data.errors import DataError
    from fedlearn.data.items import read_items
    from fedlearn.devtools.runtime import require_redis_url, service_settings
    from fedlearn.store import Store

    try:
        items = read_items(file)
    except DataError as exc:
        raise click.ClickException(f"{exc}; the catalog was not changed") from None
    settings = service_settings()
    store = Store.from_url(require_redis_url(settings), settings.n_shards)
    version = store.catalog.replace(items)
    click.echo(f"catalog version {version}: {len(items):,} items from {file}")
