"""Errors of the model layer. Each carries the value that was wrong."""

from __future__ import annotations


class ModelFormatError(ValueError):
    """Bytes that claim to be a base or a delta do not decode; the message says where."""


class PolicyError(ValueError):
    """An exploration policy or the scores it ranks are invalid; the message names the value."""
