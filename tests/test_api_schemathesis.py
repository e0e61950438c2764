"""Property-based conformance: schemathesis generates requests from the live server's own
/openapi.json (valid and invalid ones) and checks every answer: no 5xx, every status, header,
content type and body as documented, invalid input refused, auth enforced."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from schemathesis.config import SchemathesisConfig

from fedlearn.api import create_app, issue_token
from fedlearn.api.server import ThreadedServer
from fedlearn.config import Settings, load_settings
from fedlearn.model import Base
from fedlearn.store import Store

BASE = Base.fresh(["item=a", "genre=x"], 3, version="v1")


@pytest.fixture
def app_settings(tmp_path) -> Settings:
    return load_settings(
        secret_key="schemathesis-secret-0123456789", n_shards=4, data_dir=tmp_path,
        max_events_per_request=50, max_rank_items=50,
    )  # fmt: skip


@pytest.fixture
def live_url(redis_url: str, app_settings: Settings) -> Iterator[str]:
    with Store.from_url(redis_url, 4) as store:
        store.bases.put_base("v1", BASE.to_bytes())
        store.bases.set_current("v1")
        with ThreadedServer(create_app(app_settings, store)) as server:
            yield server.url


@pytest.fixture
def admin_token(app_settings: Settings) -> str:
    return issue_token(app_settings, admin=True).token


# Operations whose body is valid only if its content is (a .flfm file's sizes and checksum
# cannot be stated in JSON Schema): a schema-valid body may be refused, with a 422.
CONTENT_CHECKED = {"POST /v1/base": [positive_data_acceptance]}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_conforms(live_url: str, admin_token: str, mode: GenerationMode) -> None:
    # schemathesis' own pytest plugin (schema.parametrize with from_fixture) does not run under
    # pytest 9 yet, so the cases are drawn with its documented Hypothesis strategies instead.
    # The token goes in as the document's bearer scheme, not as a fixed header: schemathesis
    # then knows it is auth and also checks that requests without it are refused.
    config = SchemathesisConfig.from_dict(
        {"auth": {"openapi": {"bearer": {"bearer": admin_token}}}}
    )
    api = schemathesis.openapi.from_url(f"{live_url}/openapi.json", config=config)
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) == 19  # every route but /openapi.json, which schemathesis skips

    for operation in operations:
        has_input = any(True for _ in operation.iter_parameters()) or operation.body
        if mode == GenerationMode.NEGATIVE and not has_input:
            continue  # nothing to make invalid (healthz, readyz, metrics, base/current)

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=int(os.environ.get("FEDLEARN_SCHEMATHESIS_EXAMPLES", "20")),
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def conforms(case: schemathesis.Case) -> None:
            case.call_and_validate(excluded_checks=CONTENT_CHECKED.get(case.operation.label, []))

        try:
            conforms()
        except BaseException as exc:
            exc.add_note(f"operation: {operation.label} ({mode})")
            raise
