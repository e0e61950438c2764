"""The ``fedlearn`` command line: one module per command (group), loaded on first use."""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute". Commands are imported only when run, so `fedlearn --help`
# and a quick `fedlearn token` do not pay for Flask, Celery or River.
COMMANDS: dict[str, str] = {
    "datasets": "fedlearn.cli.datasets:datasets",
    "train-base": "fedlearn.cli.train:train_base",
    "replay": "fedlearn.cli.replay:replay",
    "ope": "fedlearn.cli.ope:ope",
    "reproduce": "fedlearn.cli.production:reproduce",
    "vectors": "fedlearn.cli.vectors:vectors",
    "worker": "fedlearn.cli.worker:worker",
    "up": "fedlearn.cli.up:up",
    "api": "fedlearn.cli.api:api",
    "token": "fedlearn.cli.token:token",
    "aggregate": "fedlearn.cli.aggregate:aggregate",
    "base": "fedlearn.cli.base:base",
    "catalog": "fedlearn.cli.catalog:catalog",
    "bench": "fedlearn.cli.bench:bench",
    "dead-letters": "fedlearn.cli.deadletters:dead_letters",
    "settings": "fedlearn.cli.settings:settings",
}


class LazyGroup(click.Group):
    """A click group whose subcommands live in their own modules."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fedlearn")
def main() -> None:
    """fedlearn: federated per-user personalization with factorization machines."""
