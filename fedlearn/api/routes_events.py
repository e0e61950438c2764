"""``POST /v1/events``: a batch of impressions and their outcome, into the shard streams.

Everything is checked before anything is written: the body's size (413 past
``max_body_bytes``), the number of events (422 past ``max_events_per_request``, which the
OpenAPI document states as ``maxItems``: split the batch), every event (422 naming
``events[i].field``), that a user token sends only its own user's events (403), and the
user's rate limit (429 with ``Retry-After``, see ``quotas.py``). Then each shard's group is
appended atomically. A full shard answers 429 with ``Retry-After``; see
``ingest.py`` for what happens to the other shards of the batch, and why resending the whole
batch is safe.
"""

from __future__ import annotations

import orjson
from flask import Response, request

from fedlearn.api.context import api_context
from fedlearn.api.errors import Forbidden, RateLimited, TooManyRequests, ValidationFailed
from fedlearn.api.parsing import read_json, validate
from fedlearn.api.quotas import enforce_rate
from fedlearn.api.routing import ApiBlueprint, Reply, list_length, principal
from fedlearn.api.schemas import EventBatch, EventsAccepted
from fedlearn.serving.ingest import ingest

bp = ApiBlueprint("events", __name__, tag="events")


@bp.operation(
    "POST",
    "/v1/events",
    summary="Append click/skip events to the users' shard streams",
    auth="token",
    body=EventBatch,
    parse_body=False,
    replies={202: Reply("appended (or already received); training happens later", EventsAccepted)},
    errors=(403, 429, 503),
    rate_limited=True,
)
def post_events() -> Response:
    """Events are de-duplicated by ``event_id``: resending a batch is harmless."""
    ctx = api_context()
    metrics = ctx.metrics
    limit = ctx.settings.max_events_per_request
    raw = read_json(request)
    n = list_length(raw, "events")
    if n > limit:
        metrics.events_rejected.labels("too_many").inc(n)
        raise ValidationFailed(
            f"the batch holds {n} events, at most {limit} are accepted per request "
            f"(FEDLEARN_MAX_EVENTS_PER_REQUEST); split it and send the parts; nothing was "
            f"written",
            errors=[{"field": "events", "message": f"must have at most {limit} items, got {n}"}],
        )
    try:
        batch = validate(EventBatch, raw)
    except ValidationFailed:
        metrics.events_rejected.labels("invalid").inc(n)
        raise
    caller = principal()
    if not caller.is_admin:
        for i, event in enumerate(batch.events):
            if event.user != caller.sub:
                metrics.events_rejected.labels("forbidden").inc(n)
                raise Forbidden(
                    f"events[{i}].user is {event.user!r} but this token belongs to user "
                    f"{caller.sub!r}; a user token may send only its own events; nothing was "
                    f"written",
                    errors=[{"field": f"events[{i}].user", "message": "not the token's user"}],
                )
    try:
        enforce_rate(ctx, caller, "events", n)
    except (RateLimited, ValidationFailed):  # a revoked token's 401 is not a rejected event
        metrics.events_rejected.labels("rate_limited").inc(n)
        raise
    result = ingest(ctx.store, [e.model_dump(exclude_none=True) for e in batch.events])
    metrics.events_accepted.inc(result.accepted)
    metrics.events_duplicates.inc(result.duplicates)
    if result.full:
        metrics.events_rejected.labels("stream_full").inc(len(result.refused))
        shards = sorted(exc.shard for exc in result.full)
        raise TooManyRequests(
            f"the stream of shard(s) {shards} is full (the trainers are behind); "
            f"{len(result.refused)} event(s) were not written, {result.accepted} were; retry "
            f"the batch after Retry-After seconds (events already written count as duplicates)",
            headers={"Retry-After": str(ctx.settings.retry_after_s)},
            extra={
                "accepted": result.accepted,
                "duplicates": result.duplicates,
                "not_written": result.refused,
            },
        )
    body = {"accepted": result.accepted, "duplicates": result.duplicates}
    return Response(orjson.dumps(body), status=202, mimetype="application/json")
