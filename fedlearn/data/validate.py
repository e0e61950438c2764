"""Field checks shared by every reader and writer of the data layer.

They raise a plain ``ValueError`` whose message names the field and the value; the reader that
knows the file and the line wraps it into a :class:`~fedlearn.data.errors.DataError`. The rules
are the ones in docs/CONTRACTS.md (ids, feature names, context values).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fedlearn.model.features import MAX_FEATURE_VALUE, RESERVED_PREFIXES, reserved_context_key

MAX_ID_CHARS = 128
MAX_FEATURE_CHARS = 200
SIGNALS = ("click", "skip")

# "Printable" is Python's str.isprintable(), the rule fedlearn.model.features applies to
# feature names: ids become features too (``user=<id>``), so both use it. It rejects control
# characters and also line/paragraph separators and invisible format characters.

ContextValue = str | int | float | bool


def show(value: Any, limit: int = 60) -> str:
    """A value for an error message: repr, shortened so a huge field cannot flood a log."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_id(value: Any, field: str) -> str:
    """An id (user, item, event): a non-empty string without control characters.

    Integers are accepted and read as their decimal string, because MovieLens-style files and
    hand-written JSON often carry numeric ids; anything else (a float, a bool) is ambiguous.
    """
    if type(value) is str and 0 < len(value) <= MAX_ID_CHARS and value.isprintable():
        return value  # the common case, checked in one line because readers call this a lot
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"{field!r} must be a string (or an integer), got {show(value)}")
    return _check_text(value, repr(field), MAX_ID_CHARS)


def _check_text(value: str, label: str, max_chars: int) -> str:
    """``value`` is 1 to ``max_chars`` printable characters; ``label`` names it in errors."""
    if not value or len(value) > max_chars:
        raise ValueError(
            f"{label} must be 1 to {max_chars} characters, got {len(value)}: {show(value)}"
        )
    if not value.isprintable():
        raise ValueError(f"{label} must be printable (no control characters), got {show(value)}")
    return value


def check_number(value: Any, field: str) -> float:
    """A finite number (int or float, not a bool), returned as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{field!r} must be a number, got {show(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{field!r} must be a finite number, got {show(value)}")
    return number


def check_feature_value(value: Any, field: str) -> float:
    """A feature value: a finite number within ``MAX_FEATURE_VALUE`` (CONTRACTS: Features)."""
    number = check_number(value, field)
    if abs(number) > MAX_FEATURE_VALUE:
        raise ValueError(
            f"{field!r} must be within [-{MAX_FEATURE_VALUE:g}, {MAX_FEATURE_VALUE:g}] (scale "
            f"numbers to about [-1, 1]), got {show(value)}"
        )
    return number


def check_signal(value: Any) -> str:
    if value not in SIGNALS:
        raise ValueError(f"'signal' must be 'click' or 'skip', got {show(value)}")
    return value


def check_feature_name(name: Any, field: str = "feature name") -> str:
    """A feature name: 1..200 printable characters (CONTRACTS: Features)."""
    if not isinstance(name, str):
        raise ValueError(f"{field} must be a string, got {show(name)}")
    return _check_text(name, field, MAX_FEATURE_CHARS)


def check_features(value: Any, field: str = "features") -> dict[str, float]:
    """A catalog feature dict: name -> finite number within ``MAX_FEATURE_VALUE``."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{field!r} must be an object of name -> number, got {show(value)}")
    out: dict[str, float] = {}
    for name, number in value.items():
        check_feature_name(name, f"{field!r} name")
        out[name] = check_feature_value(number, f"{field}.{name}")
    return out


def check_context(value: Any) -> dict[str, ContextValue]:
    """An event context: name -> string | number | bool; ``None`` or absent means empty.

    A string value becomes the feature ``name=value``, so that whole name must be a valid
    feature name too; we check it here rather than let the model reject the event later. For
    the same reason a name may not make a ``user=`` or ``item=`` feature, and a number must be
    within the model's bound.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"'context' must be an object, got {show(value)}")
    out: dict[str, ContextValue] = {}
    for name, item in value.items():
        check_feature_name(name, "'context' name")
        if reserved_context_key(name):
            reserved = " and ".join(repr(prefix) for prefix in RESERVED_PREFIXES)
            raise ValueError(
                f"'context' name {show(name)} is reserved: {reserved} (alone or before '=') "
                "name the model's own features; rename the key"
            )
        if isinstance(item, str):
            check_feature_name(f"{name}={item}", f"'context.{name}' as a feature")
        elif isinstance(item, bool):
            pass
        elif isinstance(item, int | float):
            check_feature_value(item, f"context.{name}")
        else:
            raise ValueError(
                f"'context.{name}' must be a string, number or boolean, got {show(item)}"
            )
        out[name] = item
    return out


def check_positive_ints(config: Any, names: tuple[str, ...]) -> None:
    """Raise ValueError naming the first of ``config``'s fields ``names`` that is not a
    positive integer (a bool is not one)."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name!r} must be a positive integer, got {value!r}")
