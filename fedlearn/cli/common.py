"""What every command shares: turning known errors into clean messages, not tracebacks."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click
import redis

from fedlearn.config import ConfigError
from fedlearn.store import StoreError

F = TypeVar("F", bound=Callable[..., Any])


def fail_with_config_errors(func: F) -> F:
    """Report configuration, store and connection errors as one line and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ConfigError, StoreError) as exc:
            raise click.ClickException(str(exc)) from None
        except redis.ConnectionError as exc:
            raise click.ClickException(
                f"cannot reach Redis: {exc}; is the service running (`fedlearn up`)?"
            ) from None

    return wrapper  # type: ignore[return-value]
