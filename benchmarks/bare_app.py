"""The ceiling of our HTTP stack: Flask + gunicorn + redis-py doing the least possible work.

    python benchmarks/bare_app.py --port 8100 --redis-url redis://127.0.0.1:6379/0 [--workers 2]

- ``POST /ingest``: a ``{"events": [...]}`` body parsed with orjson and every event XADDed to
  one of 8 streams (by CRC-32 of the user, like our shards) in one pipeline; 202
  ``{"accepted": n}``. No validation, no auth, no de-duplication, no bound.
- ``GET /blob``: a 2 KB value read from Redis with one GET.
- ``GET /healthz``.

Under gunicorn with sync workers (one request at a time per worker). The fedlearn API does
the same I/O plus everything that makes it a service; the ratio between the two is what our
code costs. The streams are trimmed (MAXLEN ~) so a long run does not fill the memory.
"""

from __future__ import annotations

import argparse
import functools
import os
import zlib

import orjson
import redis
from flask import Flask, Response, request

from fedlearn.api.server import EmbeddedGunicorn

BLOB_KEY = "bare:blob"
BLOB = os.urandom(1024).hex().encode()  # 2,048 bytes
STREAMS = 8


def create_app(redis_url: str) -> Flask:
    app = Flask(__name__)
    client = redis.Redis.from_url(redis_url)
    client.set(BLOB_KEY, BLOB)

    @app.post("/ingest")
    def ingest() -> Response:
        events = orjson.loads(request.get_data())["events"]
        pipe = client.pipeline(transaction=False)
        for event in events:
            shard = zlib.crc32(event["user"].encode()) % STREAMS
            pipe.xadd(
                f"bare:{{s{shard}}}:stream",
                {"e": orjson.dumps(event)},
                maxlen=1_000_000,
                approximate=True,
            )
        pipe.execute()
        body = orjson.dumps({"accepted": len(events)})
        return Response(body, status=202, mimetype="application/json")

    @app.get("/blob")
    def blob() -> Response:
        return Response(client.get(BLOB_KEY), mimetype="application/octet-stream")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response(b'{"status":"ok"}', mimetype="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    options = {
        "bind": f"127.0.0.1:{args.port}",
        "workers": args.workers,
        "worker_class": "sync",
        "accesslog": None,
        "loglevel": "warning",
        "proc_name": "bare-app",
    }
    # create_app runs in each worker, after the fork: its own Redis connection.
    EmbeddedGunicorn(functools.partial(create_app, args.redis_url), options).run()


if __name__ == "__main__":
    main()
