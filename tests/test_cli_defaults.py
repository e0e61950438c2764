"""The commands' option defaults are the configs' defaults (one home for each value)."""

from __future__ import annotations

import click

from fedlearn.cli.datasets import synthetic
from fedlearn.cli.replay import replay
from fedlearn.cli.train import train_base
from fedlearn.cli.worker import worker
from fedlearn.data.synthetic import SyntheticConfig
from fedlearn.evaluate.replay import ReplayConfig
from fedlearn.model import TrainConfig
from fedlearn.trainer.trainer import TrainerConfig


def _defaults(command: click.Command) -> dict[str, object]:
    return {p.name: p.default for p in command.params if p.name}


def test_replay_defaults() -> None:
    d, c = _defaults(replay), ReplayConfig()
    assert (d["split"], d["lr"], d["bias_lr"], d["l2"], d["agg_every"]) == (
        c.split, c.lr, c.bias_lr, c.l2, c.agg_every
    )  # fmt: skip
    assert (d["lr_multiples"], d["l2_grid"]) == ("1,2,4", "1e-5,1e-4,1e-3")
    assert (d["factors"], d["seed"]) == (c.train.n_factors, c.train.seed)


def test_train_base_and_synthetic_and_worker_defaults() -> None:
    d, c = _defaults(train_base), TrainConfig()
    assert (d["factors"], d["epochs"], d["batch_size"], d["lr"], d["valid_fraction"]) == (
        c.n_factors, c.epochs, c.batch_size, c.lr, c.valid_fraction
    )  # fmt: skip
    assert d["l2_grid"] == "1e-5,1e-4,1e-3"
    s = SyntheticConfig()
    d = _defaults(synthetic)
    assert (d["n_users"], d["n_items"], d["n_genres"]) == (s.n_users, s.n_items, s.n_genres)
    d, t = _defaults(worker), TrainerConfig()
    assert (d["name"], d["batch_size"]) == (t.name, t.batch_size)
