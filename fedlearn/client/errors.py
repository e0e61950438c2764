"""What the client raises: the server's refusal (:class:`ApiError`) or no answer at all."""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """No usable answer: the server was unreachable or kept failing after every retry."""


class ApiError(ClientError):
    """The server refused: ``status``, its problem+json ``problem`` and ``request_id`` (quote
    it: the server's access log has the same id)."""

    def __init__(self, what: str, status: int, problem: dict[str, Any], request_id: str | None):
        detail = problem.get("detail") or problem.get("title") or "no detail"
        super().__init__(f"{what} answered {status}: {detail} (request id {request_id})")
        self.status = status
        self.problem = problem
        self.request_id = request_id
