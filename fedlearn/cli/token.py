"""``fedlearn token USER`` / ``fedlearn token --admin``: issue a bearer token for the API.

The token is signed with the same key the API checks (``FEDLEARN_SECRET_KEY``, else
``<data_dir>/secret_key`` written by ``fedlearn up``); it is printed alone on stdout so that
``TOKEN=$(fedlearn token 42)`` works, or as JSON with ``--json``.
"""

from __future__ import annotations

import datetime as dt

import click
import orjson

from fedlearn.config import ConfigError, load_settings


@click.command("token")
@click.argument("user", required=False)
@click.option("--admin", is_flag=True, help="An admin token (may act on every user).")
@click.option(
    "--ttl",
    "ttl_s",
    type=click.IntRange(min=1),
    default=None,
    help="Lifetime in seconds [default: FEDLEARN_USER_TOKEN_TTL_S or _ADMIN_TOKEN_TTL_S].",
)
@click.option("--json", "as_json", is_flag=True, help="Print {token, expires_at, sub, role}.")
def token(user: str | None, admin: bool, ttl_s: int | None, as_json: bool) -> None:
    """Issue a bearer token for USER, or an admin token with --admin."""
    from fedlearn.api.auth import issue_token  # keeps `fedlearn --help` free of Flask

    if admin == (user is not None):
        raise click.UsageError("give a USER, or --admin for an admin token (not both)")
    try:
        settings = load_settings()
        issued = issue_token(settings, user=user, admin=admin, ttl_s=ttl_s)
    except (ConfigError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(orjson.dumps({
            "token": issued.token, "expires_at": issued.expires_at,
            "sub": issued.sub, "role": issued.role,
        }).decode())  # fmt: skip
        return
    click.echo(issued.token)
    expires = dt.datetime.fromtimestamp(issued.expires_at, dt.UTC).isoformat(timespec="seconds")
    click.echo(f"{issued.role} token for {issued.sub!r}, expires {expires}", err=True)
