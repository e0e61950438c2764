"""``fedlearn up``: the whole service on this machine, in one command."""

from __future__ import annotations

import signal
from pathlib import Path
from urllib.parse import urlencode

import click

from fedlearn.cli.common import fail_with_config_errors
from fedlearn.config import Settings, load_settings, setting_default
from fedlearn.devtools.supervisor import (
    TARGETS_FILE,
    AlreadyRunningError,
    RedisLostError,
    Supervisor,
)
from fedlearn.store import ShardCountError, Store


def demo_link(settings: Settings, api_url: str) -> str:
    """The demo page's URL, signed in as ``demo-user`` when auth is on."""
    if not settings.auth:
        return f"{api_url}/demo/?user=demo-user&token=off"
    from fedlearn.api.auth import issue_token

    token = issue_token(settings, "demo-user")
    return f"{api_url}/demo/?" + urlencode({"user": "demo-user", "token": token.token})


@click.command()
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=setting_default("api_port"),
    show_default=True,
    help="API port.",
)
@click.option("--demo", is_flag=True, help="Publish a demo base and catalog if none exists.")
@click.option("--trainers", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option(
    "--api-workers",
    type=click.IntRange(1, 64),
    default=setting_default("api_workers"),
    show_default=True,
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where Redis data, keys and the event log live "
    f"(default: ./{setting_default('data_dir')}).",
)
@click.option("--no-celery", is_flag=True, help="Do not start the Celery worker and beat.")
@fail_with_config_errors
def up(
    port: int, demo: bool, trainers: int, api_workers: int, data_dir: Path | None, no_celery: bool
) -> None:
    """Start Redis (embedded unless REDIS_URL is set), the API, the trainers and Celery."""
    overrides = {"data_dir": data_dir} if data_dir else {}
    settings = load_settings(**overrides)
    supervisor = Supervisor(
        settings,
        port=port,
        trainers=trainers,
        api_workers=api_workers,
        celery=False if no_celery else None,
        say=click.echo,
    )
    try:
        supervisor.check_not_running()
    except AlreadyRunningError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"data folder  {supervisor.data_dir}")
    redis_url = supervisor.start_redis()
    click.echo(f"redis        {redis_url}" + ("  (embedded, AOF on)" if supervisor.redis else ""))
    with Store.from_url(redis_url, settings.n_shards) as store:
        try:
            store.claim_shard_count()
        except ShardCountError as exc:
            supervisor.stop()
            raise click.ClickException(str(exc)) from None
        if store.bases.current_version() is None:
            if demo:
                from fedlearn.devtools.demo import install_demo

                install_demo(store, progress=lambda msg: click.echo(f"demo         {msg}"))
            else:
                from fedlearn.serving.base_cache import PUBLISH_HINT

                click.echo(f"note         no base model is published yet: {PUBLISH_HINT}")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: supervisor.stopping.set())
    try:
        supervisor.start()
        click.echo(f"api          {supervisor.api_url}   (docs: {supervisor.api_url}/docs)")
        if demo:
            click.echo(f"demo page    {demo_link(settings, supervisor.api_url)}")
        celery = "   celery: worker + beat" if supervisor.celery else ""
        click.echo(f"trainers     {trainers}{celery}")
        for name, url in supervisor.metrics_urls().items():
            click.echo(f"metrics      {url}   ({name})")
        click.echo(f"prometheus   {supervisor.data_dir / TARGETS_FILE} (file_sd)")
        click.echo("press Ctrl-C to stop")
        supervisor.watch()
    except RedisLostError as exc:
        raise click.ClickException(f"{exc}; stopping the service") from None
    finally:
        click.echo("stopping ...")
        supervisor.stop()
        click.echo("stopped")
