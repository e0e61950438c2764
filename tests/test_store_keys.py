"""Shards and key names: stable hashing, one slot per shard, ids validated before any I/O."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from fedlearn.store import keys


def test_shard_of_is_crc32_of_the_utf8_id():
    # 0xCBF43926 is CRC-32's published check value for "123456789": any language's CRC-32
    # gives the same shard.
    assert keys.shard_of("123456789", 1000) == 0xCBF43926 % 1000 == 262
    assert keys.shard_of("123456789", 7) == 5


def _crc32_bitwise(data: bytes) -> int:
    """CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320) the slow way, as a JS client would."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


@pytest.mark.parametrize("user", ["42", "é", "ユーザー", "user-with-many-characters" * 5])
def test_shard_of_matches_a_reference_crc32_of_utf8(user):
    assert keys.shard_of(user, 16384) == _crc32_bitwise(user.encode("utf-8")) % 16384


def test_shard_of_spreads_users_over_all_shards():
    counts = [0] * 8
    for i in range(4000):
        counts[keys.shard_of(f"user-{i}", 8)] += 1
    assert min(counts) > 400  # about 500 each


def test_every_key_of_a_shard_lives_in_one_cluster_slot():
    shard = 3
    shard_keys = [
        keys.stream(shard), keys.applied(shard), keys.delta(shard, "42"),
        keys.delta(shard, "{weird}user"), keys.users(shard), keys.seen(shard, 19999),
        keys.lease(shard), keys.commit_token(shard), keys.predictions_of(shard, "42"),
        keys.prediction_order(shard, "42"), keys.rate(shard, "rank", "42"),
        keys.revoked(shard, "42"),
    ]  # fmt: skip
    assert {key_slot(k.encode()) for k in shard_keys} == {key_slot(b"s3")}
    assert key_slot(keys.stream(4).encode()) != key_slot(keys.stream(3).encode())
    assert keys.stream(3) == "fl:{s3}:stream"
    assert keys.delta(3, "42") == keys.delta_prefix(3) + "42" == "fl:{s3}:delta:42"


def test_base_keys_share_one_slot():
    base_keys = [keys.base_blob("v1"), keys.base_current(), keys.base_history(), keys.config()]
    assert len({key_slot(k.encode()) for k in base_keys}) == 1


@pytest.mark.parametrize(
    ("user", "message"),
    [("", "1..128 characters"), ("x" * 129, "1..128 characters"), ("a\nb", "control")],
)
def test_bad_user_ids_are_refused_with_the_value(user, message):
    with pytest.raises(ValueError, match=message):
        keys.shard_of(user, 4)


def test_bad_shard_counts_and_shards_are_refused():
    with pytest.raises(ValueError, match="n_shards must be between 1 and 16384, got 0"):
        keys.shard_of("u", 0)
    with pytest.raises(TypeError, match="n_shards must be an int"):
        keys.shard_of("u", 2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shard must be an int in 0\.\.3, got 4"):
        keys.check_shard(4, 4)
    with pytest.raises(ValueError, match="got True"):
        keys.check_shard(True, 4)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", ["", "v 1", "v/1", "x" * 129, "é"])
def test_bad_version_ids_are_refused(version):
    with pytest.raises(ValueError, match="base version must be"):
        keys.check_version(version)


def test_foreign_user_finds_the_first_user_of_another_shard():
    ours = [u for u in (f"user-{i}" for i in range(100)) if keys.shard_of(u, 8) == 3]
    theirs = next(u for u in (f"user-{i}" for i in range(100)) if keys.shard_of(u, 8) != 3)
    assert keys.foreign_user(3, ours, 8) is None
    assert keys.foreign_user(3, [*ours[:2], theirs, *ours[2:]], 8) == theirs
    assert keys.foreign_user(3, [], 8) is None


@pytest.mark.parametrize(
    ("user", "error", "message"),
    [
        (42, TypeError, "user must be a string, got int 42"),
        (b"u1", TypeError, "user must be a string, got bytes"),
        ("", ValueError, "user must be 1..128 characters, got 0"),
        ("u" * 129, ValueError, "user must be 1..128 characters, got 129"),
        ("u\n1", ValueError, "user must not contain control characters"),
    ],
)
def test_foreign_user_checks_every_id_as_check_id_does(user, error, message):
    """The bulk checks (one join, one regex) fall back to ``check_id`` for the precise error,
    wherever in the list the bad id is."""
    with pytest.raises(error, match=message):
        keys.foreign_user(0, ["u1", user, "u2"], 1)
