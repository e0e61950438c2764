"""Federated aggregation: users' delta changes folded back into the base, round by round.

Reading order: ``strategies/`` (the rules, one per module, behind ``Strategy``), ``rounds``
(a user's clipped change, applying an update to a base), ``partials`` (a shard's partial
result), ``mapper`` and ``run`` (the steps of a round against the store), ``offline`` (a
round in memory, for replay), ``monthly`` (retraining a new generation), ``config``.
The Celery tasks in ``fedlearn/jobs/tasks.py`` only call ``mapper`` and ``run``.
"""
