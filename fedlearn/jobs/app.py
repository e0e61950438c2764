"""The Celery app: aggregation rounds, monthly retraining and the dashboard's off-policy
estimate, on the service's own Redis.

Run it with ``celery -A fedlearn.jobs.app worker`` (and ``celery -A fedlearn.jobs.app beat``
for the schedule). It is configured from the same settings as the service
(``fedlearn.devtools.runtime.service_settings``: the environment, completed by the running
service's ``service.json``), read when Celery first needs its configuration, so importing this
module does not connect anywhere. Broker and result backend are the service's Redis.

Tasks are acknowledged late and re-queued when their worker dies (every task of a round is
safe to run twice); one task is prefetched at a time, so the shards of a round spread over the
workers instead of queueing behind one.

Time limits, consistent by construction: a round's task has a hard limit of
``aggregation_task_time_limit_s`` (its soft limit, 90 % of it, ends it with an error its round
records), the monthly retrain ``monthly_time_limit_s``; the broker's visibility timeout is
longer than the longest hard limit, so a task still running is never handed out a second
time. A task whose worker was SIGKILLed therefore waits that long to be redelivered, and
its round's lock would wait ``lock_ttl_s``: instead the ``heal`` task (on the beat schedule
every ``stale_s / 3`` s, and at every worker start) abandons a round whose heartbeat is
``stale_s`` old, releases its lock and retries it. (Time limits need the prefork pool, which
``fedlearn up`` runs; the solo pool does not enforce them.)
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Celery
from celery.schedules import crontab
from celery.signals import setup_logging

from fedlearn.aggregate.config import AggregationConfig, parse_crontab
from fedlearn.config import ConfigError, Settings
from fedlearn.devtools.runtime import require_redis_url, service_settings
from fedlearn.telemetry.jobs import install as install_metrics
from fedlearn.telemetry.logs import configure_logging

TASKS = ["fedlearn.jobs.tasks"]
# The task names, once: the tasks, the beat schedule, the API and the CLI send by these.
START_ROUND = "fedlearn.aggregate.start"
MAP_SHARD = "fedlearn.aggregate.map_shard"
REDUCE = "fedlearn.aggregate.reduce"
PROMOTE = "fedlearn.aggregate.promote"
ON_ERROR = "fedlearn.aggregate.on_error"
MONTHLY = "fedlearn.base.monthly"
HEAL = "fedlearn.aggregate.heal"
OPE_DASHBOARD = "fedlearn.ope.served_and_greedy"
VISIBILITY_MARGIN_S = 300  # the visibility timeout's lead over the longest hard time limit


def beat_schedule(config: AggregationConfig) -> dict[str, dict[str, Any]]:
    """Rounds every ``every_min`` minutes and the monthly retrain, each unless turned off;
    the watchdog of dead rounds always."""
    schedule: dict[str, dict[str, Any]] = {
        # finds rounds whose worker died, long before their lock or messages would expire
        "heal-rounds": {
            "task": HEAL,
            "schedule": timedelta(seconds=config.watch_s),
            "options": {"expires": config.watch_s},
        }
    }
    if config.every_min > 0:
        schedule["aggregation-round"] = {
            "task": START_ROUND,
            "schedule": timedelta(minutes=config.every_min),
            # a round not started within one period is superseded by the next one
            "options": {"expires": config.every_min * 60},
        }
    if config.monthly_crontab.strip():
        schedule["monthly-retrain"] = {
            "task": MONTHLY,
            "schedule": crontab(**parse_crontab(config.monthly_crontab)),
        }
    return schedule


def ope_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The dashboard's served-vs-greedy estimate every ``ope_dashboard_every_s`` (0: never)."""
    every = settings.ope_dashboard_every_s
    if every <= 0:
        return {}
    # a run not started within one period is superseded by the next one
    return {"ope-dashboard": {"task": OPE_DASHBOARD, "schedule": timedelta(seconds=every),
                              "options": {"expires": every}}}  # fmt: skip


def _soft(hard_s: int) -> int:
    return max(1, hard_s * 9 // 10)


def visibility_timeout(config: AggregationConfig) -> int:
    """The broker's visibility timeout: the longest hard time limit plus a margin."""
    return max(config.task_time_limit_s, config.monthly_time_limit_s) + VISIBILITY_MARGIN_S


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery's settings for ``settings``' Redis and aggregation config."""
    url = require_redis_url(settings)
    config = AggregationConfig.from_settings(settings)
    return {
        "broker_url": url,
        "result_backend": url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_time_limit": config.task_time_limit_s,
        "task_soft_time_limit": _soft(config.task_time_limit_s),
        "task_annotations": {
            MONTHLY: {
                "time_limit": config.monthly_time_limit_s,
                "soft_time_limit": _soft(config.monthly_time_limit_s),
            }
        },
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        # task events on, so Celery's own monitoring (Flower, `celery events`) sees every task
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "result_expires": 7 * 24 * 3600,
        "timezone": "UTC",
        "enable_utc": True,
        "broker_connection_retry_on_startup": True,
        # a failing map task calls the round's errback itself, not only through the chord
        "task_allow_error_cb_on_chord_header": True,
        # a task whose worker died unseen is handed out again after this long: longer than
        # any task may run (else a running task would run twice at once); rounds do not
        # wait for it, the heal task retries them
        "broker_transport_options": {"visibility_timeout": visibility_timeout(config)},
        "result_backend_transport_options": {"visibility_timeout": visibility_timeout(config)},
        "beat_schedule": {**beat_schedule(config), **ope_schedule(settings)},
        "fedlearn_settings": settings,
    }


def make_celery(settings: Settings | None = None) -> Celery:
    """A Celery app for ``settings`` (default: the service's), e.g. for the API to send tasks
    by name with ``app.send_task``."""
    app = Celery("fedlearn", include=TASKS, set_as_current=False)
    app.conf.update(celery_config(settings or service_settings()))
    return app


app = Celery("fedlearn", include=TASKS)
install_metrics(app)  # `celery worker --metrics-port`: Prometheus metrics of the rounds


@app.on_configure.connect
def _configure(sender: Celery, **_: Any) -> None:
    try:
        sender.conf.update(celery_config(service_settings()))
    except ConfigError as exc:
        # Celery logs and swallows an Exception raised by a signal handler, then falls back
        # to its default broker (amqp://localhost): stop the process with the reason instead.
        raise SystemExit(f"fedlearn: {exc}") from None


@setup_logging.connect
def _logging(**_: Any) -> None:
    """Celery's processes log in the service's format (FEDLEARN_LOG_FORMAT/_LEVEL) instead of
    Celery's own; a handler on this signal replaces Celery's logging setup."""
    try:
        settings = service_settings()
    except ConfigError as exc:
        raise SystemExit(f"fedlearn: {exc}") from None
    configure_logging(settings.log_format, settings.log_level)
