"""The one exception tree of the data layer.

Every problem with a file we read carries the file and, when it is about one row, the line,
so a message reads like a compiler's: ``events.jsonl line 12: 'signal' must be ...``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class DataError(ValueError):
    """A data file (or folder) is missing or holds a row we cannot use.

    ``path`` is the file or folder, ``line`` the 1-based line number (``None`` when the
    problem is about the whole file), ``message`` what is wrong and, where we know, how to fix it.
    """

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path} line {self.line}"
        return f"{where}: {self.message}"

    def __reduce__(self) -> tuple[type[DataError], tuple[str, int | None, str]]:
        # Keep the three fields when the error crosses a process boundary (Celery, pickling).
        return (type(self), (self.path, self.line, self.message))


class MissingDataError(DataError):
    """A dataset folder or one of its required files does not exist."""


@dataclass
class BadRows:
    """What a reader skipped with ``skip_bad=True``: how many rows, and the first messages.

    Only the first ``keep`` messages are kept, so skipping a million rows costs no memory.
    """

    keep: int = 5
    count: int = 0
    messages: list[str] = field(default_factory=list)

    def add(self, error: DataError) -> None:
        self.count += 1
        if len(self.messages) < self.keep:
            self.messages.append(str(error))

    def summary(self) -> str:
        """One human sentence, e.g. for the end of a CLI run."""
        if not self.count:
            return "no bad rows"
        more = self.count - len(self.messages)
        lines = [f"skipped {self.count} bad row{'s' if self.count != 1 else ''}:"]
        lines += [f"  {m}" for m in self.messages]
        if more > 0:
            lines.append(f"  ... and {more} more")
        return "\n".join(lines)
