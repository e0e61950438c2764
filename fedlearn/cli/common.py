"""What every command shares: turning known errors into clean messages, not tracebacks."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar

import click

from fedlearn.config import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


def fail_with_config_errors(func: F) -> F:
    """Report configuration, store and connection errors as one line and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            # Imported here, not at the top: `fedlearn api` must set up Prometheus's
            # multiprocess folder before anything imports prometheus_client (the store does).
            import redis

            from fedlearn.devtools.errors import DevtoolsError
            from fedlearn.store import StoreError

            if isinstance(exc, ConfigError | StoreError | DevtoolsError):
                raise click.ClickException(str(exc)) from None
            if isinstance(exc, redis.ConnectionError):
                raise click.ClickException(
                    f"cannot reach Redis: {exc}; is the service running (`fedlearn up`)?"
                ) from None
            raise

    return wrapper  # type: ignore[return-value]


def number_list(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    """A click callback: ``"1e-5, 1e-4"`` -> ``(1e-05, 0.0001)``, finite numbers >= 0 only."""
    out = []
    for text in (t.strip() for t in value.split(",")):
        if not text:
            continue
        try:
            number = float(text)
        except ValueError:
            raise click.BadParameter(f"{text!r} is not a number (give e.g. 1,2,4)") from None
        if not math.isfinite(number) or number < 0:
            raise click.BadParameter(f"{text!r} must be a finite number >= 0")
        out.append(number)
    return tuple(out)
