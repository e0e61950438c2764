"""A blending gate over real HTTP: the model endpoint sends the gate's weight and ranking
serves the gate's mixture of clone and base, ``w p_clone + (1 - w) p_base`` (gunicorn on a free
port against the session's real redis-server, ``FEDLEARN_GATE_BLEND`` on)."""

from __future__ import annotations

import pytest

from fedlearn.api import issue_token
from fedlearn.config import Settings, load_settings
from fedlearn.devtools import EmbeddedRedis
from fedlearn.devtools.embedded import free_port
from fedlearn.model import Clone
from fedlearn.model.gating import Gate
from fedlearn.store import Store
from tests import test_api_http as api_tests
from tests.live import Api
from tests.test_api_http import BASE, N_SHARDS, SECRET, commit_delta


@pytest.fixture(scope="module")
def settings(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load_settings(
        redis_url=redis_server.url, secret_key=SECRET, n_shards=N_SHARDS, gate_blend=True,
        data_dir=tmp_path_factory.mktemp("api-data"), api_port=free_port(), api_workers=1,
    )  # fmt: skip


# The API tests' server and store fixtures, started with this module's settings (blend on).
server, store = api_tests.server, api_tests.store


@pytest.mark.parametrize(("loss_clone", "loss_base"), [(2.0, 1.5), (1.0, 1.8), (9.0, 1.0)])
def test_the_model_sends_the_gate_s_weight_and_rank_serves_the_mixture(
    server: str, settings: Settings, store: Store, loss_clone: float, loss_base: float
) -> None:
    admin = Api(server, issue_token(settings, admin=True).token)
    gate = Gate(loss_clone=loss_clone, loss_base=loss_base, events=12)
    delta = commit_delta(store, "alice", gate=gate.to_bytes())
    weight = gate.p_clone(settings.gate_eta)
    model = admin.call("GET", "/v1/users/alice/model").json()
    assert model["clone_weight"] == pytest.approx(weight, rel=1e-12)
    assert model["serve"] == gate.serve(settings.gate_eta)
    assert model["gate"] == {
        "loss_clone": loss_clone, "loss_base": loss_base, "decay": settings.gate_decay,
        "eta": settings.gate_eta, "blend": True,
    }  # fmt: skip
    ranked = admin.call("POST", "/v1/users/alice/rank", {"items": [{"id": "a"}]}).json()
    x = {"user=alice": 1.0, "item=a": 1.0}
    clone, plain = Clone(BASE, delta).predict_proba_one(x), Clone(BASE).predict_proba_one(x)
    assert ranked["items"][0]["score"] == pytest.approx(weight * clone + (1 - weight) * plain)
    assert min(clone, plain) < ranked["items"][0]["score"] < max(clone, plain)


def test_a_new_user_is_served_an_even_mixture_which_is_the_base(
    server: str, settings: Settings, store: Store
) -> None:
    """No delta, no gate: weight 1/2 of two equal models, so the score is the base's."""
    admin = Api(server, issue_token(settings, admin=True).token)
    assert admin.call("GET", "/v1/users/bob/model").json()["clone_weight"] == 0.5
    ranked = admin.call("POST", "/v1/users/bob/rank", {"items": [{"id": "b"}]}).json()
    x = {"user=bob": 1.0, "item=b": 1.0}
    assert ranked["items"][0]["score"] == pytest.approx(Clone(BASE).predict_proba_one(x))
