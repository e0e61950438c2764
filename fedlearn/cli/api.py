"""``fedlearn api``: the HTTP API under gunicorn."""

from __future__ import annotations

import click

from fedlearn.cli.common import fail_with_config_errors
from fedlearn.config import setting_default
from fedlearn.devtools.runtime import service_settings


@click.command()
@click.option(
    "--host",
    default=None,
    help=f"Bind address (default FEDLEARN_API_HOST, {setting_default('api_host')}).",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None, help="Default FEDLEARN_API_PORT."
)
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="gunicorn workers.")
@fail_with_config_errors
def api(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the HTTP API (starts an embedded Redis when REDIS_URL is not set)."""
    from fedlearn.api.server import run_gunicorn

    run_gunicorn(service_settings(), host=host, port=port, workers=workers)
