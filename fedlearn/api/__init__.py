"""The HTTP API: a Flask app factory, its routes, auth, problem+json errors and OpenAPI.

Names are loaded on first use: ``python -m fedlearn.api.server`` imports this package before
its master sets ``PROMETHEUS_MULTIPROC_DIR``, and prometheus_client must not be loaded by then.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "create_app": "fedlearn.api.app",
    "IssuedToken": "fedlearn.api.auth",
    "Principal": "fedlearn.api.auth",
    "issue_token": "fedlearn.api.auth",
    "verify_token": "fedlearn.api.auth",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fedlearn.api' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
