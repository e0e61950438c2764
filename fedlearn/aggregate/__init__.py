"""Federated aggregation: users' delta changes folded back into the base, round by round.

Reading order: ``strategies/`` (the rules, one per module, behind ``Strategy``; the registry
``STRATEGIES`` is the one list of their names), ``changes`` (a user's clipped change,
applying an update to a base), ``partials`` (a shard's partial result), ``fold`` (the one fold
of the users' changes into the base: the service's rounds and the replay's aggregated arms
call it), ``rebase`` (each user's share of a round's step, taken out of its delta),
``round`` (a round's statuses and their allowed moves), ``mapper``, ``run`` and ``promote``
(the steps of a round against the store; ``promote`` rebases the participants),
``monthly`` (retraining a new generation), ``config`` (one frozen dataclass, its defaults the
settings'). The Celery tasks in
``fedlearn/jobs/tasks.py`` only call ``mapper`` and ``run``.
"""
