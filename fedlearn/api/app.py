"""The Flask app factory: settings and store in, a WSGI app with every route out.

``create_app(settings, store)`` keeps both on the app (``app.extensions["fedlearn"]``) and
nowhere else, so tests build apps against their own Redis and several apps can live in one
process. Without a store it connects to ``settings.redis_url``; the embedded Redis is started
by whoever runs the server (``fedlearn api``/``up``: see ``server.py``), once, before workers
fork, never by a worker importing the app.
"""

from __future__ import annotations

import logging

import redis
from flask import Flask, Response

from fedlearn.api import (
    errors,
    request_hooks,
    routes_admin,
    routes_aggregations,
    routes_baserows,
    routes_dashboard,
    routes_docs,
    routes_events,
    routes_models,
    routes_ops,
    routes_rank,
    web,
)
from fedlearn.api.context import EXTENSION, ApiContext, BlobCache
from fedlearn.api.errors import Unavailable
from fedlearn.config import ConfigError, Settings, load_settings
from fedlearn.serving.base_cache import BaseCache, NoBaseError
from fedlearn.serving.base_rows import served_buckets
from fedlearn.serving.prewarm import BaseWarmer
from fedlearn.store import ShardCountError, Store
from fedlearn.store.ratelimit import RateLimiter
from fedlearn.store.revocations import Revocations
from fedlearn.telemetry.api import Metrics
from fedlearn.telemetry.collector import StoreCollector

BLUEPRINTS = (
    routes_models,
    routes_baserows,
    routes_events,
    routes_rank,
    routes_admin,
    routes_aggregations,
    routes_dashboard,
    routes_ops,
)


def _store_for(settings: Settings) -> Store:
    if settings.redis_url is None:
        raise ConfigError(
            "REDIS_URL is not set: point it at a running Redis (redis://host:port/0), or start "
            "the API with `fedlearn api` / `fedlearn up`, which start an embedded Redis in "
            f"{settings.data_dir}"
        )
    return Store.from_url(
        settings.redis_url,
        settings.n_shards,
        stream_maxlen=settings.stream_maxlen,
        dedupe_window_s=settings.dedupe_window_s,
    )


def _claim_shard_count(store: Store) -> None:
    """Refuse to serve a Redis laid out for another shard count (``ConfigError``). A Redis
    that does not answer yet is no reason to fail the start: the trainers check it too."""
    try:
        store.claim_shard_count()
    except ShardCountError as exc:
        raise ConfigError(str(exc)) from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        logging.getLogger(__name__).warning("shard count not checked, Redis is down: %s", exc)


def _register_errors(app: Flask, retry_after_s: int) -> None:
    errors.register(app)

    @app.errorhandler(NoBaseError)
    def _no_base(exc: NoBaseError) -> Response:
        return errors.problem_response(Unavailable(str(exc)))

    @app.errorhandler(redis.ConnectionError)
    @app.errorhandler(redis.TimeoutError)
    def _redis_down(exc: redis.RedisError) -> Response:
        app.logger.warning("Redis unavailable: %s", exc)
        problem = Unavailable(
            "Redis does not answer; retry later",
            headers={"Retry-After": str(retry_after_s)},
        )
        return errors.problem_response(problem)


def start_base_warmer(app: Flask) -> BaseWarmer | None:
    """Start the thread that loads and indexes each new current base of ``app``'s process
    before a session asks (``serving/prewarm.py``); None when the setting turns it off. A
    gunicorn worker calls it after the fork: threads do not survive one."""
    ctx: ApiContext = app.extensions[EXTENSION]
    every_s = ctx.settings.base_prewarm_every_s
    if not every_s:
        return None
    settings = ctx.settings
    return BaseWarmer(
        ctx.bases, lambda base: served_buckets(base, settings), every_s=every_s
    ).start()


def create_app(settings: Settings | None = None, store: Store | None = None) -> Flask:
    """A fedlearn API app. ``settings`` default to :func:`load_settings` (the environment).

    Fails at once (``ConfigError``) when auth is on without a signing key, rather than on the
    first request.
    """
    settings = settings if settings is not None else load_settings()
    if settings.auth:
        settings.signing_keys()  # raises ConfigError naming FEDLEARN_SECRET_KEY
    store = store if store is not None else _store_for(settings)
    if store.n_shards != settings.n_shards:
        raise ConfigError(
            f"the store has {store.n_shards} shards but FEDLEARN_N_SHARDS={settings.n_shards}; "
            f"every process must agree on the number of shards"
        )
    _claim_shard_count(store)
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    metrics = Metrics(collectors=[StoreCollector(store.telemetry, ope=store.ope)])
    app.extensions[EXTENSION] = ApiContext(
        settings=settings,
        store=store,
        bases=BaseCache(store, keep=settings.base_cache_size),
        blobs=BlobCache(store, settings.base_cache_size),
        metrics=metrics,
        limits=RateLimiter(store.client, store.n_shards),
        revocations=Revocations(store.client, store.n_shards),
    )
    _register_errors(app, settings.retry_after_s)
    request_hooks.install(app, metrics, settings.cors_origins)
    for module in BLUEPRINTS:
        app.register_blueprint(module.bp)
    app.register_blueprint(web.bp)  # static files of the browser client: not in the OpenAPI
    app.register_blueprint(routes_dashboard.page)  # the dashboard page: static, not in it either
    app.register_blueprint(routes_docs.page)  # the API reference page, over /openapi.json
    return app
