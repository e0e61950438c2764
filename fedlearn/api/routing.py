"""One declaration per endpoint: the Flask route, its auth, its body and its documented answers.

``ApiBlueprint.operation`` registers a view with Flask *and* records an :class:`Operation`,
from which ``openapi.py`` writes the OpenAPI document. So the document cannot list an endpoint
that does not exist or miss one that does. The wrapper also does what every view would repeat:
authenticate (401, also for a token revoked by forgetting its user), check the path user
(403), parse and validate the JSON body and the query (400/413/422), and hand the view typed
models.

The revocation check is a Redis read. A rate-limited route (``rate_limited=True``) leaves it
to its rate check (``quotas.enforce_rate``), which does both in one round trip, and a route
that reads the user's state anyway (``revocation_in_view=True``, the model GET) reads it in
that same round trip; should the request be refused before it gets there, the wrapper checks
revocation then, so a revoked token still gets its 401 first, whatever else is wrong with the
request.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from flask import Blueprint, Response, current_app, g, request
from pydantic import BaseModel

from fedlearn.api.auth import (
    Principal,
    authenticate,
    refuse_revoked,
    require_admin,
    require_user,
)
from fedlearn.api.context import api_context
from fedlearn.api.parsing import (
    parse_query,
    path_adapters,
    read_json,
    validate,
    validate_path,
)
from fedlearn.api.schemas import PATH_PARAMS

Auth = Literal["none", "token", "user", "admin"]
_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")  # a Flask rule's <converter:name>


@dataclass(frozen=True)
class Reply:
    """One documented answer of an operation (errors are added by ``openapi.py``)."""

    description: str
    model: type[BaseModel] | None = None
    media_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)  # name -> description


@dataclass(frozen=True)
class Operation:
    method: str
    rule: str
    endpoint: str
    summary: str
    description: str
    tag: str
    auth: Auth
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    replies: Mapping[int, Reply]
    errors: tuple[int, ...]
    path_params: Mapping[str, tuple[Any, str]]  # name -> (type, description)


class ApiBlueprint(Blueprint):
    """A blueprint whose routes are declared with :meth:`operation`."""

    def __init__(self, name: str, import_name: str, *, tag: str) -> None:
        super().__init__(name, import_name)
        self.tag = tag
        self.operations: list[Operation] = []

    def operation(
        self,
        method: str,
        rule: str,
        *,
        summary: str,
        auth: Auth,
        replies: Mapping[int, Reply],
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        errors: tuple[int, ...] = (),
        description: str | None = None,
        parse_body: bool = True,
        path_params: Mapping[str, tuple[Any, str]] | None = None,
        rate_limited: bool = False,
        revocation_in_view: bool = False,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register ``view`` for ``method rule``.

        The view receives the path parameters, plus ``body`` and/or ``query`` (validated
        models) when declared. ``auth``: ``none`` (public), ``token`` (any valid token),
        ``user`` (the path's ``user`` or an admin), ``admin``. ``errors`` lists the error
        statuses the view itself may raise, for the document. ``parse_body=False``: ``body``
        is only documented, the view reads and validates it itself (to count or pre-check).
        ``path_params`` declares path parameters beyond the shared ``schemas.PATH_PARAMS``
        (``user``, ``version``) as ``name -> (type, description)``; undeclared ones are plain
        strings. ``rate_limited=True``: the view calls ``quotas.enforce_rate`` before it
        writes anything, and that call checks the token's revocation too.
        ``revocation_in_view=True``: the view checks the token's revocation itself, before it
        answers anything else (``take_revocation_due`` says whether it must).
        """
        names = _PARAM.findall(rule)
        params = {n: PATH_PARAMS[n] for n in names if n in PATH_PARAMS}
        params.update(path_params or {})
        params.update({n: (str, n) for n in names if n not in params})
        adapters = path_adapters(params)

        def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(view)
            def wrapper(**kwargs: Any) -> Any:
                caller = None
                if auth != "none":
                    ctx = api_context()
                    caller = authenticate(ctx.settings, request)
                    if not caller.is_admin:  # a forgotten user's tokens stop at once
                        if rate_limited or revocation_in_view:
                            g.revocation_due = True
                        else:
                            refuse_revoked(caller, ctx.revocations.revoked_at(caller.sub))
                try:
                    answer = checked_view(caller, kwargs)
                except Exception:
                    settle_revocation(caller)  # refused before its rate check: 401 first
                    raise
                if take_revocation_due():
                    raise RuntimeError(f"{view.__name__} never checked the token's revocation")
                return answer

            def checked_view(caller: Principal | None, kwargs: dict[str, Any]) -> Any:
                validate_path(kwargs, adapters)
                if caller is not None:
                    if auth == "user":
                        require_user(caller, kwargs["user"])
                    elif auth == "admin":
                        require_admin(caller)
                    g.principal = caller
                if body is not None and parse_body:
                    kwargs["body"] = validate(body, read_json(request))
                if query is not None:
                    kwargs["query"] = parse_query(query, request.args)
                return current_app.ensure_sync(view)(**kwargs)

            self.add_url_rule(rule, view.__name__, wrapper, methods=[method])
            self.operations.append(
                Operation(
                    method=method.lower(),
                    rule=rule,
                    endpoint=f"{self.name}.{view.__name__}",
                    summary=summary,
                    description=description or inspect.cleandoc(view.__doc__ or summary),
                    tag=self.tag,
                    auth=auth,
                    body=body,
                    query=query,
                    replies=dict(replies),
                    errors=errors,
                    path_params=params,
                )
            )
            return wrapper

        return decorate


def settle_revocation(caller: Principal | None) -> None:
    """Check ``caller``'s token against its user's revocation if that is still due (see the
    module's docstring); afterwards it is not."""
    if caller is not None and take_revocation_due():
        refuse_revoked(caller, api_context().revocations.revoked_at(caller.sub))


def take_revocation_due() -> bool:
    """Whether the current request's revocation check is still due; the caller takes it on
    (the rate check does it in the same round trip)."""
    return bool(g.pop("revocation_due", False))


def principal() -> Principal:
    """The caller of the current request (set by the route wrapper)."""
    return g.principal


def json_response(data: Any, status: int = 200) -> Response:
    """``data`` as a JSON answer marked ``no-store``: our JSON answers are per caller or
    change from one call to the next, so no cache may keep them (only the base bytes may)."""
    response = Response(orjson.dumps(data), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def list_length(raw: Any, field: str) -> int:
    """How many items ``raw[field]`` claims to hold, read before validation so that an
    oversized list is refused without validating every item (0 when it is not even a list)."""
    if isinstance(raw, dict) and isinstance(raw.get(field), list):
        return len(raw[field])
    return 0
