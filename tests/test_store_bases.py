"""Base versions: immutable once published; current is a pointer; rollback moves it back."""

from __future__ import annotations

import pytest

from fedlearn.store import (
    Store,
    UnknownVersionError,
    VersionConflictError,
    VersionExistsError,
)


def test_publish_read_and_point(store: Store):
    assert store.bases.current_version() is None
    assert store.bases.put_base("v1", b"FLFM one", {"auc": 0.71})
    assert store.bases.get_base("v1") == b"FLFM one"
    assert store.bases.exists("v1") and not store.bases.exists("v2")
    assert store.bases.current_version() is None  # publishing does not switch
    assert store.bases.set_current("v1") is None
    assert store.bases.current_version() == "v1"


def test_versions_are_immutable_and_republishing_is_harmless(store: Store):
    assert store.bases.put_base("v1", b"one", {"n": 1})
    assert not store.bases.put_base("v1", b"one", {"n": 1})  # a retried publish
    with pytest.raises(VersionExistsError, match="'v1' already exists with different content"):
        store.bases.put_base("v1", b"other")
    assert store.bases.get_base("v1") == b"one"
    assert [h.version for h in store.bases.history()] == ["v1"]


def test_history_and_rollback(store: Store):
    for n in (1, 2, 3):
        store.bases.put_base(f"v{n}", f"blob {n}".encode(), {"round": n})
        store.bases.set_current(f"v{n}")
    history = store.bases.history()
    assert [(h.version, h.meta) for h in history] == [
        ("v1", {"round": 1}), ("v2", {"round": 2}), ("v3", {"round": 3}),
    ]  # fmt: skip
    assert history[0].created_at <= history[2].created_at
    assert store.bases.rollback("v1") == "v3"
    assert store.bases.current_version() == "v1"
    assert store.bases.meta("v2") == {"round": 2}
    assert store.bases.get_base("v3") == b"blob 3"  # rollback deletes nothing


def test_unknown_versions(store: Store):
    with pytest.raises(UnknownVersionError, match="'v9' does not exist"):
        store.bases.get_base("v9")
    with pytest.raises(KeyError):  # also a KeyError, for dict-like callers
        store.bases.get_base("v9")
    with pytest.raises(UnknownVersionError):
        store.bases.set_current("v9")
    with pytest.raises(UnknownVersionError):
        store.bases.meta("v9")
    assert store.bases.current_version() is None


def test_set_current_compare_and_set(store: Store):
    for v in ("v1", "v2", "v3"):
        store.bases.put_base(v, v.encode())
    with pytest.raises(VersionConflictError):
        store.bases.set_current("v1", expected="v0")  # there is no current yet
    assert store.bases.set_current("v1", expected=None) is None
    with pytest.raises(VersionConflictError) as info:
        store.bases.set_current("v2", expected=None)
    assert info.value.actual == "v1"
    assert store.bases.set_current("v2", expected="v1") == "v1"
    # two reducers built on v1: the second one loses and is told what is current
    with pytest.raises(VersionConflictError, match="found 'v2'") as info:
        store.bases.set_current("v3", expected="v1")
    assert (info.value.expected, info.value.actual) == ("v1", "v2")
    assert store.bases.current_version() == "v2"


def test_bad_input_is_refused_before_writing(store: Store):
    with pytest.raises(ValueError, match="base version must be"):
        store.bases.put_base("v/1", b"x")
    with pytest.raises(ValueError, match="blob is empty"):
        store.bases.put_base("v1", b"")
    with pytest.raises(TypeError, match="blob must be bytes, got str"):
        store.bases.put_base("v1", "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="meta must be JSON-serializable"):
        store.bases.put_base("v1", b"x", {"bad": object()})
    assert store.client.dbsize() == 0
