"""Errors of the processes fedlearn starts itself on one machine (redis-server, a cluster)."""

from __future__ import annotations


class DevtoolsError(Exception):
    """Base of the errors raised by ``fedlearn.devtools``."""


class RedisNotFoundError(DevtoolsError):
    """No redis-server binary could be found to start an embedded Redis."""


class EmbeddedRedisError(DevtoolsError):
    """An embedded redis-server did not start, did not answer, or did not stop."""
