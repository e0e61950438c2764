"""Running fedlearn on one machine: an embedded redis-server, a local Redis Cluster, the
supervisor of ``fedlearn up``, the demo, the runtime file."""

from fedlearn.devtools.embedded import EmbeddedRedis, find_binary, free_port
from fedlearn.devtools.errors import DevtoolsError, EmbeddedRedisError, RedisNotFoundError

__all__ = [
    "DevtoolsError",
    "EmbeddedRedis",
    "EmbeddedRedisError",
    "RedisNotFoundError",
    "find_binary",
    "free_port",
]
