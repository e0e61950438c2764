"""``POST /v1/users/{user}/rank``: score candidates with the user's clone, on the server.

For clients that do not score locally. The answer carries a ``prediction_id``; events sent
with it train on exactly the features scored here (stored for ``prediction_ttl_s``, within the
user's quota of records: see ``store/predictions.py``). A user token is rate limited (429), and
a call may ask for at most ``max_rank_cells`` feature cells (413).

The ranking explores under the operator's policy (``FEDLEARN_EXPLORE_POLICY``) or the one the
request names, within the operator's limits (422 beyond them); each item comes with its
propensity, the probability that the policy put it in its slot (``fedlearn.model.policy``).
"""

from __future__ import annotations

from flask import Response, request

from fedlearn.api.context import api_context
from fedlearn.api.errors import PayloadTooLarge, ValidationFailed
from fedlearn.api.parsing import read_json, validate
from fedlearn.api.quotas import enforce_rank_size, enforce_rate, prediction_quota
from fedlearn.api.routing import ApiBlueprint, Reply, json_response, list_length, principal
from fedlearn.api.schemas import PolicyChoice, RankRequest, RankResponse
from fedlearn.config import Settings, env_name
from fedlearn.model.policy import Policy
from fedlearn.serving.clones import rank
from fedlearn.store.predictions import PredictionTooLargeError

bp = ApiBlueprint("rank", __name__, tag="rank")


@bp.operation(
    "POST",
    "/v1/users/<user>/rank",
    summary="Rank candidate items with the user's clone",
    auth="user",
    body=RankRequest,
    parse_body=False,
    replies={200: Reply("the candidates, best first, and the prediction_id", RankResponse)},
    errors=(413, 429, 503),
    rate_limited=True,
)
def rank_items(user: str) -> Response:
    """Item features come from the request, else from the catalog, else there are none (the
    item is then known by its id alone). Repeated ids are scored once (first listing wins)."""
    ctx = api_context()
    raw = read_json(request)
    limit = ctx.settings.max_rank_items
    n = list_length(raw, "items")
    if n > limit:
        raise ValidationFailed(
            f"{n} candidates sent, at most {limit} are ranked per request "
            f"(FEDLEARN_MAX_RANK_ITEMS); send fewer",
            errors=[{"field": "items", "message": f"must have at most {limit} items, got {n}"}],
        )
    body = validate(RankRequest, raw)
    policy = chosen_policy(ctx.settings, body.policy)
    enforce_rank_size(ctx.settings, body)
    enforce_rate(ctx, principal(), "rank")
    try:
        answer = rank(
            ctx.store, ctx.bases, ctx.settings, user,
            [(item.id, item.features) for item in body.items],
            context=body.context, k=body.k, quota=prediction_quota(ctx.settings),
            on_unreadable=ctx.metrics.unreadable_records.inc, policy=policy,
            on_ranked=lambda used, explored: ctx.metrics.observe_ranking(
                used.kind, len(explored), int(explored.sum())
            ),
        )  # fmt: skip
    except PredictionTooLargeError as exc:
        raise PayloadTooLarge(
            f"{exc} (FEDLEARN_PREDICTION_MAX_BYTES_PER_USER); nothing was stored"
        ) from None
    return json_response(answer)


def chosen_policy(settings: Settings, choice: PolicyChoice | None) -> Policy:
    """The request's policy (a parameter left out is the operator's), refused with a 422 that
    names the limit when it explores more than the operator allows."""
    if choice is None:
        return settings.explore
    # Each kind has only its own parameter; one left out is the operator's.
    asked = {name: getattr(choice, name, None) for name in ("epsilon", "temperature")}
    epsilon = settings.explore_epsilon if asked["epsilon"] is None else asked["epsilon"]
    temperature = asked["temperature"] or settings.explore_temperature  # never 0: validated
    if choice.kind == "epsilon" and epsilon > settings.explore_max_epsilon:
        raise _beyond_limit(settings, "epsilon", epsilon, "at most", "explore_max_epsilon")
    if choice.kind == "softmax" and temperature < settings.explore_min_temperature:
        raise _beyond_limit(
            settings, "temperature", temperature, "at least", "explore_min_temperature"
        )
    return Policy.of(choice.kind, epsilon, temperature)


def _beyond_limit(
    settings: Settings, name: str, value: float, bound: str, setting: str
) -> ValidationFailed:
    limit = getattr(settings, setting)
    return ValidationFailed(
        f"policy.{name} {value} is beyond the operator's limit: it must be {bound} {limit} "
        f"({env_name(setting)}); ask for less exploration; nothing was ranked",
        errors=[{"field": f"policy.{name}", "message": f"must be {bound} {limit}, got {value}"}],
    )
