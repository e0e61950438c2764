"""Open a Redis client from a URL: a single Redis or a Redis Cluster, decided by the server.

One ``redis://host:port`` URL is enough for both: we ask the node ``INFO cluster`` and, when it
says ``cluster_enabled:1``, return a ``RedisCluster`` that discovers the other nodes from it.
So moving from one Redis to a cluster changes no configuration but the address (no special
URL scheme to get wrong). ``cluster=True``/``False`` skips the question.

Clients return bytes (``decode_responses=False``: deltas and bases are binary), use hiredis
when it is installed (redis-py picks it by itself), check idle connections before use, and
retry connection errors and timeouts with jittered exponential backoff. Every write we send is
safe to resend (appends de-duplicate by event id, commits carry a token, publishing the same
base twice is a no-op) but one: XREADGROUP, which goes through ``without_retries``, on a single
Redis and on a cluster alike.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

Client = redis.Redis | RedisCluster

DEFAULT_SOCKET_TIMEOUT = 30.0  # seconds; blocking reads (XREADGROUP BLOCK) stay well below it


def _options(
    socket_timeout: float, health_check_interval: int, retries: int, client_name: str | None
) -> dict[str, Any]:
    options: dict[str, Any] = {
        "decode_responses": False,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": min(socket_timeout, 5.0),
        "socket_keepalive": True,
        "health_check_interval": health_check_interval,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=2.0), retries),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }
    if client_name is not None:
        options["client_name"] = client_name
    return options


def without_retries(client: Client) -> Client:
    """A client on the same server (or cluster) that never resends a command by itself, for the
    one command that is not safe to resend: XREADGROUP ``>`` moves the group past the entries it
    delivers, so after a lost reply a resend would strand them unseen in the consumer's pending
    list. The caller sees the error instead, and redoes its pending entries first (in order).

    A cluster client retries at the cluster level (its nodes' own clients never do): the copy
    gets a retry count of 0 there; redirections (MOVED, ASK) are followed as before."""
    if isinstance(client, RedisCluster):
        nodes = [ClusterNode(node.host, node.port) for node in client.get_nodes()]
        # The nodes' connection options, less what is the original client's own (its hook, its
        # maintenance handler) or refused by a cluster client's constructor (db).
        options = {
            key: value
            for key, value in client.nodes_manager.connection_kwargs.items()
            if key not in {"db", "redis_connect_func", "oss_cluster_maint_notifications_handler"}
        }
        return RedisCluster(startup_nodes=nodes, retry=Retry(NoBackoff(), 0), **options)
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
    return redis.Redis(connection_pool=redis.ConnectionPool(pool.connection_class, **kwargs))


def text(value: bytes | str) -> str:
    """A Redis reply as ``str``: our clients answer bytes (``decode_responses=False``)."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


def is_cluster(client: redis.Redis) -> bool:
    """Whether the server behind ``client`` runs in cluster mode (``INFO cluster``)."""
    try:
        info = client.info("cluster")
    except redis.ResponseError:  # INFO disabled (some managed services): not a cluster we can use
        return False
    return bool(int(info.get("cluster_enabled", 0)))


def connect(
    url: str,
    *,
    cluster: bool | None = None,
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
    health_check_interval: int = 30,
    retries: int = 5,
    client_name: str | None = None,
) -> Client:
    """A client for ``url`` (``redis://``, ``rediss://`` or ``unix://``).

    ``cluster=None`` asks the server whether it is a cluster node (one round-trip); ``True`` or
    ``False`` says so. Raises ``redis.ConnectionError`` (after the retries) when nobody answers.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"Redis URL must look like 'redis://host:port/0', got {url!r}")
    if socket_timeout <= 0:
        raise ValueError(f"socket_timeout must be > 0 seconds, got {socket_timeout!r}")
    if health_check_interval < 0:
        raise ValueError(f"health_check_interval must be >= 0, got {health_check_interval!r}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries!r}")
    options = _options(socket_timeout, health_check_interval, retries, client_name)
    if cluster is not True:
        single = redis.Redis.from_url(url, **options)
        if cluster is False:
            return single
        try:
            if not is_cluster(single):
                return single
        except BaseException:
            single.close()
            raise
        single.close()
    # RedisCluster has a single database; a '/0' in the URL is fine, other numbers are not.
    return RedisCluster.from_url(url, **options)
