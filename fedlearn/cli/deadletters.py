"""``fedlearn dead-letters``: what the trainers set aside instead of stopping on it, and why.

A poison entry or an unreadable stored record goes to its shard's dead-letter stream with the
reason (``store.deadletters``); this lists the newest ones, as a table or as JSON Lines.
"""

from __future__ import annotations

import time

import click
import orjson

from fedlearn.cli.common import fail_with_config_errors, service_store
from fedlearn.store.deadletters import MAX_LIST

RAW_SHOWN = 60  # characters of the raw record in the table (--json shows it whole)


@click.command("dead-letters")
@click.option("--shard", type=click.IntRange(min=0), default=None, help="Only this shard.")
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_LIST),
    default=20,
    show_default=True,
    help="The newest LIMIT dead letters of each shard.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line, raw included.")
@fail_with_config_errors
def dead_letters(shard: int | None, limit: int, as_json: bool) -> None:
    """List dead letters (poison entries, unreadable deltas and gates) with their reason."""
    from fedlearn.devtools.runtime import service_settings

    settings = service_settings()
    if shard is not None and shard >= settings.n_shards:
        raise click.BadParameter(
            f"{shard} is not a shard: FEDLEARN_N_SHARDS={settings.n_shards}, so give "
            f"0..{settings.n_shards - 1}",
            param_hint="--shard",
        )
    with service_store(settings) as store:
        shards = [shard] if shard is not None else list(store.shards)
        letters = [letter for s in shards for letter in store.dead_letters.latest(s, limit=limit)]
    if as_json:
        for letter in letters:
            click.echo(orjson.dumps(letter.to_json()).decode())
        return
    if not letters:
        click.echo("no dead letters")
        return
    for letter in letters:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(letter.at))
        raw = letter.to_json()["raw"]
        raw = raw if len(raw) <= RAW_SHOWN else raw[: RAW_SHOWN - 3] + "..."
        click.echo(f"shard {letter.shard:>3}  {when}  {letter.describe()}  raw: {raw}")
