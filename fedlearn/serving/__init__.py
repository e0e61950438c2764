"""What the API needs to serve users: the base cache, a user's clone, ingest and erasure.

Nothing of the trainer: the API imports this package, never ``fedlearn.trainer``."""
