"""fedlearn's Python client: a service, a batch job or a notebook talking to the HTTP API.

``Client(url, token)`` starts a user's session (their model, with the base fetched once per
version and revalidated by ETag), ranks, sends events with retries that are harmless (every
event keeps its ``event_id``), and makes the admin calls. Errors are :class:`ApiError` with the
server's problem+json and request id. It imports nothing of the server, only fedlearn.model
(to parse the base it downloads).
"""

from fedlearn.client.client import Client
from fedlearn.client.errors import ApiError, ClientError
from fedlearn.client.types import Event, Ranking, Session

__all__ = ["ApiError", "Client", "ClientError", "Event", "Ranking", "Session"]
