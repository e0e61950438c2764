"""Starting the API: `python -m fedlearn.api.server` without REDIS_URL (it starts an embedded
Redis and stops it again), `gunicorn fedlearn.api.wsgi:app` against a given Redis, and the
settings and token command they rely on."""

from __future__ import annotations

import os
import signal
import stat
import sys
from pathlib import Path

import orjson
import pytest
import urllib3
from click.testing import CliRunner

from fedlearn.api import verify_token
from fedlearn.cli.token import token
from fedlearn.config import (
    ConfigError,
    Settings,
    ensure_secret_key,
    load_settings,
    read_secret_key,
    settings_env,
)
from fedlearn.devtools.embedded import free_port
from tests.live import start_server

HTTP = urllib3.PoolManager(retries=False, timeout=5.0)
SECRET = "server-test-secret-0123456789"


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any fedlearn or Redis setting, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FEDLEARN_") and k not in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")
    }
    env.update(extra)
    return env


def test_the_server_starts_an_embedded_redis_without_redis_url(tmp_path: Path):
    port = free_port()
    env = clean_env(
        FEDLEARN_DATA_DIR=str(tmp_path), FEDLEARN_API_PORT=str(port), FEDLEARN_AUTH="off",
        FEDLEARN_API_WORKERS="2",
    )  # fmt: skip
    log = tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    proc = start_server([sys.executable, "-m", "fedlearn.api.server"], env, log, url)
    try:
        ready = HTTP.request("GET", url + "/readyz")
        assert ready.status == 503  # Redis answers; no base is published yet
        assert "no base model" in ready.json()["detail"]
        assert (tmp_path / "redis" / "redis.log").is_file()
        assert (tmp_path / "metrics").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    assert "started embedded Redis" in log.read_text()


def test_gunicorn_serves_the_wsgi_module(tmp_path: Path, redis_url: str):
    port = free_port()
    env = clean_env(REDIS_URL=redis_url, FEDLEARN_SECRET_KEY=SECRET, FEDLEARN_N_SHARDS="4")
    log = tmp_path / "gunicorn.log"
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "gunicorn", "--workers", "1", "--bind", f"127.0.0.1:{port}",
            "fedlearn.api.wsgi:app"]  # fmt: skip
    proc = start_server(argv, env, log, url, cwd=tmp_path)
    try:
        assert HTTP.request("GET", url + "/v1/users/alice/model").status == 401
    finally:
        proc.terminate()
        proc.wait(30)


# --- settings -----------------------------------------------------------------------------


def test_bad_settings_name_the_variable_and_the_value(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FEDLEARN_N_SHARDS", "eight")
    monkeypatch.setenv("REDIS_URL", "http://localhost:6379")
    monkeypatch.setenv("FEDLEARN_CLONE_LR_MULTIPLE", "-1")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "FEDLEARN_N_SHARDS='eight'" in message and "valid integer" in message
    assert "REDIS_URL='http://localhost:6379': must start with redis://" in message
    assert "FEDLEARN_CLONE_LR_MULTIPLE='-1'" in message


def test_a_secret_is_never_shown_in_an_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FEDLEARN_PREVIOUS_SECRET_KEYS", "not-json-but-very-secret")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "FEDLEARN_PREVIOUS_SECRET_KEYS" in str(info.value)
    assert "very-secret" not in str(info.value)


def test_defaults_and_redis_url_aliases(monkeypatch: pytest.MonkeyPatch):
    for name in list(os.environ):
        if name.startswith("FEDLEARN_") or name == "REDIS_URL":
            monkeypatch.delenv(name)
    settings = load_settings()
    assert (settings.redis_url, settings.n_shards, settings.auth) == (None, 64, True)
    assert (settings.api_host, settings.api_port) == ("127.0.0.1", 8000)
    assert settings.max_events_per_request == 500 and settings.max_body_bytes == 1 << 20
    assert settings.stream_maxlen == 100_000
    monkeypatch.setenv("REDIS_URL", "redis://a:1/0")
    assert load_settings().redis_url == "redis://a:1/0"
    monkeypatch.setenv("FEDLEARN_REDIS_URL", "redis://b:2/0")
    assert load_settings().redis_url == "redis://b:2/0"
    monkeypatch.setenv("FEDLEARN_AUTH", "off")
    assert load_settings().auth is False


def test_settings_survive_the_trip_through_a_child_environment(monkeypatch: pytest.MonkeyPatch):
    settings = load_settings(
        redis_url="redis://h:1/0", secret_key=SECRET, previous_secret_keys=["old-" + SECRET],
        auth=False, n_shards=16, clone_bias_lr=0.3,
    )  # fmt: skip
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    assert load_settings() == settings


def test_the_secret_key_file_is_generated_once_private_and_read(tmp_path: Path):
    assert read_secret_key(tmp_path) is None
    with pytest.raises(ConfigError, match="FEDLEARN_SECRET_KEY is not set"):
        load_settings(data_dir=tmp_path).signing_keys()
    key = ensure_secret_key(tmp_path)
    assert len(key) >= 32 and ensure_secret_key(tmp_path) == key
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600
    assert load_settings(data_dir=tmp_path).signing_keys() == [key]
    assert list(tmp_path.iterdir()) == [tmp_path / "secret_key"]  # no temp file left
    with pytest.raises(ConfigError, match="at least 16"):
        load_settings(data_dir=tmp_path, secret_key="short").signing_keys()


def test_clone_hyper_scales_the_bases_training_rate():
    settings = load_settings(clone_lr_multiple=3.0, clone_l2=0.01, clone_bias_lr=None)
    assert settings.clone_hyper({"lr": 0.02}) == {
        "lr": pytest.approx(0.06), "l2": 0.01, "bias_lr": pytest.approx(0.06), "max_rows": 4096,
    }  # fmt: skip
    assert settings.clone_hyper({})["lr"] == pytest.approx(0.15)  # a base without an lr
    fixed = load_settings(clone_bias_lr=0.5).clone_hyper({"lr": 0.1})
    assert fixed["bias_lr"] == 0.5


# --- `fedlearn token` ---------------------------------------------------------------------


def test_the_token_command_prints_a_token_the_api_accepts(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FEDLEARN_SECRET_KEY", SECRET)
    settings: Settings = load_settings()
    runner = CliRunner()
    result = runner.invoke(token, ["alice", "--ttl", "60"])
    assert result.exit_code == 0, result.output
    printed = result.stdout.strip()
    assert verify_token(settings, printed).sub == "alice"
    admin = runner.invoke(token, ["--admin", "--json"])
    assert admin.exit_code == 0
    assert verify_token(settings, orjson.loads(admin.stdout)["token"]).is_admin


def test_the_token_command_explains_what_is_wrong(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.delenv("FEDLEARN_SECRET_KEY", raising=False)
    monkeypatch.setenv("FEDLEARN_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    both = runner.invoke(token, ["alice", "--admin"])
    assert both.exit_code == 2 and "not both" in both.output
    no_key = runner.invoke(token, ["alice"])
    assert no_key.exit_code == 1 and "FEDLEARN_SECRET_KEY is not set" in no_key.output
