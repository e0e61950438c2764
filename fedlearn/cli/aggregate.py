"""``fedlearn aggregate``: run an aggregation round now, and wait for its result.

The round runs on the Celery workers (``celery -A fedlearn.jobs.app worker``), like the
scheduled ones; ``--inline`` runs it in this process instead (one machine, no workers).
"""

from __future__ import annotations

import time
from typing import Any

import click
import orjson

from fedlearn.aggregate.round import TERMINAL, RoundStatus
from fedlearn.cli.common import fail_with_config_errors, service_store


def _rejected(result: dict[str, Any]) -> str:
    counts = (result.get("rejected") or {}).get("counts") or {}
    if not counts:
        return ""
    return "; rejected: " + ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))


def describe(record: dict[str, Any]) -> str:
    """One round's outcome in a sentence or two."""
    status, result = record["status"], record.get("result") or {}
    head = f"round {record['id']}: {status}"
    if status in (RoundStatus.PUBLISHED, RoundStatus.DONE):
        strategy = result.get("strategy", {})
        clip = result.get("clip_norm")
        clip_text = (
            f"clip {clip} ({result.get('clipped_users', 0)} users clipped)"
            if clip
            else ("no clipping")
        )
        noise = result.get("noise_multiplier") or 0
        return (
            f"{head}: base {result.get('version')} published on {result.get('parent')} from "
            f"{result.get('users', 0):,} users and {result.get('events', 0):,} events; "
            f"{strategy.get('name')}, {clip_text}, noise multiplier {noise}; "
            f"{result.get('rows_updated', 0):,} rows updated ({result.get('new_rows', 0):,} new)"
            f"{_rejected(result)}"
        )
    if status == RoundStatus.SKIPPED:
        return f"{head}: {result.get('reason', '')}"
    if record.get("error"):
        return f"{head}: {record['error']}"
    return head


@click.command()
@click.option("--no-wait", is_flag=True, help="Print the round id and return at once.")
@click.option(
    "--timeout", type=click.FloatRange(min=1), default=600.0, show_default=True,
    help="Seconds to wait for the round to end.",
)  # fmt: skip
@click.option("--inline", is_flag=True, help="Run the round in this process, without workers.")
@click.option("--strategy", default=None, help="Override the strategy of this round.")
@click.option("--min-users", type=click.IntRange(min=1), default=None, help="Override min users.")
@click.option("--json", "as_json", is_flag=True, help="Print the round's record as JSON.")
@fail_with_config_errors
def aggregate(
    no_wait: bool,
    timeout: float,
    inline: bool,
    strategy: str | None,
    min_users: int | None,
    as_json: bool,
) -> None:
    """Run an aggregation round now: fold users' changes into a new base version."""
    from fedlearn.aggregate.config import AggregationConfig
    from fedlearn.aggregate.run import create_round, rounds_of, run_round_inline
    from fedlearn.devtools.runtime import service_settings

    settings = service_settings()
    overrides: dict[str, Any] = {}
    if strategy is not None:
        overrides["strategy"] = strategy
    if min_users is not None:
        overrides["min_users"] = min_users
    try:
        config = AggregationConfig.from_settings(settings, **overrides)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    store = service_store(settings)
    rounds = rounds_of(store)
    if inline:
        from fedlearn.aggregate.retention import prune_bases

        record = run_round_inline(store, config, trigger="cli")
        if record["status"] == RoundStatus.DONE:  # as the Celery promotion does
            prune_bases(store, rounds, settings.base_keep_versions)
    else:
        holder = rounds.lock_holder()
        if holder is not None:
            raise click.ClickException(
                f"round {holder} is running (one round runs at a time); wait for it, or follow "
                f"it with GET /v1/aggregations/{holder}"
            )
        from fedlearn.jobs.app import START_ROUND, make_celery

        round_id = create_round(rounds, config, trigger="cli")
        make_celery(settings).send_task(START_ROUND, args=[round_id])
        if no_wait:
            click.echo(round_id)
            return
        record = _wait(rounds, round_id, timeout)
    click.echo(
        orjson.dumps(record, option=orjson.OPT_INDENT_2).decode() if as_json else describe(record)
    )
    if record["status"] in (RoundStatus.FAILED, RoundStatus.REJECTED, RoundStatus.ABANDONED):
        raise SystemExit(1)


def _wait(rounds: Any, round_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        record = rounds.get(round_id)
        if record["status"] in TERMINAL:
            return record
        if time.monotonic() > deadline:
            hint = (
                "no Celery worker took it: start one with `celery -A fedlearn.jobs.app worker`"
                if record["status"] == RoundStatus.QUEUED
                else "it is still working"
            )
            raise click.ClickException(
                f"round {round_id} is still {record['status']} after {timeout:g} s ({hint}); "
                f"follow it with GET /v1/aggregations/{round_id}"
            )
        time.sleep(0.25)
