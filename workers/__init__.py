"""Process entry points that ``pip install .`` ships: the Celery app (``workers.celery_app``)
and its tasks (``workers.tasks``). The logic they run lives in ``fedlearn``."""
