"""Every Lua script of the store compiles on a real Redis, and says where it does not.

A script is compiled on its first call (EVALSHA, then SCRIPT LOAD on NOSCRIPT), deep inside
whatever test first calls it; a trainer running in a thread there stops, and its test waits
for events until its own timeout. Loading each script here fails at once, with Redis's own
message (line and token)."""

from __future__ import annotations

import dataclasses

import pytest
import redis

from fedlearn.store import scripts
from fedlearn.store.scripts import Scripts

NAMES = [field.name for field in dataclasses.fields(Scripts)]


@pytest.mark.parametrize("name", NAMES)
def test_the_script_compiles(redis_url: str, name: str):
    source = getattr(scripts, name.upper())
    with redis.Redis.from_url(redis_url) as client:
        assert client.script_load(source) == getattr(Scripts.register(client), name).sha
