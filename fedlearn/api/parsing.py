"""Request bodies and queries in, validated models out; problems that name the field otherwise.

A body that is not JSON is a 400, a body over the limit a 413 (werkzeug enforces
``MAX_CONTENT_LENGTH`` while reading), a body that is JSON but breaks the schema a 422 that
lists every bad field as ``events[3].signal: must be 'click' or 'skip', got 'clik'``.
The Content-Type is not checked: browsers' ``navigator.sendBeacon`` sends JSON as text/plain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import orjson
from flask import Request
from pydantic import BaseModel, RootModel, TypeAdapter, ValidationError

from fedlearn.api.errors import TOO_LARGE, BadRequest, PayloadTooLarge, ValidationFailed

M = TypeVar("M", bound=BaseModel)


MAX_SHOWN = 60

# pydantic's wording -> ours ("events[3].user: must be at least 1 character, got ''").
_REWORDS = (
    ("Input should be ", "must be "),
    ("String should have at least ", "must have at least "),
    ("String should have at most ", "must have at most "),
    ("String should match pattern", "must match pattern"),
    ("Dictionary should have at most ", "must have at most "),
    ("List should have at least ", "must have at least "),
    ("List should have at most ", "must have at most "),
)
_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "is not a known field (check its spelling)",
}
_PATTERN_HINT = "must not be empty or contain control characters"


def show(value: Any) -> str:
    """A value for a message, shortened so that a huge field cannot flood a log."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def field_path(loc: Sequence[int | str]) -> str:
    """``("events", 3, "signal")`` -> ``events[3].signal``.

    A context value's error carries the union branch after the key (``context.hour.string``):
    context values are scalars, so the path stops at the key. A bad *key* of a map
    (``(..., "context", "", "[key]")``) is reported on the map itself. A policy's error
    carries its kind after the key (``policy.epsilon.temperature``): the path skips it.
    """
    parts = list(loc)
    if "[key]" in parts:
        parts = parts[: parts.index("[key]") - 1]
    if "context" in parts:
        at = parts.index("context")
        parts = parts[: at + 2]
    if "policy" in parts and len(parts) > parts.index("policy") + 2:
        del parts[parts.index("policy") + 1]  # the union's tag (the kind) after the key
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(body)"


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    if kind == "string_pattern_mismatch":
        pattern = error.get("ctx", {}).get("pattern", "")
        hint = _PATTERN_HINT + (" or '/'" if "/" in pattern else "")
        message = f"{hint}, got {show(error['input'])}"
    else:
        message = error["msg"]
        for theirs, ours in _REWORDS:
            if message.startswith(theirs):
                message = ours + message[len(theirs) :]
                break
        if kind in ("less_than", "less_than_equal") and error["loc"][-1:] == ("ts",):
            message += " (seconds since the epoch; milliseconds sent?)"
        if "input" in error and not isinstance(error["input"], dict | list):
            message += f", got {show(error['input'])}"
        elif "input" in error:
            message += f", got {type(error['input']).__name__}"
    if "[key]" in error["loc"]:
        message = f"a name {message}"
    return message


def field_errors(exc: ValidationError, *, skip: int = 0) -> list[dict[str, str]]:
    """``{field, message}`` per error; ``skip`` drops leading ``loc`` parts (a union's tag)."""
    return [{"field": field_path(e["loc"][skip:]), "message": _message(e)} for e in exc.errors()]


def _failed(errors: list[dict[str, str]], what: str, after: str = "") -> ValidationFailed:
    first = errors[0]
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    return ValidationFailed(
        f"{what} is invalid: {first['field']}: {first['message']}{more}{after}",
        errors=errors[:100],
    )


def read_json(request: Request) -> Any:
    """The request's JSON body; :class:`BadRequest` when it is empty or not JSON."""
    raw = request.get_data(cache=True)  # raises 413 past MAX_CONTENT_LENGTH (Content-Length)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # A chunked body has no Content-Length: werkzeug stops reading at the limit and
        # hands over a truncated body, which must not be parsed as if it were whole.
        raise PayloadTooLarge(TOO_LARGE.format(limit=limit))
    if not raw.strip():
        raise BadRequest("the request body is empty; send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None


def validate(model: type[M], data: Any) -> M:
    """``data`` as ``model``; :class:`ValidationFailed` listing every bad field."""
    if not isinstance(data, dict):
        raise ValidationFailed(
            f"the request body must be a JSON object, got {type(data).__name__}",
            errors=[{"field": "(body)", "message": "must be a JSON object"}],
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # A RootModel here is a tagged union of bodies: its errors start with the tag.
        skip = 1 if issubclass(model, RootModel) else 0
        errors = field_errors(exc, skip=skip)
        raise _failed(errors, "the request body", "; nothing was written") from None


def path_adapters(params: Mapping[str, tuple[Any, str]]) -> dict[str, TypeAdapter[Any]]:
    """Validators of path parameters declared as ``name -> (type, description)``."""
    return {name: TypeAdapter(kind) for name, (kind, _) in params.items()}


def validate_path(values: Mapping[str, Any], adapters: Mapping[str, TypeAdapter[Any]]) -> None:
    """Check the URL's parameters that have a declared schema (``schemas.PATH_PARAMS`` and the
    operation's own)."""
    errors = []
    for name, value in values.items():
        adapter = adapters.get(name)
        if adapter is None:
            continue
        try:
            adapter.validate_python(value)
        except ValidationError as exc:
            errors += [{"field": name, "message": _message(e)} for e in exc.errors()]
    if errors:
        raise _failed(errors, "the URL")


def parse_query(model: type[M], args: Mapping[str, str]) -> M:
    """The query string as ``model`` (one value per name)."""
    try:
        return model.model_validate(dict(args))
    except ValidationError as exc:
        raise _failed(field_errors(exc), "the query string") from None
