"""Request and response bodies of the HTTP API, as pydantic models.

The same models validate requests and generate the OpenAPI document (``openapi.py``), so the
published schema and the checks made are one thing. Constraints that JSON Schema can state
(lengths, patterns, ranges) are stated here, not in hand-written checks, so a client generated
from the schema cannot send what the server refuses. The rules are CONTRACTS.md's: ids are
1..128 characters without control characters, a feature name 1..200, a context value a
string, a number or a boolean.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    RootModel,
    StringConstraints,
    Tag,
    model_validator,
)

from fedlearn.model.features import (
    MAX_FEATURE_VALUE,
    check_context_key,
    check_item_feature_name,
)

# C0 and C1 control characters are refused (as fedlearn.data.validate does).
_NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]+$"
# An id in a URL path segment: additionally no '/', which no server can tell from a separator.
_PATH_ID = r"^[^\x00-\x1f\x7f-\x9f/]+$"
_NO_CONTROL_OR_EMPTY = r"^[^\x00-\x1f\x7f-\x9f]*$"

Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=_NO_CONTROL)]
PathId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=_PATH_ID)]
FeatureName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=_NO_CONTROL)]
# A string context value becomes the feature "name=value" (at most 200 characters), so names
# and string values are bounded to fit it whatever their combination.
# A context key may not make a "user=..." or "item=..." feature (model/features.py says why);
# the "not" states it in the published schema, the validator enforces it.
ContextName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100, pattern=_NO_CONTROL),
    AfterValidator(check_context_key),
    Field(json_schema_extra={"not": {"pattern": "^(user|item)(=|$)"}}),
]
ContextText = Annotated[str, StringConstraints(max_length=99, pattern=_NO_CONTROL_OR_EMPTY)]
# A number the clone learns from (a context number, an item's feature value): scaled to about
# [-1, 1] and refused beyond the model's bound (docs/CONTRACTS.md, "Features"): a factorization
# machine squares sums of them, so large values make the updates diverge.
FeatureValue = Annotated[
    float,
    Field(strict=True, allow_inf_nan=False, ge=-MAX_FEATURE_VALUE, le=MAX_FEATURE_VALUE),
]
# An item feature given in a rank call may not name a user= or item= row (another user's own
# row, trained on when the event names the prediction).
ItemFeatureName = Annotated[
    FeatureName,
    AfterValidator(check_item_feature_name),
    Field(json_schema_extra={"not": {"pattern": "^(user|item)(=|$)"}}),
]


def _context_kind(value: Any) -> str | None:
    # bool first: in Python a bool is an int, in JSON it is not a number.
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


# A tagged union picks its branch by the value's JSON type, so a bad value gets one message
# ("must be a string, number or boolean") instead of one per branch.
ContextValue = Annotated[
    Annotated[bool, Tag("boolean")]
    | Annotated[FeatureValue, Tag("number")]
    | Annotated[ContextText, Tag("string")],
    Discriminator(
        _context_kind,
        custom_error_type="context_value",
        custom_error_message="must be a string, number or boolean",
    ),
]
Context = Annotated[dict[ContextName, ContextValue], Field(max_length=64)]
Features = Annotated[dict[ItemFeatureName, FeatureValue], Field(max_length=256)]


def _whole(value: Any) -> Any:
    # JSON Schema's "integer" includes 3.0 (a number with no fraction): accept it as 3.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Constraints first, the validator last: it wraps the constrained int (so the JSON schema
# keeps "minimum").
PositiveWhole = Annotated[int, Field(strict=True, ge=1), BeforeValidator(_whole)]
BaseVersion = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:+-]{1,128}$")]

# Seconds since the epoch. The upper bound (year 5138) catches milliseconds sent as seconds.
MAX_TS = 1e11


class _Strict(BaseModel):
    # Unknown fields are refused: a misspelt "signla" must not pass silently.
    model_config = ConfigDict(extra="forbid", strict=True)


# --- exploration (model/policy.py) ---------------------------------------------------------

Epsilon = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Temperature = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Propensity = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
Slot = Annotated[int, Field(strict=True, ge=0, lt=100_000), BeforeValidator(_whole)]


# A policy is one of three shapes, told apart by "kind", each with only its own parameter (a
# parameter of another kind is refused, not ignored): the published schema says so too.
class GreedyPolicy(_Strict):
    """Best first."""

    kind: Literal["greedy"]


class EpsilonPolicy(_Strict):
    """Each slot goes to a uniformly drawn item with probability epsilon, else to the best."""

    kind: Literal["epsilon"]
    epsilon: Epsilon


class SoftmaxPolicy(_Strict):
    """Each slot is drawn in proportion to exp(score / temperature) (scores: probabilities)."""

    kind: Literal["softmax"]
    temperature: Temperature


class EpsilonChoice(_Strict):
    kind: Literal["epsilon"]
    epsilon: Epsilon | None = Field(default=None, description="default FEDLEARN_EXPLORE_EPSILON")


class SoftmaxChoice(_Strict):
    kind: Literal["softmax"]
    temperature: Temperature | None = Field(
        default=None, description="default FEDLEARN_EXPLORE_TEMPERATURE"
    )


# The policy a ranking followed, with its parameter; and a request's choice, whose parameter
# may be left to the operator's default.
PolicyUsed = Annotated[GreedyPolicy | EpsilonPolicy | SoftmaxPolicy, Field(discriminator="kind")]
PolicyChoice = Annotated[GreedyPolicy | EpsilonChoice | SoftmaxChoice, Field(discriminator="kind")]
SHOWN_TOGETHER = ("propensity", "policy")


def _shown_together_in_schema(schema: dict[str, Any]) -> None:
    """``propensity`` and ``policy``: each a value (never null), and one only with the other."""
    for name in SHOWN_TOGETHER:
        prop = schema["properties"][name]
        prop.update(next(b for b in prop.pop("anyOf") if b.get("type") != "null"))
        prop.pop("default", None)
    schema["dependentRequired"] = {"propensity": ["policy"], "policy": ["propensity"]}


# --- events -------------------------------------------------------------------------------


class Event(_Strict):
    """One impression and its outcome."""

    model_config = ConfigDict(json_schema_extra=_shown_together_in_schema)

    event_id: Id = Field(description="unique per event; a retry with the same id is a no-op")
    user: Id
    item: Id
    signal: Literal["click", "skip"]
    ts: Annotated[
        float,
        Field(ge=0, lt=MAX_TS, allow_inf_nan=False, description="epoch seconds"),
    ]
    context: Context | None = None
    prediction_id: Id | None = Field(
        default=None, description="the prediction_id of the ranking that showed the item"
    )
    # A client that ranked on its own says how it chose; a server ranking's record (named by
    # prediction_id) says it for the client, and wins.
    propensity: Propensity | None = Field(
        default=None,
        description="the probability that the ranking's policy put this item in its slot; "
        "sent with policy",
    )
    policy: PolicyUsed | None = Field(
        default=None, description="the policy of the ranking that showed the item"
    )
    slot: Slot | None = Field(default=None, description="the item's position in it, from 0")

    @model_validator(mode="after")
    def _propensity_with_its_policy(self) -> Event:
        given = [name for name in SHOWN_TOGETHER if name in self.model_fields_set]
        for name in given:
            if getattr(self, name) is None:
                raise ValueError(f"{name} is null; send a value or leave it out")
        if len(given) == 1:
            raise ValueError(f"{given[0]} was sent without the other; send both or neither")
        return self


class EventBatch(_Strict):
    events: Annotated[list[Event], Field(min_length=1)]


class EventsAccepted(BaseModel):
    accepted: int = Field(description="events appended to the shard streams")
    duplicates: int = Field(description="events whose event_id was already received")


# --- ranking ------------------------------------------------------------------------------


class RankItem(_Strict):
    id: Id
    features: Features | None = Field(
        default=None, description="the item's features; else the catalog's, else none"
    )


class RankRequest(_Strict):
    items: Annotated[list[RankItem], Field(min_length=1)]
    context: Context | None = None
    k: PositiveWhole | None = Field(
        default=None, description="return only the k best (default: all)"
    )
    policy: PolicyChoice | None = Field(
        default=None,
        description="how to explore, within the operator's limits (FEDLEARN_EXPLORE_MAX_EPSILON, "
        "FEDLEARN_EXPLORE_MIN_TEMPERATURE); default FEDLEARN_EXPLORE_POLICY; a parameter left "
        "out is the operator's",
    )


class ScoredItem(BaseModel):
    id: str
    score: float = Field(description="click probability under the user's clone")
    propensity: float = Field(
        description="the probability that the policy put this item in this slot, given the "
        "items before it (1 under greedy)"
    )


class RankResponse(BaseModel):
    user: str
    base_version: str
    prediction_id: str = Field(description="send it back with the events of these items")
    policy: PolicyUsed = Field(description="the policy that drew this ranking")
    items: list[ScoredItem] = Field(description="in slot order")


# --- models -------------------------------------------------------------------------------


class DeltaJson(BaseModel):
    w0: float
    features: list[str]
    w: list[float]
    v: list[list[float]]


class UserModel(BaseModel):
    user: str
    base_version: str
    base_url: str = Field(description="immutable URL of the base's .flfm bytes")
    delta: DeltaJson
    lr: float
    l2: float
    bias_lr: float
    max_rows: int = Field(description="cap on the delta's rows (least recently used evicted)")
    events_applied: int
    last_event: str | None = Field(description="stream id of the last applied event")
    serve: Literal["clone", "base"]


class BaseRef(BaseModel):
    version: str
    url: str


class CatalogItem(BaseModel):
    id: str
    title: str | None = None
    features: dict[str, float]


class Catalog(BaseModel):
    items: list[CatalogItem]


class CatalogItemIn(_Strict):
    title: Annotated[str, StringConstraints(max_length=500, pattern=_NO_CONTROL)] | None = None
    features: Features = Field(default_factory=dict)


class CatalogReplace(_Strict):
    """A whole new catalog: it replaces the current one in one step."""

    items: Annotated[dict[Id, CatalogItemIn], Field(min_length=1)] = Field(
        description="item id -> title and features; an id given twice in the JSON is refused"
    )


class CatalogReplaced(BaseModel):
    version: int = Field(description="the catalog's version: 1 for the first one loaded")
    items: int


class BaseUpload(_Strict):
    """A base model file (.flfm, base64) to publish."""

    flfm: Annotated[str, StringConstraints(min_length=4, pattern=r"^[A-Za-z0-9+/]+={0,2}$")] = (
        Field(description="the .flfm file's bytes, base64-encoded")
    )
    version: BaseVersion | None = Field(default=None, description="default: the file's own")
    make_current: bool = Field(default=True, description="false: stage it only")


class BasePublished(BaseModel):
    version: str
    created: bool = Field(description="false: these bytes were already this version")
    current: bool
    previous: str | None = Field(description="the version that was current before")
    n_factors: int
    n_features: int


class ItemsQuery(_Strict):
    limit: Annotated[int, Field(ge=1, le=1000, strict=False)] = 100


# --- tokens -------------------------------------------------------------------------------


class UserTokenRequest(_Strict):
    user: Id
    admin: Literal[False] = False
    ttl_s: PositiveWhole | None = Field(default=None, description="lifetime in seconds")


class AdminTokenRequest(_Strict):
    admin: Literal[True]
    ttl_s: PositiveWhole | None = Field(default=None, description="lifetime in seconds")


def _token_kind(value: Any) -> str:
    return "admin" if isinstance(value, dict) and value.get("admin") is True else "user"


class TokenRequest(RootModel[Any]):
    """``{"user": id}`` for a user token, ``{"admin": true}`` for an admin token."""

    root: Annotated[
        Annotated[UserTokenRequest, Tag("user")] | Annotated[AdminTokenRequest, Tag("admin")],
        Discriminator(_token_kind),
    ]


class TokenResponse(BaseModel):
    token: str
    expires_at: float = Field(description="epoch seconds")
    sub: str
    role: Literal["user", "admin"]


# --- ops and errors -----------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    base_version: str
    n_shards: int


class FieldError(BaseModel):
    field: str
    message: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None
    request_id: str | None = None  # also in the X-Request-ID header and the access log


# Path parameters by name: their schema (checked by the route wrapper) and description.
PATH_PARAMS: dict[str, tuple[Any, str]] = {
    "user": (PathId, "the user id (no '/')"),
    "version": (BaseVersion, "a base version id"),
}
