"""Named features: how an event becomes the dict a factorization machine reads.

Features are River-style dicts, ``{"item=42": 1.0, "genre=Drama": 1.0, "hour": 0.5}``.
The server, the replay and the browser client must build the same dict for the same event, so
the recipe lives here once (and in ``client_js/src/client.js``, checked by shared vectors).
"""

from __future__ import annotations

from collections.abc import Mapping

MAX_FEATURE_NAME = 200
# Numbers are meant to be scaled to about [-1, 1] (one-hot features are 1). The bound leaves
# room for outliers and still keeps every score and gradient far from float overflow; values
# beyond it are refused, not clipped, so a client learns that its scaling is wrong.
MAX_FEATURE_VALUE = 10.0
# Features the model names itself: a context key "user" (or "user=x") would make the feature
# "user=<victim>", which colluding clients could train into the shared base.
RESERVED_PREFIXES = ("user", "item")
USER_PREFIX = "user="  # a user's own row: the part of a clone only that user moves

Features = dict[str, float]


class FeatureError(ValueError):
    """A feature name or value is not usable; the message names it."""


def check_feature_name(name: str) -> None:
    """Raise :class:`FeatureError` unless ``name`` is a valid feature name."""
    if not isinstance(name, str) or not name:
        raise FeatureError(f"feature name must be a non-empty string, got {name!r}")
    if len(name) > MAX_FEATURE_NAME:
        raise FeatureError(
            f"feature name {name[:40]!r}... is {len(name)} characters; at most "
            f"{MAX_FEATURE_NAME} are allowed"
        )
    if not name.isprintable():
        raise FeatureError(f"feature name {name!r} contains a control character")


def check_feature_value(value: float, field: str) -> float:
    """``value`` as a float if finite and within ``MAX_FEATURE_VALUE``; else a FeatureError."""
    number = float(value)
    if not abs(number) <= MAX_FEATURE_VALUE:  # also refuses NaN
        raise FeatureError(
            f"{field} is {number!r}; feature values must be finite and within "
            f"[-{MAX_FEATURE_VALUE:g}, {MAX_FEATURE_VALUE:g}] (scale numbers to about [-1, 1])"
        )
    return number


def reserved_context_key(name: str) -> bool:
    """Whether a context key would make a ``user=`` or ``item=`` feature."""
    return name.split("=", 1)[0] in RESERVED_PREFIXES


def _unreserved(name: str, what: str) -> str:
    if reserved_context_key(name):
        raise FeatureError(
            f"{what} {name!r} is reserved: 'user' and 'item' (and names starting with "
            "'user=' or 'item=') are the model's own features; rename it"
        )
    return name


def check_context_key(name: str) -> str:
    """``name`` unless it collides with the model's own ``user``/``item`` features."""
    return _unreserved(name, "context key")


def check_item_feature_name(name: str) -> str:
    """``name`` unless it is another user's or item's own row (``user=victim``): a caller's
    item features are recorded and trained on, and must not reach rows that are not theirs."""
    return _unreserved(name, "item feature")


def encode_context(context: Mapping[str, object] | None, out: Features) -> Features:
    """Add ``context`` to ``out``: strings one-hot as ``name=value``, numbers as they are."""
    if not context:
        return out
    for name, value in context.items():
        check_context_key(name)
        if isinstance(value, bool):
            out[name] = 1.0 if value else 0.0
        elif isinstance(value, str):
            out[f"{name}={value}"] = 1.0
        elif isinstance(value, int | float):
            out[name] = check_feature_value(value, f"context value of {name!r}")
        else:
            raise FeatureError(
                f"context value of {name!r} must be a string, number or boolean, "
                f"got {type(value).__name__}"
            )
    return out


def event_features(
    user: str,
    item: str,
    context: Mapping[str, object] | None = None,
    item_features: Mapping[str, float] | None = None,
    user_features: Mapping[str, float] | None = None,
) -> Features:
    """The feature dict of one (user, item) impression, in a fixed order.

    >>> event_features("7", "42", {"hour": "21"}, {"genre=Drama": 1.0})
    {'user=7': 1.0, 'item=42': 1.0, 'genre=Drama': 1.0, 'hour=21': 1.0}
    """
    out: Features = {f"user={user}": 1.0, f"item={item}": 1.0}
    if item_features:
        out.update(item_features)
    if user_features:
        out.update(user_features)
    return encode_context(context, out)
