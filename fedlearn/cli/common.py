"""What every command shares: turning known errors into clean messages, not tracebacks."""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from fedlearn.config import ConfigError, Settings

if TYPE_CHECKING:
    from fedlearn.store import Store

F = TypeVar("F", bound=Callable[..., Any])


def service_store(settings: Settings, **options: Any) -> Store:
    """The running service's store (``settings.redis_url``, ``Store`` keywords in
    ``options``), checked against the deployment's recorded shard count: a command with another
    ``FEDLEARN_N_SHARDS`` would look for users in the wrong shards (``ShardCountError``)."""
    from fedlearn.devtools.runtime import require_redis_url
    from fedlearn.store import Store  # not at the top: see fail_with_config_errors

    store = Store.from_url(require_redis_url(settings), settings.n_shards, **options)
    try:
        store.claim_shard_count()
    except BaseException:
        store.close()
        raise
    return store


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


def number_text(numbers: Sequence[float]) -> str:
    """The inverse of :func:`number_list`, in the shortest spelling: ``(1e-05, 1.0)`` ->
    ``"1e-5,1"``, so an option's shown default reads as one would type it."""

    def short(number: float) -> str:
        plain = f"{number:g}"
        scientific = re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{number:.0e}").replace("e+", "e")
        if float(scientific) == number and len(scientific) < len(plain):
            return scientific
        return plain

    return ",".join(short(n) for n in numbers)


def default_of(config: type, name: str) -> Any:
    """The default of field ``name`` of the dataclass ``config``: options take their defaults
    from the config they fill, so each default is written once (slotted dataclasses have no
    class attribute to read it from)."""
    for item in dataclasses.fields(config):
        if item.name == name:
            if item.default is not dataclasses.MISSING:
                return item.default
            if item.default_factory is not dataclasses.MISSING:
                return item.default_factory()
            break
    raise TypeError(f"{config.__name__}.{name} has no default")


def positive_option(*decls: str, default: float, help: str | None = None) -> Callable[[F], F]:
    """A ``> 0`` number option that shows its default (steps, learning rates)."""
    return click.option(
        *decls,
        default=default,
        show_default=True,
        type=click.FloatRange(0, min_open=True),
        help=help,
    )


def fraction_option(
    *decls: str, default: float, help: str, min_open: bool = False, max_open: bool = False
) -> Callable[[F], F]:
    """A share of something, between 0 and 1, that shows its default."""
    return click.option(
        *decls,
        default=default,
        show_default=True,
        type=click.FloatRange(0.0, 1.0, min_open=min_open, max_open=max_open),
        help=help,
    )


def count_option(*decls: str, default: int, help: str | None = None) -> Callable[[F], F]:
    """A ``>= 1`` integer option that shows its default (sizes, counts)."""
    return click.option(
        *decls, default=default, show_default=True, type=click.IntRange(min=1), help=help
    )
