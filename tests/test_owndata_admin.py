"""Publishing one's own base and loading one's own catalog: ``POST /v1/base``, ``PUT
/v1/items`` (real gunicorn, real Redis: the fixtures of test_api_http) and the CLI's ``base
publish`` / ``catalog load``. Bad input gets a precise error and changes nothing."""

from __future__ import annotations

import base64
from pathlib import Path

from click.testing import CliRunner

from fedlearn.cli.base import base as base_group
from fedlearn.cli.catalog import catalog as catalog_group
from fedlearn.config import Settings
from fedlearn.model import Base
from fedlearn.store import Store
from tests.live import Api
from tests.test_api_http import (  # noqa: F401  (fixtures)
    BASE,
    admin,
    problem,
    server,
    settings,
    store,
)

GROWN = Base.fresh(["user=alice", "item=a", "item=b", "item=c", "item=d", "genre=x"], 4,
                   version="mine-1", init_seed=5)  # fmt: skip


def upload(base: Base | bytes, **fields: object) -> dict[str, object]:
    blob = base if isinstance(base, bytes) else base.to_bytes()
    return {"flfm": base64.b64encode(blob).decode(), **fields}


def unchanged(store: Store) -> None:  # noqa: F811
    assert store.bases.current_version() == BASE.version
    assert [info.version for info in store.bases.history()] == [BASE.version]


def test_a_base_is_published_and_made_current(admin: Api, store: Store) -> None:  # noqa: F811
    answer = admin.call("POST", "/v1/base", json=upload(GROWN))
    assert answer.status == 201, answer.data
    assert answer.json() == {"version": "mine-1", "created": True, "current": True,
                             "previous": "v1", "n_factors": 4, "n_features": 6}  # fmt: skip
    assert store.bases.current_version() == "mine-1"
    again = admin.call("POST", "/v1/base", json=upload(GROWN))
    assert again.status == 200 and again.json()["created"] is False
    served = Base.from_bytes(admin.call("GET", "/v1/base/mine-1").data)
    assert served.features == GROWN.features and served.meta["generation"] == 0


def test_a_staged_base_does_not_become_current(admin: Api, store: Store) -> None:  # noqa: F811
    answer = admin.call("POST", "/v1/base", json=upload(GROWN, make_current=False, version="s1"))
    assert answer.status == 201 and answer.json()["current"] is False
    assert store.bases.current_version() == BASE.version and store.bases.exists("s1")


def test_a_base_with_other_factors_is_refused(admin: Api, store: Store) -> None:  # noqa: F811
    other = Base.fresh(["item=a"], 8, version="k8")
    body = problem(admin.call("POST", "/v1/base", json=upload(other)), 422)
    assert body["errors"][0]["field"] == "n_factors"
    assert "8 factors" in body["detail"] and "--factors 4" in body["detail"]
    unchanged(store)


def test_bytes_that_are_no_base_are_refused(admin: Api, store: Store) -> None:  # noqa: F811
    body = problem(admin.call("POST", "/v1/base", json=upload(b"not a model at all")), 422)
    assert body["errors"][0]["field"] == "format"
    unchanged(store)


def test_a_version_holding_other_bytes_is_a_conflict(admin: Api, store: Store) -> None:  # noqa: F811
    body = problem(admin.call("POST", "/v1/base", json=upload(GROWN, version="v1")), 409)
    assert "v1" in body["detail"]
    unchanged(store)


def test_only_an_admin_may_publish_or_replace(admin: Api, store: Store, settings: Settings):  # noqa: F811
    from fedlearn.api.auth import issue_token

    user = Api(admin.url, issue_token(settings, user="alice").token)
    problem(user.call("POST", "/v1/base", json=upload(GROWN)), 403)
    problem(user.call("PUT", "/v1/items", json={"items": {"a": {}}}), 403)
    unchanged(store)


def test_the_catalog_is_replaced_whole_and_versioned(admin: Api, store: Store) -> None:  # noqa: F811
    first = {"items": {"a": {"title": "A", "features": {"genre=x": 1.0}}, "b": {}}}
    assert admin.call("PUT", "/v1/items", json=first).json() == {"version": 1, "items": 2}
    second = {"items": {"c": {"features": {"genre=y": 1.0}}}}
    assert admin.call("PUT", "/v1/items", json=second).json() == {"version": 2, "items": 1}
    listed = admin.call("GET", "/v1/items").json()["items"]
    assert listed == [{"id": "c", "title": "c", "features": {"genre=y": 1.0}}]


def test_a_catalog_with_a_duplicate_id_changes_nothing(admin: Api, store: Store) -> None:  # noqa: F811
    admin.call("PUT", "/v1/items", json={"items": {"a": {}}})
    dup = b'{"items": {"z": {}, "y": {}, "z": {"title": "again"}}}'
    headers = {"Content-Type": "application/json"}
    body = problem(admin.call("PUT", "/v1/items", body=dup, headers=headers), 422)
    assert body["errors"] == [
        {"field": "items", "message": "names 'z' twice (an item id may appear once)"}
    ]
    assert store.catalog.version() == 1 and set(store.catalog.features(["a", "z"])) == {"a"}


# --- the CLI ------------------------------------------------------------------------------


def env(settings: Settings, tmp_path: Path) -> dict[str, str]:  # noqa: F811
    return {"REDIS_URL": str(settings.redis_url), "FEDLEARN_N_SHARDS": str(settings.n_shards),
            "FEDLEARN_DATA_DIR": str(tmp_path)}  # fmt: skip


def test_cli_publishes_a_file_and_refuses_other_factors(
    store: Store,  # noqa: F811
    settings: Settings,  # noqa: F811
    tmp_path: Path,
) -> None:
    bad = Base.fresh(["item=a"], 2, version="k2").save(tmp_path / "k2.flfm")
    refused = CliRunner().invoke(base_group, ["publish", str(bad)], env=env(settings, tmp_path))
    assert refused.exit_code == 1 and "n_factors: the base has 2 factors" in refused.output
    unchanged(store)
    good = GROWN.save(tmp_path / "mine.flfm")
    done = CliRunner().invoke(base_group, ["publish", str(good)], env=env(settings, tmp_path))
    assert done.exit_code == 0, done.output
    assert "base mine-1: 6 features, 4 factors, current; was v1" in done.output
    assert store.bases.current_version() == "mine-1"


def test_cli_loads_a_csv_catalog_and_refuses_a_duplicate(
    store: Store,  # noqa: F811
    settings: Settings,  # noqa: F811
    tmp_path: Path,
) -> None:
    good = tmp_path / "items.csv"
    good.write_text("item,title,genre\nm1,Film one,Drama|Comedy\nm2,Film two,\n")
    done = CliRunner().invoke(catalog_group, ["load", str(good)], env=env(settings, tmp_path))
    assert done.exit_code == 0, done.output
    assert store.catalog.features(["m1", "m2"]) == {
        "m1": {"genre=Drama": 1.0, "genre=Comedy": 1.0}, "m2": {}
    }  # fmt: skip
    dup = tmp_path / "dup.csv"
    dup.write_text("item,title\nm3,x\nm4,y\nm3,z\n")
    refused = CliRunner().invoke(catalog_group, ["load", str(dup)], env=env(settings, tmp_path))
    assert refused.exit_code == 1
    assert "dup.csv line 4: item 'm3' appears twice (first on line 2)" in refused.output
    assert "the catalog was not changed" in refused.output
    assert store.catalog.version() == 1 and store.catalog.count() == 2
