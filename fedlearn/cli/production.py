"""``fedlearn reproduce``: re-run the production event log and compare with what it logged."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from fedlearn.cli.common import fail_with_config_errors


@click.command()
@click.argument("eventlog", type=click.Path(file_okay=False, path_type=Path))
@click.option("--tol", default=1e-6, show_default=True, type=click.FloatRange(min=0.0))
@fail_with_config_errors
def reproduce(eventlog: Path, tol: float) -> None:
    """Re-run EVENTLOG (the trainers' folder) through the trainer's apply code with the
    service's clone settings and its published bases; exit 1 unless every prediction the
    service logged comes out again within --tol.

    Users start from an empty delta: run it on a log that starts with the service (or with a
    new generation), where that is what they started from."""
    from fedlearn.devtools.runtime import require_redis_url, service_settings
    from fedlearn.evaluate.production import reproduce as run
    from fedlearn.model import Base
    from fedlearn.store import Store
    from fedlearn.trainer.apply import CloneSettings

    settings = service_settings()
    store = Store.from_url(require_redis_url(settings), settings.n_shards)

    def base_of(version: str) -> Base:
        return Base.from_bytes(store.bases.get_base(version))

    current = store.bases.current_version()
    hyper = base_of(current).hyper if current else {}
    try:
        result = run(eventlog, base_of, CloneSettings(**settings.clone_hyper(hyper)), tol=tol)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2).decode())
    if not result.reproduced:
        raise click.ClickException(
            f"{result.over_tol} of {result.events} predictions differ by more than {tol} "
            f"(worst: event {result.worst_event}, {result.max_abs_diff:.3g})"
        )
