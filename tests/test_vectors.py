"""The parity vectors the JavaScript client is tested against are what Python computes now.

``client_js/test/vectors.json`` is written by ``fedlearn vectors`` and read by both suites; this
test fails when the model changed and the file was not regenerated (numbers are compared to
1e-9, not bit for bit, so a different BLAS or CPU does not fail it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pytest

from fedlearn.model import FeatureError, event_features
from fedlearn.model.vectors import make_vectors

VECTORS = Path(__file__).resolve().parents[1] / "client_js" / "test" / "vectors.json"


def assert_close(got: Any, want: Any, where: str = "") -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            assert_close(a, b, f"{where}[{i}]")
    elif isinstance(want, float):
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12), f"{where}: {got} != {want}"
    else:
        assert got == want, where


def test_the_committed_vectors_are_what_the_model_computes() -> None:
    committed = orjson.loads(VECTORS.read_bytes())
    fresh = orjson.loads(orjson.dumps(make_vectors()))
    assert_close(committed["cases"], fresh["cases"], "cases")
    assert committed["bases"] == fresh["bases"], "the base files differ: run `fedlearn vectors`"
    assert committed["refused_contexts"] == fresh["refused_contexts"]
    assert_close(committed["gates"], fresh["gates"], "gates")
    assert committed["bounds"] == fresh["bounds"]


def test_the_vectors_exercise_the_row_cap_and_the_contexts_both_sides_refuse() -> None:
    vectors = make_vectors()
    capped = [c for c in vectors["cases"] if c["max_rows"] < 100]
    assert capped and all(
        len(c["expected_delta_after"]["features"]) == c["max_rows"] for c in capped
    )
    for context in vectors["refused_contexts"]:
        with pytest.raises(FeatureError):
            event_features("u", "1", context)
