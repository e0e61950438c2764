"""Running fedlearn on one machine: an embedded redis-server, a local Redis Cluster, the
supervisor of ``fedlearn up``, the demo, the runtime file."""

from fedlearn.devtools.embedded import EmbeddedRedis, find_binary, free_port

__all__ = ["EmbeddedRedis", "find_binary", "free_port"]
