"""Folders that ship beside the package: the browser client and the benchmark scripts.

They are found in the source tree (a clone or an editable install) or where ``pip install``
put them (``<prefix>/share/fedlearn/<name>``, see ``[tool.setuptools.data-files]`` in
pyproject.toml), so a wheel works as well as a checkout.
"""

from __future__ import annotations

import sys
from pathlib import Path


def shipped_folder(name: str, marker: str) -> Path | None:
    """The folder ``name`` holding the file ``marker`` (a relative path), or None."""
    candidates = (
        Path(__file__).resolve().parents[1] / name,
        Path(sys.prefix) / "share" / "fedlearn" / name,
    )
    for folder in candidates:
        if (folder / marker).is_file():
            return folder
    return None
