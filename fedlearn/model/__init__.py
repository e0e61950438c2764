"""The factorization machine: base, per-user delta, clone, batched updates, batch training.

Pure numpy: nothing here imports Flask, Redis or Celery.
"""

from fedlearn.model.base import Base
from fedlearn.model.batch import learn_many
from fedlearn.model.clone import Clone
from fedlearn.model.delta import Delta
from fedlearn.model.errors import ModelFormatError
from fedlearn.model.features import FeatureError, event_features
from fedlearn.model.train import TrainConfig, TrainResult, select_l2, train_base

__all__ = [
    "Base",
    "Clone",
    "Delta",
    "FeatureError",
    "ModelFormatError",
    "TrainConfig",
    "TrainResult",
    "event_features",
    "learn_many",
    "select_l2",
    "train_base",
]
