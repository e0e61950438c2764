"""``fedlearn ope EVENTLOG``: off-policy estimates of candidate policies on a logged event log.

The log must carry, with every event of a rank call, the shown item's slot, its propensity
and the call's candidates (docs/CONTRACTS.md, "Off-policy evaluation"); a log written before
those were logged is refused with the file and line. The candidate's model starts from
``--base`` (the base the log's traffic was served from) and learns the logged events as the
trainer does, one ``--block`` at a time.
"""

from __future__ import annotations

import click
import orjson

from fedlearn.cli.common import count_option
from fedlearn.data.errors import DataError
from fedlearn.evaluate.candidate import CandidateModel, service_settings
from fedlearn.evaluate.decisions import decisions_from_eventlog, served_and_greedy
from fedlearn.evaluate.offpolicy import evaluate_policies, policy_name
from fedlearn.model import Base
from fedlearn.model.errors import ModelFormatError, PolicyError
from fedlearn.model.policy import POLICY_KINDS, Policy


def parse_policy(text: str) -> Policy:
    """``greedy``, ``epsilon:<rate>`` or ``softmax:<temperature>`` as a :class:`Policy`."""
    kind, _, value = text.partition(":")
    if kind not in POLICY_KINDS or (kind == "greedy") != (value == ""):
        raise click.BadParameter(
            f"{text!r} is not a policy; write greedy, epsilon:<rate> or softmax:<temperature>"
        )
    if kind == "greedy":
        return Policy.greedy()
    try:
        number = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} in {text!r} is not a number") from None
    try:
        return Policy(kind, **{"epsilon" if kind == "epsilon" else "temperature": number})  # type: ignore[arg-type]
    except PolicyError as exc:
        raise click.BadParameter(str(exc)) from None


def _policies(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]):
    return tuple(parse_policy(v) for v in value) or (Policy.greedy(),)


def _served(eventlog: str, last: int | None, as_json: bool) -> None:
    """The served policy's own click rate and greedy's estimate on the log's top slots."""
    try:
        values = served_and_greedy(eventlog, last=last)
    except DataError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(orjson.dumps({k: v and v.to_dict() for k, v in values.items()}).decode())
        return
    for name, e in values.items():
        if e is None:
            click.echo(f"{name}: not estimable (the logged policy does not tell whether greedy "
                       "agreed; log the candidates to evaluate it)")  # fmt: skip
        else:
            click.echo(f"{name}: click rate {e.value:.4f} [{e.low:.4f}, {e.high:.4f}] over "
                       f"{e.n} events of {e.users} users")  # fmt: skip


@click.command()
@click.argument("eventlog", type=click.Path(file_okay=False, exists=True))
@click.option(
    "--base",
    "base_path",
    type=click.Path(dir_okay=False, exists=True),
    help="The base (.flfm) the log's traffic was served from (needed but with --served).",
)
@click.option(
    "--served",
    is_flag=True,
    help="Only the served policy's own click rate (no candidates or base needed).",
)
@click.option(
    "--policy",
    "policies",
    multiple=True,
    callback=_policies,
    help="A candidate policy (repeatable; default greedy): greedy, epsilon:<rate>, "
    "softmax:<temperature>.",
)
@count_option(
    "--block", default=100, help="Logged events the model learns at a time (the trainer's batch)."
)
@click.option("--last", type=click.IntRange(min=1), default=None,
              help="With --served: only the last N top-slot events (bounds the cost).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def ope(eventlog: str, base_path: str | None, served: bool, policies: tuple[Policy, ...],
        block: int, last: int | None, as_json: bool) -> None:  # fmt: skip
    """Estimate each policy's top-slot click rate on EVENTLOG (IPS, SNIPS, DR, 95 % CI)."""
    if served:
        _served(eventlog, last, as_json)
        return
    if base_path is None:
        raise click.UsageError("--base is required to evaluate policies (or pass --served)")
    try:
        base = Base.load(base_path)
    except (OSError, ModelFormatError) as exc:
        raise click.ClickException(f"cannot read the base {base_path}: {exc}") from None
    try:
        decisions, without_candidates = decisions_from_eventlog(eventlog)
    except DataError as exc:
        raise click.ClickException(str(exc)) from None
    model = CandidateModel(base, service_settings(base))
    values = evaluate_policies(decisions, model, policies, block=block)
    if as_json:
        out = {"decisions": len(decisions), "without_candidates": without_candidates,
               "policies": [v.to_dict() for v in values]}  # fmt: skip
        click.echo(orjson.dumps(out).decode())
        return
    click.echo(f"{len(decisions)} top-slot decisions of {eventlog}")
    if without_candidates:
        click.echo(f"({without_candidates} top-slot events without candidates skipped: ranked "
                   "in the browser or logged before candidates were)")  # fmt: skip
    click.echo(f"{'policy':<16} {'estimator':<9} {'click rate':>10} {'95 % interval':>20} "
               f"{'ESS':>8}")  # fmt: skip
    for value in values:
        for name, e in value.estimates.items():
            click.echo(f"{policy_name(value.policy):<16} {name:<9} {e.value:10.4f} "
                       f"{f'[{e.low:.4f}, {e.high:.4f}]':>20} {e.ess:8.0f}")  # fmt: skip
