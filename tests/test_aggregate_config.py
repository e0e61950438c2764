"""The aggregation config: read from Settings (with defaults for settings not defined yet),
validated before any round starts, and turned into Celery's beat schedule."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from celery.schedules import crontab

from fedlearn.aggregate.config import AggregationConfig, parse_crontab
from fedlearn.aggregate.strategies import FedAvgM, TrimmedMean
from fedlearn.config import load_settings
from fedlearn.jobs.app import (
    HEAL,
    MONTHLY,
    OPE_DASHBOARD,
    START_ROUND,
    beat_schedule,
    celery_config,
)


def test_settings_fill_the_fields_they_have_and_defaults_the_rest() -> None:
    settings = SimpleNamespace(aggregation_strategy="fedavgm", aggregation_momentum=0.5,
                               aggregation_clip_norm=0.0)  # fmt: skip
    config = AggregationConfig.from_settings(settings, min_users=7)
    assert config.strategy == "fedavgm" and config.momentum == 0.5 and config.min_users == 7
    assert config.clip_norm is None  # 0 turns clipping off
    assert config.every_min == AggregationConfig().every_min
    strategy = config.make_strategy()
    assert isinstance(strategy, FedAvgM) and strategy.momentum == 0.5
    trimmed = AggregationConfig(strategy="trimmed_mean", trim_beta=0.3).make_strategy()
    assert isinstance(trimmed, TrimmedMean) and trimmed.beta == 0.3
    assert AggregationConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"strategy": "krum"}, "'krum'"),
        ({"min_users": 0}, "min_users must be an integer >= 1, got 0"),
        ({"buckets": 2.5}, "buckets"),
        ({"strategy": "trimmed_mean", "trim_beta": 0.7}, "got 0.7"),
        ({"monthly_crontab": "0 3 1 *"}, "5 fields"),
        ({"clip_norm": float("inf")}, "clip_norm must be finite"),
    ],
)
def test_bad_values_are_refused_with_the_field_and_value(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        AggregationConfig(**changes)  # type: ignore[arg-type]


def test_the_beat_schedule_follows_the_config() -> None:
    schedule = beat_schedule(AggregationConfig(every_min=15, monthly_crontab="30 2 1 * *"))
    assert schedule["aggregation-round"]["task"] == START_ROUND
    assert schedule["aggregation-round"]["schedule"] == timedelta(minutes=15)
    monthly = schedule["monthly-retrain"]
    assert monthly["task"] == MONTHLY
    assert monthly["schedule"] == crontab(minute="30", hour="2", day_of_month="1")
    # with rounds and retraining off, the watchdog of dead rounds still runs
    quiet = beat_schedule(AggregationConfig(every_min=0, monthly_crontab=" ", stale_s=12))
    assert list(quiet) == ["heal-rounds"] and quiet["heal-rounds"]["task"] == HEAL
    assert quiet["heal-rounds"]["schedule"] == timedelta(seconds=4)
    assert parse_crontab("0 3 1 * *")["day_of_month"] == "1"


def test_celery_uses_the_services_redis_for_broker_and_results(tmp_path: object) -> None:
    settings = load_settings(redis_url="redis://127.0.0.1:1/0", data_dir=str(tmp_path))
    config = celery_config(settings)
    assert config["broker_url"] == config["result_backend"] == "redis://127.0.0.1:1/0"
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["worker_prefetch_multiplier"] == 1
    assert "aggregation-round" in config["beat_schedule"]
    assert config["beat_schedule"]["ope-dashboard"]["task"] == OPE_DASHBOARD
    quiet = celery_config(settings.model_copy(update={"ope_dashboard_every_s": 0.0}))
    assert "ope-dashboard" not in quiet["beat_schedule"]


def test_time_limits_and_visibility_timeout_are_consistent(tmp_path: object) -> None:
    settings = load_settings(
        redis_url="redis://127.0.0.1:1/0", data_dir=str(tmp_path),
        aggregation_task_time_limit_s=120, monthly_time_limit_s=900,
    )  # fmt: skip
    config = celery_config(settings)
    assert config["task_soft_time_limit"] < config["task_time_limit"] == 120
    monthly = config["task_annotations"][MONTHLY]
    assert monthly["soft_time_limit"] < monthly["time_limit"] == 900
    # a task still running within its hard limit is never handed to a second worker
    for options in ("broker_transport_options", "result_backend_transport_options"):
        assert config[options]["visibility_timeout"] > 900
