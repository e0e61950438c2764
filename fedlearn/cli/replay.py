"""``fedlearn replay DIR``: progressive validation of the arms side by side on one event log.

The command parses and checks every option before it reads a byte, shows a progress bar per
stage on stderr, and prints a table (or ``--json`` for machines, ``--markdown`` for docs).
A data problem ends the command with the file, the line and what to do, never a traceback.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson

from fedlearn.cli.common import (
    count_option,
    fraction_option,
    number_list,
    number_text,
    positive_option,
)
from fedlearn.data.errors import DataError
from fedlearn.evaluate.arms import AGG_RULES
from fedlearn.evaluate.replay import ALL_ARMS, ReplayConfig, ReplayResult
from fedlearn.evaluate.river_arms import RiverMissingError
from fedlearn.model import TrainConfig

# The options' defaults are ReplayConfig's (the figures in BENCHMARKS.md use them).
_DEFAULTS = ReplayConfig()


def _names(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if not names:
        raise click.BadParameter(f"give at least one arm: {', '.join(ALL_ARMS)}")
    for name in names:
        if name not in ALL_ARMS:
            raise click.BadParameter(f"unknown arm {name!r}; choose from {', '.join(ALL_ARMS)}")
    return names


class ProgressBars:
    """One tqdm bar per stage on stderr; a new stage closes the previous bar.

    Called as the ``progress`` of :func:`fedlearn.evaluate.replay.replay` and ``fit_base``.
    """

    def __init__(self) -> None:
        self.stage: str | None = None
        self.bar: Any = None

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        from tqdm import tqdm

        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=stage, leave=False)
        self.bar.update(done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _cell(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


COLUMNS = (
    "arm",
    "AUC",
    "gAUC",
    "log loss",
    "AUC first {n}",
    "AUC later",
    "AUC late users",
    "gAUC late users",
    "gate regret",
    "worse than frozen",
    "worse than global",
    "delta bytes",
    "seconds",
)


def _rows(result: ReplayResult) -> list[list[str]]:
    return [
        [
            a.arm,
            _cell(a.auc),
            _cell(a.gauc),
            _cell(a.log_loss),
            _cell(a.auc_first),
            _cell(a.auc_later),
            _cell(a.auc_late_users),
            _cell(a.gauc_late_users),
            _cell(a.gate_regret_mean),
            _cell(a.worse_than_frozen, 2),
            _cell(a.worse_than_global, 2),
            _cell(a.delta_bytes_mean, 0),
            _cell(a.seconds, 1),
        ]
        for a in result.arms
    ]


DIFF_COLUMNS = ("arm", "against", "AUC", "gAUC", "log loss", "AUC first {n}")


def _diff_rows(result: ReplayResult) -> list[list[str]]:
    """One row per (reference arm, other arm): each metric's difference [95 % interval]."""
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for d in result.differences:
        cell = f"{d.diff:+.4f} [{d.low:+.4f}, {d.high:+.4f}]"
        cells.setdefault((d.arm, d.against), {})[d.metric] = cell
    metrics = ("auc", "gauc", "log_loss", "auc_first")
    return [[arm, other] + [c.get(m, "-") for m in metrics] for (arm, other), c in cells.items()]


def _aligned(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    rule = "  ".join("-" * w for w in widths)
    return [line(header), rule, *map(line, rows)]


def _markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


Render = Callable[[list[str], list[list[str]]], list[str]]


def _tables(result: ReplayResult, render: Render) -> str:
    n = result.config.first_n
    parts = [_summary(result), "", *render([c.format(n=n) for c in COLUMNS], _rows(result))]
    if result.differences:
        parts += ["", _DIFF_NOTE.format(b=result.config.bootstrap), ""]
        parts += render([c.format(n=n) for c in DIFF_COLUMNS], _diff_rows(result))
    return "\n".join([*parts, "", format_drift(result)])


_DIFF_NOTE = (
    "differences: arm minus against, [95 % paired bootstrap interval over users, {b} resamples]"
)


def format_table(result: ReplayResult) -> str:
    """The arms as an aligned text table, with a line about the split, then the differences."""
    return _tables(result, _aligned)


def format_markdown(result: ReplayResult) -> str:
    return _tables(result, _markdown)


def format_drift(result: ReplayResult) -> str:
    """The drift events the trainers' detectors would have raised, and when."""
    if not result.drift:
        return "drift: the trainers' detectors would have raised no drift event"
    lines = [f"drift: {len(result.drift)} event(s) the trainers' detectors would have raised"]
    for d in result.drift:
        when = datetime.fromtimestamp(d["ts"], UTC).strftime("%Y-%m-%d %H:%M")
        lines.append(
            f"  live event {d['index']:,} ({when} UTC): {d['signal']} "
            f"{d['before']:.4f} -> {d['after']:.4f}"
        )
    return "\n".join(lines)


def _summary(result: ReplayResult) -> str:
    t = result.timings
    bases = ", ".join(f"{k} {v:.1f} s" for k, v in t.items())
    return (
        f"{result.dataset}: trained on {result.n_train:,} events, replayed {result.n_live:,} "
        f"live events of {result.live_users:,} users ({result.new_live_users:,} new); "
        f"{bases}\n'late users' first appear after the first {result.config.late_after_rounds} "
        f"rounds ({result.config.late_after_rounds * result.config.agg_every:,} live events); "
        f"'gate regret' is the mean over users of the served log loss minus the better of "
        f"clone and base; 'worse than' is the share of users with >= "
        f"{result.config.min_user_events} live events whose own log loss is worse"
        + (
            f"; a River per-user copy weighs {result.river_copy_bytes:,} bytes (pickled)"
            if result.river_copy_bytes
            else ""
        )
    )


def _write_plot(path: Path, result: ReplayResult) -> None:
    from fedlearn.evaluate.plot import progressive_auc_html

    title = f"Progressive AUC per arm: {result.dataset}, split {result.config.split:g}"
    caption = (
        f"Each point: the AUC of all live events predicted so far (test, then train), "
        f"{result.n_live:,} live events of {result.live_users:,} users."
    )
    try:
        path.write_text(progressive_auc_html(result.curves, title=title, caption=caption))
    except OSError as exc:
        raise click.ClickException(f"cannot write the plot to {path}: {exc.strerror}") from None


@click.command()
@click.argument("folder", type=click.Path(path_type=Path))
@fraction_option(
    "--split",
    default=_DEFAULTS.split,
    min_open=True,
    max_open=True,
    help="Fraction of the log (by time) that trains the bases; the rest is replayed live.",
)
@click.option(
    "--arms",
    default=",".join(_DEFAULTS.arms),
    show_default=True,
    callback=_names,
    help=f"Comma-separated arms, from: {', '.join(ALL_ARMS)}.",
)
@click.option(
    "--lr-multiple",
    "lr_multiples",
    default=number_text(_DEFAULTS.lr_multiples),
    show_default=True,
    callback=number_list,
    help="Clone learning rates as multiples of --lr; one clones arm per multiple.",
)
@positive_option(
    "--lr", default=_DEFAULTS.lr, help="SGD step of the online arms' weights and latents."
)
@positive_option("--bias-lr", default=_DEFAULTS.bias_lr, help="Step of each user's own intercept.")
@click.option(
    "--l2",
    default=_DEFAULTS.l2,
    show_default=True,
    type=click.FloatRange(0),
    help="Pull of a user's delta toward the base.",
)
@click.option(
    "--shared-lr-scale",
    default=_DEFAULTS.shared_lr_scale,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True),
    help="Step of a clone's item and context rows as a multiple of its lr (user row: 1).",
)
@click.option(
    "--lr-half-life",
    default=_DEFAULTS.lr_half_life,
    type=click.FloatRange(0, min_open=True),
    help="A user's n-th event steps by h/(h+n) of the lr (default: no decay).",
)
@count_option(
    "--agg-every",
    default=_DEFAULTS.agg_every,
    help="Live events per aggregation round (clones-agg).",
)
@click.option(
    "--agg-rule", default=_DEFAULTS.agg_rule, show_default=True, type=click.Choice(AGG_RULES)
)
@count_option(
    "--first-n",
    default=_DEFAULTS.first_n,
    help="Report the AUC on each user's first N live events apart.",
)
@count_option("--factors", default=_DEFAULTS.train.n_factors)
@click.option(
    "--l2-grid",
    default=number_text(_DEFAULTS.l2_grid),
    show_default=True,
    callback=number_list,
    help="Choose the base's L2 from these on its validation tail, as train-base does "
    f"('' = {number_text([_DEFAULTS.train.l2_w])}).",
)
@positive_option(
    "--river-lr",
    default=_DEFAULTS.river_lr,
    help="SGD step of River's online arms (weights, latents and intercept).",
)
@click.option(
    "--bootstrap",
    default=_DEFAULTS.bootstrap,
    show_default=True,
    type=click.IntRange(0),
    help="User resamples for the differences' intervals (0: no differences).",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write progressive AUC over live time per arm to this self-contained HTML page.",
)
@click.option("--seed", default=_DEFAULTS.train.seed, show_default=True, type=int)
@click.option("--limit", type=click.IntRange(2), help="Replay only the first N events of the log.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (no progress).")
@click.option("--markdown", is_flag=True, help="Print the table as Markdown.")
def replay(
    folder: Path,
    split: float,
    arms: tuple[str, ...],
    lr_multiples: tuple[float, ...],
    lr: float,
    bias_lr: float,
    l2: float,
    shared_lr_scale: float,
    lr_half_life: float | None,
    agg_every: int,
    agg_rule: str,
    first_n: int,
    factors: int,
    l2_grid: tuple[float, ...],
    river_lr: float,
    bootstrap: int,
    plot: Path | None,
    seed: int,
    limit: int | None,
    as_json: bool,
    markdown: bool,
) -> None:
    """Replay the dataset folder FOLDER: train on its first part, score the arms on the rest.

    Every arm predicts each live event before learning from it (progressive validation).
    Reported per arm: ROC AUC, gAUC (per-user AUC, weighted by events), log loss, the AUC on
    each user's first --first-n live events and on the later ones, and the time it took.
    """
    from fedlearn.evaluate.replay import replay as run

    try:
        config = ReplayConfig(
            split=split,
            arms=arms,
            lr=lr,
            lr_multiples=lr_multiples,
            bias_lr=bias_lr,
            l2=l2,
            shared_lr_scale=shared_lr_scale,
            lr_half_life=lr_half_life,
            agg_every=agg_every,
            agg_rule=agg_rule,
            first_n=first_n,
            limit=limit,
            train=TrainConfig(n_factors=factors, seed=seed),
            l2_grid=l2_grid,
            river_lr=river_lr,
            bootstrap=bootstrap,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    bars = None if as_json else ProgressBars()
    try:
        result = run(folder, config, progress=bars)
    except DataError as exc:
        raise click.ClickException(str(exc)) from None
    except RiverMissingError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if bars:
            bars.close()
    if plot is not None:
        _write_plot(plot, result)
    if as_json:
        click.echo(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode())
    elif markdown:
        click.echo(format_markdown(result))
    else:
        click.echo(format_table(result))
