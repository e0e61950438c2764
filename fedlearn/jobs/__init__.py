"""Celery: the app, its configuration and its tasks (top-level ``workers/`` is the thin entry
point ``celery -A fedlearn.jobs.app`` loads)."""
