"""Replay reproduces production: a real trainer on a real redis-server writes the event log;
re-running it through the trainer's apply code, from the same bases and starting deltas,
gives the logged predictions to 1e-6. With other clone settings it does not (the check can
fail)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from fedlearn.cli.production import reproduce as reproduce_command
from fedlearn.data.eventlog import read_log
from fedlearn.evaluate.production import reproduce
from fedlearn.model import Base, Delta
from fedlearn.store import Store
from fedlearn.trainer.apply import CloneSettings
from fedlearn.trainer.eventlog import EventLogWriter
from fedlearn.trainer.trainer import Trainer, TrainerConfig
from tests.test_trainer import CLONE, append, make_events, publish, run_until, stored_deltas


def serve(store: Store, events: list[dict], log: Path, clone: CloneSettings = CLONE) -> None:
    """A trainer applies ``events`` and writes them to the event log in ``log``."""
    writer = EventLogWriter(store, log)
    trainer = Trainer(store, lambda _base: clone, TrainerConfig(batch_size=40), eventlog=writer)
    append(store, events)
    run_until(trainer, lambda: trainer.applied_total >= len(events))
    trainer.drain_eventlog()


@pytest.fixture
def production(store: Store, tmp_path: Path) -> tuple[Path, dict[str, Delta]]:
    """Users learn on a first base; then a second base is published and the log starts."""
    publish(store, Base.fresh([f"item={i}" for i in range(20)], 4, version="b1"))
    before = make_events(400, 25, seed=1)
    serve(store, before, tmp_path / "before")  # drained here: the production log starts after
    start = stored_deltas(store, {e["user"] for e in before})
    publish(store, Base.fresh([f"item={i}" for i in range(30)], 4, version="b2", init_seed=9))
    later = [{**e, "event_id": f"later-{e['event_id']}"} for e in make_events(500, 30, seed=2)]
    serve(store, later, tmp_path / "log")
    assert len(list(read_log(tmp_path / "log"))) == len(later)
    return tmp_path / "log", start


def base_of(store: Store):
    return lambda version: Base.from_bytes(store.bases.get_base(version))


def test_the_log_is_reproduced_to_1e_6(store: Store, production) -> None:
    log, start = production
    result = reproduce(log, base_of(store), CLONE, start=start)
    assert result.events == 500 and result.by_base == {"b2": 500}
    assert result.reproduced, result.to_json()
    assert result.max_abs_diff <= 1e-6


def test_other_settings_or_no_starting_deltas_do_not_reproduce_it(store: Store, production):
    log, start = production
    other = CloneSettings(lr=CLONE.lr * 2, l2=CLONE.l2, bias_lr=CLONE.bias_lr)
    assert not reproduce(log, base_of(store), other, start=start).reproduced
    assert not reproduce(log, base_of(store), CLONE).reproduced


def test_the_command_reproduces_a_service_run_with_the_settings(
    store: Store, redis_url: str, tmp_path: Path
) -> None:
    from fedlearn.config import load_settings

    env = {"REDIS_URL": redis_url, "FEDLEARN_N_SHARDS": str(store.n_shards),
           "FEDLEARN_DATA_DIR": str(tmp_path)}  # fmt: skip
    base = Base.fresh([f"item={i}" for i in range(20)], 4, version="b1")
    clone = CloneSettings(**load_settings(**{"n_shards": store.n_shards}).clone_hyper(base.hyper))
    publish(store, base)
    serve(store, make_events(200, 10, seed=3), tmp_path / "log", clone)
    result = CliRunner().invoke(reproduce_command, [str(tmp_path / "log")], env=env)
    assert result.exit_code == 0, result.output
    assert '"events": 200' in result.output and '"reproduced": true' in result.output
