"""Shards that grow with the trainers: many virtual shards, moved between trainers by leases.

The shard count is fixed for a deployment (ARCHITECTURE.md, "Virtual shards"); what grows is
the number of trainers sharing them. While a client streams events through the real API
(gunicorn) into a real redis-server, trainers join (1 -> 3), one leaves cleanly (SIGTERM) and
one dies (SIGKILL, its leases left to lapse), so the shards change owners four times under
load. Every event accepted with a 202, before, during and after those moves, must be applied
exactly once (the users' stored ``events`` counts, and each event id once in the durable event
log) and, per user, in the order it was sent (the event log keeps each shard in apply order).

Also: a trainer owning many shards with a backlog in each keeps its leases (a pass over the
shards stops when the lease heartbeat is due instead of outlasting the leases).
"""

from __future__ import annotations

import logging
import signal
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedlearn.api import issue_token
from fedlearn.config import load_settings
from fedlearn.data.eventlog import read_log
from fedlearn.devtools import EmbeddedRedis
from fedlearn.devtools.embedded import free_port
from fedlearn.model import Base
from fedlearn.store import Store
from fedlearn.trainer.trainer import Trainer, TrainerConfig
from tests.live import Api, Producer, Service, applied_per_user, events_for, publish_base, wait_for
from tests.test_trainer import CLONE, append, make_events, publish, run_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

N_SHARDS = 64  # many virtual shards for three trainers: each move hands over a dozen or more
N_EVENTS = 6000
SEED = 18
SECRET = "shards-secret-key-0123456789abcdef"
BASE = Base.fresh([f"item={i}" for i in range(40)], 6, version="v1")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    with EmbeddedRedis(tmp_path / "redis", appendfsync="always") as server:
        settings = load_settings(
            redis_url=server.url, secret_key=SECRET, n_shards=N_SHARDS,
            data_dir=tmp_path / "data", api_port=free_port(), trainer_lease_ttl_ms=2000,
        )  # fmt: skip
        publish_base(server.url, N_SHARDS, BASE)
        (tmp_path / "logs").mkdir()
        running = Service(settings, tmp_path / "logs")
        try:
            yield running
        finally:
            running.stop_all()


def sent_order(events: list[dict]) -> dict[str, list[str]]:
    """Each user's event ids in the order the client sent them."""
    order: dict[str, list[str]] = defaultdict(list)
    for event in events:
        order[event["user"]].append(event["event_id"])
    return order


def test_events_stay_once_and_in_order_while_trainers_join_and_leave(service: Service) -> None:
    api = service.start_api()
    admin = Api(api.url, issue_token(service.settings, admin=True).token, timeout=5.0)
    users = [f"grow-u{i}" for i in range(150)]
    events = events_for(users, N_EVENTS, seed=SEED)
    service.start("t1", "worker", "--name", "t1", "--batch-size", "100")
    producer = Producer(admin, events, batch=50, pause_s=0.1)  # some 20 s of streaming
    producer.start()

    def streaming(what: str) -> None:
        assert producer.is_alive(), f"the producer finished before {what}: the moves came late"

    def after(share: float, what: str) -> None:
        wait_for(lambda: producer.sent >= share * N_EVENTS or not producer.is_alive(), 120,
                 f"{share:.0%} of the events to be accepted before {what}")  # fmt: skip
        streaming(what)

    def working(name: str) -> bool:
        return "acquired shard" in service.log(name)

    after(0.15, "two trainers join")
    service.start("t2", "worker", "--name", "t2", "--batch-size", "100")
    service.start("t3", "worker", "--name", "t3", "--batch-size", "100")
    wait_for(lambda: working("t2") and working("t3"), 60, "t2 and t3 to take shards of t1")
    streaming("t2 leaves")
    assert service.kill("t2", signal.SIGTERM) == 0, service.log("t2")
    after(min(0.9, producer.sent / N_EVENTS + 0.15), "t3 dies")
    service.kill("t3", signal.SIGKILL)
    producer.join(180)
    assert not producer.is_alive() and producer.error is None, producer.error

    expected = Counter(e["user"] for e in events)
    wait_for(lambda: applied_per_user(service.settings, users) == expected, 90,
             "every accepted event to be applied by the trainer left")  # fmt: skip
    assert service.kill("t1", signal.SIGTERM) == 0, service.log("t1")  # drains the event log
    prefix = f"ev-{SEED}-"
    logged: dict[str, list[str]] = defaultdict(list)
    for record in read_log(service.settings.data_dir / "eventlog"):
        if record["event_id"].startswith(prefix):
            logged[record["user"]].append(record["event_id"])
    counts = Counter(i for ids in logged.values() for i in ids)
    assert len(counts) == N_EVENTS and max(counts.values()) == 1, "lost or applied twice"
    assert dict(logged) == sent_order(events), "a user's events were applied out of order"


def test_a_trainer_with_a_backlog_in_many_shards_keeps_its_leases(
    store: Store, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """64 shards of about 1,000 events each: one pass of a batch per shard is some 64,000
    events, several seconds of work, while a lease lives 2 s (renewed every 0.67 s; one batch
    must stay below the rest, as ever). Before passes stopped at the heartbeat the trainer lost
    every lease mid-pass, again and again, and its commits were refused."""
    many = Store.from_url(redis_url, 64, stream_maxlen=10_000)
    publish(many, BASE)
    events = make_events(64_000, 1280, seed=3)
    append(many, events)
    trainer = Trainer(many, lambda _b: CLONE, TrainerConfig(batch_size=1000, lease_ttl_ms=2000))
    with caplog.at_level(logging.WARNING, logger="fedlearn.trainer"):
        run_until(trainer, lambda: trainer.applied_total >= len(events), timeout=240)
    lapsed = [r.getMessage() for r in caplog.records if "lease" in r.getMessage()]
    assert lapsed == [], lapsed[:5]
    assert trainer.applied_total == len(events)
    many.close()
