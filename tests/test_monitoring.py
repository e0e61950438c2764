"""The monitoring that ships (monitoring/): alert rules and the Prometheus config pass
``promtool``, every rule has a severity and a summary, the Grafana dashboard and the rules
only name metrics our processes export, and what the API and a trainer export passes
``promtool check metrics`` (Prometheus's naming conventions).

promtool comes from Debian's ``prometheus`` package (.ci/run installs it); its checks are
skipped, saying so, only where it is absent.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import urllib3
import yaml
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.registry import CollectorRegistry

from fedlearn.api import create_app, issue_token
from fedlearn.api.server import ThreadedServer
from fedlearn.config import load_settings
from fedlearn.model import Base
from fedlearn.store import Store
from fedlearn.telemetry import trainer as trainer_metrics

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "monitoring"
RULES = sorted((MONITORING / "rules").glob("*.yml"))
DASHBOARD = MONITORING / "grafana" / "dashboards" / "fedlearn.json"
SEVERITIES = {"page", "ticket"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "info": ("_info",)}
NAME = re.compile(r"\bfedlearn_[a-z_]+\b")

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is missing (apt-get install prometheus; .ci/run installs it)",
)


def promtool(*args: str, stdin: bytes | None = None) -> str:
    done = subprocess.run(
        ["promtool", *args], input=stdin, capture_output=True, timeout=60, check=False
    )
    out = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, out
    return out


def rules() -> list[dict]:
    return [
        rule
        for path in RULES
        for g in yaml.safe_load(path.read_text())["groups"]
        for rule in g["rules"]
    ]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name ``registry`` can export, labelled children or not."""
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(family.name + s for s in SUFFIXES.get(family.type, ()))
    return names


@pytest.fixture
def api_metrics(redis_url: str, tmp_path: Path) -> tuple[CollectorRegistry, bytes]:
    """The API's registry and its /metrics over HTTP, after a few requests and a base."""
    settings = load_settings(
        redis_url=redis_url, secret_key="k" * 32, n_shards=2, data_dir=tmp_path
    )
    base = Base.fresh(["user=a", "item=x"], 2, version="v1")
    with Store.from_url(redis_url, 2) as store:
        store.bases.put_base(base.version, base.to_bytes(), {"generation": 0})
        store.bases.set_current(base.version)
        app = create_app(settings, store)
        http = urllib3.PoolManager(retries=False, timeout=10)
        token = issue_token(settings, "a").token
        with ThreadedServer(app) as server:
            http.request(
                "GET",
                f"{server.url}/v1/users/a/model",
                headers={"Authorization": f"Bearer {token}"},
            )
            http.request("GET", f"{server.url}/no/such/path")
            body = http.request("GET", f"{server.url}/metrics").data
        return app.extensions["fedlearn"].metrics.registry, body


def trainer_exposition() -> bytes:
    """The trainer's metrics after one batch's worth of observations."""
    labels = np.array([1.0, 0.0, 1.0])
    trainer_metrics.observe_progressive(
        labels, np.array([0.7, 0.2, 0.6]), np.array([0.6, 0.3, 0.5]), np.array([0, 1, 9])
    )
    trainer_metrics.observe_freshness(np.array([1000.0, 2000.0]), 3000.0)
    trainer_metrics.BATCH_SECONDS.observe(0.01)
    trainer_metrics.flush()  # those two go to the metrics a few batches at a time
    return generate_latest(REGISTRY)


def test_every_rule_has_a_severity_and_a_summary() -> None:
    assert RULES, "no alert rules in monitoring/rules"
    for rule in rules():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert len(rule["annotations"]["summary"]) > 20, rule["alert"]


@needs_promtool
def test_promtool_accepts_the_rules_and_both_prometheus_configs() -> None:
    out = promtool("check", "rules", *map(str, RULES))
    assert f"SUCCESS: {len(rules())} rules found" in out
    for config in ("prometheus.yml", "prometheus-local.yml"):
        promtool("check", "config", "--syntax-only", str(MONITORING / config))


@needs_promtool
def test_what_the_api_and_a_trainer_export_passes_promtool_check_metrics(
    api_metrics: tuple[CollectorRegistry, bytes],
) -> None:
    _, body = api_metrics
    assert b"fedlearn_base_version_info" in body and b"fedlearn_http_requests_total" in body
    promtool("check", "metrics", stdin=body)
    promtool("check", "metrics", stdin=trainer_exposition())


def test_rules_and_dashboard_name_only_metrics_we_export(
    api_metrics: tuple[CollectorRegistry, bytes],
) -> None:
    registry, _ = api_metrics
    exported = exported_names(registry) | exported_names(REGISTRY)
    used = {
        name
        for text in [*dashboard_exprs(), *(r["expr"] for r in rules())]
        for name in NAME.findall(text)
    }
    assert len(used) > 15
    assert sorted(used - exported) == []


def test_the_dashboard_is_provisioned_from_its_folder() -> None:
    provider = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "dashboards" / "fedlearn.yml").read_text()
    )
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in compose["grafana"]["volumes"] if v.startswith("./"))
    assert mounts["./monitoring/grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "fedlearn" and len(dashboard["panels"]) >= 10
    for volume in compose["prometheus"]["volumes"] + compose["grafana"]["volumes"]:
        if volume.startswith("./"):
            assert (ROOT / volume.split(":")[0]).exists(), volume
    assert (
        {"monitoring"}
        == set(compose["prometheus"]["profiles"])
        == set(compose["grafana"]["profiles"])
    )


def test_prometheus_scrapes_the_ports_the_compose_services_serve_metrics_on() -> None:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for job in config["scrape_configs"]:
        sd = job["dns_sd_configs"][0]
        (service,) = sd["names"]
        command = compose[service]["command"]
        if "--metrics-port" in command:
            assert command[command.index("--metrics-port") + 1] == str(sd["port"]), service
            assert command[command.index("--metrics-host") + 1] == "0.0.0.0", service
        else:
            assert f"--port {sd['port']}" in " ".join(command) and "0.0.0.0" in command, service


def test_names_follow_the_conventions_promtool_does_not_check(
    api_metrics: tuple[CollectorRegistry, bytes],
) -> None:
    """Histogram suffixes only on histograms; an ``_info`` metric's value is 1 (what it tells
    is in its labels); a time is in ``_seconds``."""
    registry, _ = api_metrics
    trainer_exposition()
    for family in [*registry.collect(), *REGISTRY.collect()]:
        if not family.name.startswith("fedlearn_"):
            continue
        if family.type != "histogram":
            assert not family.name.endswith(("_sum", "_count", "_bucket")), family.name
        if family.name.endswith("_info"):
            assert family.samples and {s.value for s in family.samples} == {1.0}, family.name
        if "timestamp" in family.name:
            assert family.name.endswith("_timestamp_seconds"), family.name


def test_celery_workers_send_task_events_for_flower(redis_url: str, tmp_path: Path) -> None:
    """Celery's own monitoring (Flower, ``celery events``) sees tasks only when workers send
    task events and clients send ``task-sent``: both on, as the running app resolves them."""
    from fedlearn.jobs.app import make_celery

    conf = make_celery(load_settings(redis_url=redis_url, data_dir=tmp_path)).conf
    assert conf.worker_send_task_events is True and conf.task_send_sent_event is True
