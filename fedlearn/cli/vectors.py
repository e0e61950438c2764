"""``fedlearn vectors``: write the shared Python/JavaScript parity vectors."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from fedlearn.model.policy_vectors import make_policy_vectors
from fedlearn.model.vectors import make_vectors

POLICY_FILE = "policy_vectors.json"  # written next to --out


@click.command()
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("client_js/test/vectors.json"),
    show_default=True,
    help="Where to write the vectors.",
)
@click.option("--seed", type=int, default=0, show_default=True)
def vectors(out: Path, seed: int) -> None:
    """Write test vectors (bases, scores, updates) that client_js must reproduce to 1e-6, and
    the exploration policies' vectors (slot probabilities, seeded draws) beside them."""
    data = make_vectors(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    click.echo(f"wrote {len(data['cases'])} cases to {out}")
    policies = make_policy_vectors(seed)
    out.with_name(POLICY_FILE).write_bytes(
        orjson.dumps(policies, option=orjson.OPT_INDENT_2) + b"\n"
    )
    click.echo(
        f"wrote {len(policies['cases'])} policy cases and {len(policies['draws'])} draws to "
        f"{out.with_name(POLICY_FILE)}"
    )
