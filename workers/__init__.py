"""The process entry point that ``pip install .`` ships for Celery: ``workers.celery_app``
(``celery -A workers.celery_app worker|beat``). The app and its tasks live in
:mod:`fedlearn.jobs`."""
