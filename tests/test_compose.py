"""docker-compose.yml and the Dockerfile, checked without Docker: every service runs a real
entry point of ours with options that parse, and sets only environment variables we read.

A compose file is code nobody runs in CI here (no Docker daemon), so it rots silently: a
renamed option or setting would only fail on an operator's machine. These checks parse the
same commands with the same parsers (click for ``fedlearn``, Celery's own CLI for ``celery``)
and the environment with the same ``Settings``.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from compose_spec import PyCompose

from fedlearn.cli import COMMANDS
from fedlearn.config import ENV_PREFIX, Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
OURS = {name: s for name, s in SERVICES.items() if s.get("image") == "fedlearn:local"}
FEDLEARN = sorted(n for n, s in OURS.items() if s["command"][0] == "fedlearn")
CELERY = sorted(n for n, s in OURS.items() if s["command"][0] == "celery")
CELERY_APP = "fedlearn.jobs.app"
# Variables read by the libraries we run, as their documentation names them.
LIBRARY_VARIABLES = {
    "CELERY_BROKER_URL",  # Celery: overrides broker_url (celery.app.utils.Settings)
    "CELERY_RESULT_BACKEND",  # Celery: overrides result_backend
    "PROMETHEUS_MULTIPROC_DIR",  # prometheus_client: multiprocess mode
}
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def settings_variables() -> set[str]:
    names = {"REDIS_URL", "FEDLEARN_REDIS_URL"}
    return names | {f"{ENV_PREFIX}{field.upper()}" for field in Settings.model_fields}


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` as it comes out with nothing set; ``${VAR:?error}``
    (a required variable) as an operator would set it."""

    def one(match: re.Match[str]) -> str:
        kind, text = match.group(2), match.group(3) or ""
        return "x" * 32 if kind == "?" else text

    return _INTERPOLATION.sub(one, value)


def test_the_expected_services_exist() -> None:
    assert "redis" in SERVICES and {"api", "worker", "celery-worker", "celery-beat"} == OURS.keys()
    assert (FEDLEARN, CELERY) == (["api", "worker"], ["celery-beat", "celery-worker"])
    cluster = {name for name, s in SERVICES.items() if "cluster" in s.get("profiles", [])}
    assert cluster == {"redis-node-1", "redis-node-2", "redis-node-3", "cluster-create"}
    for node in ("redis-node-1", "redis-node-2", "redis-node-3"):
        command = SERVICES[node]["command"]
        assert command[command.index("--cluster-enabled") + 1] == "yes"
        assert command[command.index("--cluster-announce-hostname") + 1] == node
    create = SERVICES["cluster-create"]
    assert set(create["depends_on"]) == {"redis-node-1", "redis-node-2", "redis-node-3"}
    assert "--cluster create" in create["command"][0] and create["restart"] == "no"
    # The trainers scale with --scale: nothing may pin one container.
    assert "container_name" not in SERVICES["worker"] and "ports" not in SERVICES["worker"]
    for service in OURS.values():
        assert service["depends_on"]["cluster-create"]["required"] is False


@pytest.mark.parametrize("name", FEDLEARN)
def test_fedlearn_commands_parse(name: str) -> None:
    _, command, *args = SERVICES[name]["command"]
    assert command in COMMANDS, f"{name}: `fedlearn {command}` is not a fedlearn command"
    module, attribute = COMMANDS[command].split(":")
    cli: click.Command = getattr(importlib.import_module(module), attribute)
    with cli.make_context(f"fedlearn {command}", list(args)) as ctx:  # parses, never runs
        assert ctx.params


@pytest.mark.slow
@pytest.mark.parametrize("name", CELERY)
def test_celery_commands_parse(name: str, tmp_path: Path) -> None:
    """Celery's own CLI parses the options (``--help`` last: an unknown option fails first)."""
    _, app_flag, app, sub, *args = SERVICES[name]["command"]
    assert (app_flag, app, sub in ("worker", "beat")) == ("-A", CELERY_APP, True)
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", app, sub, *args, "--help"],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
        env={**os.environ, "FEDLEARN_DATA_DIR": str(tmp_path), "REDIS_URL": "redis://x:1/0"},
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, (
        f"{name}: `celery -A {app} {sub} {' '.join(args)}` does not parse:\n"
        f"{done.stderr[-1500:]}\n(for --metrics-port: fedlearn/jobs/app.py must call "
        f"fedlearn.telemetry.jobs.install(app))"
    )


@pytest.mark.parametrize("name", sorted(OURS))
def test_every_variable_set_is_one_we_read(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    environment = {k: interpolate(str(v)) for k, v in OURS[name]["environment"].items()}
    unknown = set(environment) - settings_variables() - LIBRARY_VARIABLES
    assert not unknown, f"{name} sets variables nothing reads: {sorted(unknown)}"
    for variable in list(os.environ):
        if variable.startswith(ENV_PREFIX) or variable == "REDIS_URL":
            monkeypatch.delenv(variable)
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    settings = load_settings()  # the values must parse as the service will parse them
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.secret_key is not None and str(settings.data_dir) == "/data"
    assert environment["CELERY_BROKER_URL"].startswith("redis://redis:")


def test_the_image_installs_the_package_and_runs_unprivileged() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r"^RUN pip install \.", dockerfile, re.M)
    assert re.search(r"^USER fedlearn$", dockerfile, re.M)
    for source in re.findall(r"^COPY (\S+)", dockerfile, re.M):
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which is missing"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "client_js/node_modules", ".fedlearn"} <= set(ignored)
    # What setuptools reads to build: without it `pip install .` fails in the image.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    copied = set(" ".join(re.findall(r"^COPY (.+) \S+$", dockerfile, re.M)).split())
    assert {project["readme"], *project["license-files"]} <= copied


def test_the_file_with_every_profile_follows_the_compose_specification() -> None:
    """What ``docker compose --profile monitoring --profile cluster config`` validates, without
    Docker: the Compose Specification's types and keys (YAML anchors and merges resolved
    first, as compose does), and that every ``depends_on`` names a service."""
    parsed = PyCompose.from_json(json.dumps(COMPOSE))
    assert sorted(parsed.service_names()) == sorted(SERVICES)
    assert {"monitoring", "cluster"} <= {
        p for s in SERVICES.values() for p in s.get("profiles", [])
    }
    for name, service in SERVICES.items():
        needs = service.get("depends_on", [])
        assert set(needs) <= SERVICES.keys(), (name, needs)


def test_a_misspelt_key_breaks_the_specification() -> None:
    broken = json.loads(json.dumps(COMPOSE))
    broken["services"]["grafana"]["restrat"] = "always"
    with pytest.raises(ValueError, match="restrat"):
        PyCompose.from_json(json.dumps(broken))
