"""Write a file or a folder so that readers see the old one or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from fedlearn.data.errors import DataError

# mkstemp/mkdtemp create private (0600/0700) entries; a dataset is meant to be shared.
_FILE_MODE = 0o644
_FOLDER_MODE = 0o755


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` in one step.

    The temp file lives in the same folder, so ``os.replace`` is a rename on one file system
    (atomic on POSIX). If the block raises, the temp file is removed and ``path`` is untouched.
    Text mode is UTF-8 with ``newline=""`` (what the csv module wants).
    """
    path = Path(path)
    kwargs = {"newline": "", "encoding": "utf-8"} if "b" not in mode else {}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | Path, *, is_ours: str) -> Iterator[Path]:
    """Build a folder in a temporary sibling and move it to ``path`` when the block succeeds.

    An existing ``path`` is replaced only if it is empty or holds the file ``is_ours`` (that is,
    it is one of our own outputs); any other folder is refused, so a mistyped ``--out`` cannot
    delete someone's data. Between the two renames a reader may briefly find no folder at all,
    but never a half-written one.
    """
    target = Path(path)
    if target.exists():
        if not target.is_dir():
            raise DataError(target, None, "exists and is not a folder; choose another --out")
        if any(target.iterdir()) and not (target / is_ours).exists():
            raise DataError(
                target,
                None,
                f"exists, is not empty and has no {is_ours}, so it is not ours to replace; "
                "choose another --out or remove it",
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        os.chmod(building, _FOLDER_MODE)
        yield building
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old."))
            os.replace(target, old / "dataset")
            os.replace(building, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(building, target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
