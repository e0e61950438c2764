"""``fedlearn bench``: run the benchmark suite (``benchmarks/``) and print one table.

The suite lives in the source tree's ``benchmarks/`` folder, next to the scripts that print
each figure on its own; a wheel installs that folder too (``<prefix>/share/fedlearn``), so the
command runs from a checkout or an installed wheel. Everything runs on this machine, on
127.0.0.1: an embedded redis-server, our API and the bare ceiling under gunicorn, a trainer,
Celery workers, the load generator.
"""

from __future__ import annotations

import os

# One BLAS thread: the figures are per core (set before numpy is first imported).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import click  # noqa: E402

from fedlearn.resources import shipped_folder  # noqa: E402

SECTIONS = ("ceilings", "http", "trainer", "update", "round")  # benchmarks/suite.py's


def benchmarks_dir() -> Path:
    """The ``benchmarks/`` folder (checkout or wheel), put on ``sys.path`` (its modules import
    each other by name, as they do when run as scripts)."""
    folder = shipped_folder("benchmarks", "suite.py")
    if folder is None:
        raise click.ClickException(
            f"no benchmark suite in the source tree or in {sys.prefix}/share/fedlearn: "
            f"reinstall fedlearn (`pip install fedlearn[bench]`) or run from a checkout"
        )
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return folder


def _sizes_list(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        sizes = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"must be positive integers like 10000,50000, got {value!r}")
    return sizes


@click.command("bench")
@click.option(
    "--quick", is_flag=True, help="Tiny sizes: a smoke run of seconds (figures mean nothing)."
)
@click.option(
    "--only",
    multiple=True,
    type=click.Choice(SECTIONS),
    help="Run only these sections (repeatable).",
)
@click.option(
    "--seconds", type=click.FloatRange(0.5, 600), default=None, help="Each HTTP measurement [10]."
)
@click.option(
    "--connections", type=click.IntRange(1, 1000), default=None, help="Ingest connections [50]."
)
@click.option(
    "--trainer-events",
    type=click.IntRange(100, 10_000_000),
    default=None,
    help="Events the trainer drains [200000].",
)
@click.option(
    "--round-users",
    default=None,
    callback=_sizes_list,
    help="Users per aggregation round, comma-separated [10000,50000].",
)
@click.option(
    "--fresh-rate",
    type=click.FloatRange(1, 1e6),
    default=None,
    help="Events/s of load while probing freshness [5000].",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write every raw figure here.",
)
@click.option("--verbose", is_flag=True, help="Print progress.")
def bench(
    quick: bool,
    only: tuple[str, ...],
    seconds: float | None,
    connections: int | None,
    trainer_events: int | None,
    round_users: tuple[int, ...] | None,
    fresh_rate: float | None,
    json_path: Path | None,
    verbose: bool,
) -> None:
    """Measure ingest, model fetch, freshness, the trainer, the update, aggregation rounds and
    memory, beside the bare ceilings of this machine, and print one table."""
    benchmarks_dir()
    import dataclasses

    import orjson
    from report import machine_line, rows, table
    from suite import SECTIONS as SUITE_SECTIONS
    from suite import Sizes, Suite

    if SUITE_SECTIONS != SECTIONS:  # the options are declared before the suite is importable
        raise click.ClickException(f"benchmarks/suite.py has sections {SUITE_SECTIONS}")

    sizes = Sizes.quick() if quick else Sizes()
    overrides = {
        "seconds": seconds,
        "connections": connections,
        "trainer_events": trainer_events,
        "round_users": round_users,
        "fresh_rate": fresh_rate,
    }
    sizes = dataclasses.replace(sizes, **{k: v for k, v in overrides.items() if v is not None})
    say = (lambda msg: click.echo(msg, err=True)) if verbose else (lambda _msg: None)
    suite = Suite(sizes, only or SECTIONS, progress=say)
    with tempfile.TemporaryDirectory(prefix="fedlearn-bench-") as tmp:
        raw = suite.run(Path(tmp))
    if json_path is not None:
        tmp_json = json_path.with_name(f".{json_path.name}.tmp")
        tmp_json.write_bytes(
            orjson.dumps(
                {"raw": raw, "errors": suite.errors},
                option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY,
            )
        )
        os.replace(tmp_json, json_path)
    click.echo(table(rows(raw, suite.errors)))
    click.echo(machine_line(raw))
    if suite.errors:
        raise click.ClickException(f"section(s) failed: {', '.join(sorted(suite.errors))}")
