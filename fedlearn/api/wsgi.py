"""The WSGI entry point: ``gunicorn 'fedlearn.api.wsgi:app'``.

The app is built from the environment (``REDIS_URL``, ``FEDLEARN_*``, see ``fedlearn.config``)
when gunicorn imports this module in a worker. A running Redis is required here: the embedded
one is started by ``fedlearn api``/``fedlearn up`` (``server.run_gunicorn``), not per worker.
"""

from __future__ import annotations

from fedlearn.api.app import create_app

app = create_app()
