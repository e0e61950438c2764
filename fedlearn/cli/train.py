"""``fedlearn train-base DIR --out model.flfm``: batch-train a base on a dataset folder's events.

This is the monthly retrain (and how a first base is made). Options are checked before any
data is read; the model file is written in one step with what it was trained on (data range),
how (hyperparameters, the L2 grid) and how well (validation metrics) in its header.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from fedlearn.cli.common import (
    count_option,
    default_of,
    fraction_option,
    number_list,
    number_text,
    positive_option,
)
from fedlearn.cli.replay import ProgressBars
from fedlearn.data.errors import DataError
from fedlearn.evaluate.replay import ReplayConfig
from fedlearn.model import TrainConfig

# The grid the replay chooses its base's L2 from: train-base searches the same one.
DEFAULT_L2_GRID = number_text(default_of(ReplayConfig, "l2_grid"))
# The L2 of a base trained without a grid (and with no --l2): TrainConfig's.
NO_GRID_L2 = default_of(TrainConfig, "l2_w")


@click.command("train-base")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The model file to write (.flfm); replaced in one step if it exists.",
)
@count_option("--factors", default=default_of(TrainConfig, "n_factors"))
@count_option("--epochs", default=default_of(TrainConfig, "epochs"), help="At most.")
@count_option("--batch-size", default=default_of(TrainConfig, "batch_size"))
@positive_option("--lr", default=default_of(TrainConfig, "lr"), help="Adagrad step size.")
@click.option("--l2", type=click.FloatRange(0), help="Fixed L2 (skips the --l2-grid search).")
@click.option(
    "--l2-grid",
    default=DEFAULT_L2_GRID,
    show_default=True,
    callback=number_list,
    help="L2 values to choose from on the validation tail "
    f"('' for the default {number_text([NO_GRID_L2])}).",
)
@fraction_option(
    "--valid-fraction",
    default=default_of(TrainConfig, "valid_fraction"),
    max_open=True,
    help="Most recent share of the events held out to choose epochs and L2.",
)
@click.option("--seed", default=default_of(TrainConfig, "seed"), show_default=True, type=int)
@fraction_option(
    "--until-fraction",
    default=1.0,
    min_open=True,
    help="Train only on this first share of the log, by time (e.g. 0.5 before a replay).",
)
@click.option("--version", "version", help="Version id of the base [default: base-<UTC time>].")
def train_base(
    folder: Path,
    out: Path,
    factors: int,
    epochs: int,
    batch_size: int,
    lr: float,
    l2: float | None,
    l2_grid: tuple[float, ...],
    valid_fraction: float,
    seed: int,
    until_fraction: float,
    version: str | None,
) -> None:
    """Train a base model on the events of the dataset folder FOLDER and write it to --out."""
    from fedlearn.evaluate.replay import fit_base, load_log

    grid = () if l2 is not None else l2_grid
    if grid and valid_fraction == 0:
        raise click.UsageError(
            "--l2-grid needs a validation tail: give --valid-fraction > 0, or a fixed --l2"
        )
    if out.is_dir():
        raise click.UsageError(f"--out {out} is a folder; give a file name such as model.flfm")
    try:
        config = TrainConfig(
            n_factors=factors,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            l2_w=NO_GRID_L2 if l2 is None else l2,
            l2_v=NO_GRID_L2 if l2 is None else l2,
            seed=seed,
            valid_fraction=valid_fraction,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    version = version or "base-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")

    started = time.perf_counter()
    try:
        log = load_log(folder)
    except DataError as exc:
        raise click.ClickException(str(exc)) from None
    cut = max(1, int(len(log.events) * until_fraction))
    events, ts = log.events[:cut], log.ts[:cut]
    data = {
        "dataset": str(folder),
        "source": log.source,
        "events": len(events),
        "of_events": len(log.events),
        "until_fraction": until_fraction,
        "first_ts": float(ts[0]),
        "last_ts": float(ts[-1]),
        "users": len({u for u, _, _ in events}),
        "clicks": sum(y for _, _, y in events),
    }
    bars = ProgressBars()
    try:
        base, summary = fit_base(
            [(x, y) for _, x, y in events],
            config,
            grid,
            meta={"data": data, "trained_at": datetime.now(UTC).isoformat()},
            progress=bars,
        )
    finally:
        bars.close()
    metrics = {k: summary[k] for k in ("valid_log_loss", "valid_auc") if k in summary}
    base = base.with_version(
        version, metrics=metrics, l2_grid=summary.get("l2_grid", []), seconds=_since(started)
    )
    try:
        base.save(out)
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or out}: {exc.strerror or exc}") from None
    click.echo(_report(out, base.n_features, factors, data, summary, _since(started)))


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 2)


def _report(
    out: Path,
    n_features: int,
    factors: int,
    data: dict[str, Any],
    summary: dict[str, Any],
    seconds: float,
) -> str:
    first = datetime.fromtimestamp(data["first_ts"], UTC).date()
    last = datetime.fromtimestamp(data["last_ts"], UTC).date()
    grid = ", ".join(f"{t['l2']:g}" for t in summary.get("l2_grid", []))
    lines = [
        f"wrote {out}: {n_features:,} features x {factors} factors, trained on "
        f"{data['events']:,} events ({first} to {last}) in {seconds:.1f} s",
        f"  epochs {summary['epochs']}, L2 {summary['l2']:g}"
        + (f" (chosen from {grid} on the validation tail)" if grid else ""),
    ]
    if "valid_auc" in summary:
        lines.append(
            f"  validation tail: AUC {summary['valid_auc']:.4f}, "
            f"log loss {summary['valid_log_loss']:.4f}"
        )
    return "\n".join(lines)
