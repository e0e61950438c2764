"""A round's heartbeat: while one of its tasks works, a thread renews the round's
``heartbeat_at`` (on Redis' clock) and its lock every ``config.heartbeat_s``. A round whose
heartbeat stops (its worker was killed, or hangs) is found by ``heal`` and retried."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from fedlearn.aggregate.config import AggregationConfig
from fedlearn.aggregate.round import TERMINAL
from fedlearn.store.rounds import Rounds

log = logging.getLogger(__name__)


@contextmanager
def beating(rounds: Rounds, round_id: str) -> Iterator[None]:
    """Keep ``round_id`` marked alive while the block runs (nothing for an ended round)."""
    record = rounds.get(round_id)
    if record is None or record["status"] in TERMINAL:
        yield
        return
    config = AggregationConfig.from_json(record["config"])
    ttl_ms = config.lock_ttl_s * 1000
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(config.heartbeat_s):
            try:
                rounds.heartbeat(round_id, ttl_ms)
            except Exception as exc:  # a missed beat is exactly what the watchdog measures
                log.warning("round %s: heartbeat not renewed: %s", round_id, exc)

    rounds.heartbeat(round_id, ttl_ms)
    thread = threading.Thread(target=beat, name=f"heartbeat-{round_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
