"""fedlearn: federated per-user personalization with factorization machines."""

__version__ = "0.1.0"
