"""Named features: how an event becomes the dict a factorization machine reads.

Features are River-style dicts, ``{"item=42": 1.0, "genre=Drama": 1.0, "hour": 0.5}``.
The server, the replay and the browser client must build the same dict for the same event, so
the recipe lives here once (and in ``client_js/src/client.js``, checked by shared vectors).
"""

from __future__ import annotations

from collections.abc import Mapping

MAX_FEATURE_NAME = 200

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


def encode_context(context: Mapping[str, object] | None, out: Features) -> Features:
    """Add ``context`` to ``out``: strings one-hot as ``name=value``, numbers as they are."""
    if not context:
        return out
    for name, value in context.items():
        if isinstance(value, bool):
            out[name] = 1.0 if value else 0.0
        elif isinstance(value, str):
            out[f"{name}={value}"] = 1.0
        elif isinstance(value, int | float):
            out[name] = float(value)
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
