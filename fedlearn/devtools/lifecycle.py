"""Things that are started and stopped (a redis-server, a cluster, a test HTTP server), usable
as context managers: ``with EmbeddedRedis(folder) as server: ...``."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Startable:
    """``start()`` returns the object itself; ``with`` starts it and stops it on the way out."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
