"""The entry point Celery loads: ``celery -A workers.celery_app worker|beat``.

The app, its configuration and its tasks live in :mod:`fedlearn.jobs`; this module only
names the app where Celery's command line looks for it.
"""

from fedlearn.jobs.app import app

__all__ = ["app"]
