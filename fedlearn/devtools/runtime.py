"""``<data_dir>/service.json``: how commands run from the same folder find a running service.

``fedlearn up`` writes it (Redis URL, API URL, pid); ``fedlearn token``, ``worker``,
``aggregate`` and friends read it when ``REDIS_URL`` is not set, so they need no flags.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from fedlearn.config import ConfigError, Settings, load_settings

RUNTIME_FILE = "service.json"


def write_runtime(folder: Path, **fields: Any) -> Path:
    path = Path(folder) / RUNTIME_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(fields, option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)
    return path


def read_runtime(data_dir: Path) -> dict[str, Any] | None:
    try:
        return orjson.loads((Path(data_dir) / RUNTIME_FILE).read_bytes())
    except FileNotFoundError:
        return None


def clear_runtime(data_dir: Path) -> None:
    (Path(data_dir) / RUNTIME_FILE).unlink(missing_ok=True)


def service_settings(**overrides: Any) -> Settings:
    """Settings from the environment, completed by the running service's runtime file."""
    settings = load_settings(**overrides)
    if settings.redis_url is None:
        runtime = read_runtime(settings.data_dir)
        if runtime and runtime.get("redis_url"):
            settings = load_settings(**{**overrides, "redis_url": runtime["redis_url"]})
    return settings


def require_redis_url(settings: Settings) -> str:
    """The Redis URL, or an error that says how to get one."""
    if settings.redis_url is None:
        raise ConfigError(
            f"no Redis to talk to: REDIS_URL is not set and no service is running from "
            f"{settings.data_dir.resolve()} ({RUNTIME_FILE} not found); start one with "
            f"`fedlearn up` in this folder, or set REDIS_URL=redis://host:port/0"
        )
    return settings.redis_url
