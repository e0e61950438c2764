"""Administration of the base: aggregation rounds (start one, follow it) and rollback.

``POST /v1/aggregations`` records a ``queued`` round and hands it to the Celery workers; the
answer (202) names the round, whose state and result ``GET /v1/aggregations/{round_id}``
tells. One round runs at a time: while one holds the lock, a new one is refused with 409 and
the running round's id. ``POST /v1/base/rollback`` points ``current`` at an earlier version
(versions are immutable; rollback is a pointer move).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote

from flask import Response, request, url_for
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from fedlearn.aggregate.round import RoundStatus, move
from fedlearn.aggregate.strategies import StrategyName
from fedlearn.api.context import api_context
from fedlearn.api.errors import Gone, NotFound, Problem, Unavailable, ValidationFailed
from fedlearn.api.parsing import read_json, validate
from fedlearn.api.routing import ApiBlueprint, Reply, json_response
from fedlearn.api.schemas import BaseVersion, _whole
from fedlearn.store import PrunedVersionError, UnknownVersionError

bp = ApiBlueprint("aggregations", __name__, tag="admin")

CELERY = "celery"  # key of the Celery app in the context's cache

RoundId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
# PositiveWhole with an upper bound (constraints before the validator, so the OpenAPI schema
# shows it): the round's record stores its config as JSON, whose integers are 64-bit.
RoundUsers = Annotated[int, Field(strict=True, ge=1, le=10**9), BeforeValidator(_whole)]


class AggregationRequest(BaseModel):
    """Optional overrides of the configured aggregation, for this round only."""

    model_config = ConfigDict(extra="forbid", strict=True)

    strategy: StrategyName | None = None
    min_users: RoundUsers | None = None


class AggregationStarted(BaseModel):
    id: str
    status: Literal["queued"]
    url: str = Field(description="GET it for the round's state and result")


class Aggregation(BaseModel):
    """A round's record: its state and, once it ended, its result."""

    model_config = ConfigDict(extra="allow")

    id: str
    status: RoundStatus
    created_at: float
    base: str | None = Field(default=None, description="the version the round started from")
    new_version: str | None = Field(default=None, description="the version it publishes")
    result: dict[str, Any] | None = Field(
        default=None, description="users, events, strategy, clipping, noise, metrics"
    )
    error: str | None = None


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    version: BaseVersion


class RollbackDone(BaseModel):
    version: str
    previous: str | None


def _rounds() -> Any:
    from fedlearn.aggregate.run import rounds_of

    return rounds_of(api_context().store)


def _store_url(client: Any) -> str:
    """The URL of the Redis ``client`` talks to (the store's), for an app built with a store
    but without ``redis_url`` in its settings. Broker and results live on that Redis."""
    if hasattr(client, "get_default_node"):  # RedisCluster: any node leads to the others
        node = client.get_default_node()
        kwargs, host, port = client.get_connection_kwargs(), node.host, node.port
    else:
        kwargs = client.connection_pool.connection_kwargs
        host, port = kwargs.get("host"), kwargs.get("port")
    user, password = kwargs.get("username") or "", kwargs.get("password")
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}@" if password else ""
    db = kwargs.get("db", 0)
    if kwargs.get("path"):
        return f"unix://{auth}{kwargs['path']}?db={db}"
    pool = getattr(client, "connection_pool", None)
    tls = pool is not None and "SSL" in getattr(pool, "connection_class", type).__name__
    scheme = "rediss" if tls or kwargs.get("ssl") else "redis"
    return f"{scheme}://{auth}{host}:{port}/{db}"


def _celery() -> Any:
    """This app's Celery client (sends tasks by name; built once per app)."""
    ctx = api_context()
    app = ctx.cache.get(CELERY)
    if app is None:
        from fedlearn.jobs.app import make_celery

        settings = ctx.settings
        if settings.redis_url is None:
            settings = settings.model_copy(update={"redis_url": _store_url(ctx.store.client)})
        app = ctx.cache[CELERY] = make_celery(settings)
    return app


@bp.operation(
    "POST",
    "/v1/aggregations",
    summary="Start an aggregation round",
    auth="admin",
    body=AggregationRequest,
    parse_body=False,
    replies={
        202: Reply(
            "queued; follow it at `url`",
            AggregationStarted,
            headers={"Location": "the round's URL"},
        )
    },
    errors=(409, 503),
)
def start_aggregation() -> Response:
    """The body is optional (``{}`` or none: the configured strategy and limits)."""
    from fedlearn.aggregate.config import AggregationConfig
    from fedlearn.aggregate.run import create_round

    raw = request.get_data(cache=True)
    body = validate(AggregationRequest, read_json(request)) if raw.strip() else AggregationRequest()
    ctx = api_context()
    rounds = _rounds()
    holder = rounds.lock_holder()
    if holder is not None:
        raise Problem(
            f"round {holder!r} is running and one round runs at a time; follow it at "
            f"/v1/aggregations/{holder} and start another after it ends",
            status=409, title="Conflict", kind="round-running", extra={"running": holder},
        )  # fmt: skip
    overrides = body.model_dump(exclude_none=True)
    try:
        config = AggregationConfig.from_settings(ctx.settings, **overrides)
    except ValueError as exc:
        raise ValidationFailed(
            str(exc), errors=[{"field": "(body)", "message": str(exc)}]
        ) from None
    round_id = create_round(rounds, config, trigger="api")
    from fedlearn.jobs.app import START_ROUND

    try:
        _celery().send_task(START_ROUND, args=[round_id])
    except Exception as exc:  # kombu's OperationalError and friends: the broker is down
        move(
            rounds,
            round_id,
            RoundStatus.FAILED,
            allowed=[RoundStatus.QUEUED],
            error=f"not sent: {exc}",
        )
        raise Unavailable(f"could not hand the round to the workers' broker: {exc}") from None
    url = url_for("aggregations.get_aggregation", round_id=round_id)
    response = json_response({"id": round_id, "status": RoundStatus.QUEUED, "url": url}, status=202)
    response.headers["Location"] = url
    return response


@bp.operation(
    "GET",
    "/v1/aggregations/<round_id>",
    summary="An aggregation round's state and result",
    auth="admin",
    replies={200: Reply("the round", Aggregation)},
    errors=(404, 503),
    path_params={"round_id": (RoundId, "an aggregation round id (from POST /v1/aggregations)")},
)
def get_aggregation(round_id: str) -> Response:
    record = _rounds().get(round_id)
    if record is None:
        raise NotFound(f"no aggregation round {round_id!r}; POST /v1/aggregations starts one")
    return json_response(record)


@bp.operation(
    "POST",
    "/v1/base/rollback",
    summary="Make an earlier base version current again",
    auth="admin",
    body=RollbackRequest,
    replies={200: Reply("the current version now, and the one it replaced", RollbackDone)},
    errors=(404, 410, 503),
)
def rollback_base(body: RollbackRequest) -> Response:
    """Versions are immutable: this moves the ``current`` pointer, nothing else. Clients
    pick the change up at their next ``GET /v1/base/current``."""
    ctx = api_context()
    try:
        previous = ctx.store.bases.rollback(body.version)
    except PrunedVersionError as exc:
        raise Gone(
            f"{exc}; `fedlearn base prune --dry-run` lists the kept versions and why"
        ) from None
    except UnknownVersionError:
        raise NotFound(
            f"base version {body.version!r} was never published; `fedlearn base list` shows "
            f"the published ones"
        ) from None
    return json_response({"version": body.version, "previous": previous})
