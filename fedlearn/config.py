"""The service's settings: the one place where the environment is read.

Every process (API, trainers, Celery, CLI) builds one :class:`Settings` with
:func:`load_settings` and passes it down explicitly; nothing else reads ``os.environ``.
Variables carry the prefix ``FEDLEARN_`` (``FEDLEARN_N_SHARDS=16``), except the Redis address,
which is also read from the conventional ``REDIS_URL``. A bad value fails at start with the
variable's name and value (:class:`ConfigError`), not later inside a request.

The signing key is required only when auth is on. ``fedlearn up`` calls
:func:`ensure_secret_key`, which generates one in ``<data_dir>/secret_key`` (mode 0600); a
``Settings`` without ``FEDLEARN_SECRET_KEY`` reads that file.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from fedlearn.model.delta import DEFAULT_MAX_ROWS
from fedlearn.model.gating import GateSettings
from fedlearn.model.policy import Policy
from fedlearn.model.train import TrainConfig

ENV_PREFIX = "FEDLEARN_"
SECRET_KEY_FILE = "secret_key"
MIN_SECRET_LEN = 16
# Training lr of a base without one in its header (Base.fresh): batch training's default.
DEFAULT_BASE_LR = TrainConfig().lr
# The model owns the gate's defaults (model/ imports nothing of ours); settings refer to them.
_GATE = GateSettings()
_ORIGIN = re.compile(r"https?://[^/\s:]+(:\d{1,5})?")  # what a browser sends in Origin


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable, the value and the fix."""


def _positive_finite(default: float, description: str) -> Any:
    """A ``> 0``, finite float field (a bound that ``inf`` would switch off unnoticed)."""
    return Field(default=default, gt=0, allow_inf_nan=False, description=description)


def _share(default: float, description: str) -> Any:
    """A float field in [0, 1] (a probability, a fraction)."""
    return Field(default=default, ge=0, le=1, allow_inf_nan=False, description=description)


class Settings(BaseSettings):
    """fedlearn's settings. Field ``x`` is read from ``FEDLEARN_X``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        populate_by_name=True,
        validate_default=True,
        frozen=True,
    )

    # --- where things live ---------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("FEDLEARN_REDIS_URL", "REDIS_URL"),
        description="redis://host:port/0 of a Redis or a cluster node; unset: embedded Redis",
    )
    data_dir: Path = Field(
        default=Path(".fedlearn"),
        description="local state folder: Redis data, signing key, event log, runtime file",
    )
    redis_appendfsync: Literal["always", "everysec", "no"] = Field(
        default="everysec", description="the embedded Redis' AOF fsync ('always': lose nothing)"
    )
    n_shards: int = Field(
        default=64,
        ge=1,
        le=16384,
        description="virtual shards the trainers share; fixed per deployment (Redis records it)",
    )

    # --- auth ----------------------------------------------------------------------------
    auth: bool = Field(default=True, description="bearer tokens required; 'off' for local dev")
    secret_key: SecretStr | None = Field(
        default=None, description="signs the tokens; unset: DATA_DIR/secret_key (`fedlearn up`)"
    )
    previous_secret_keys: list[SecretStr] = Field(
        default_factory=list,
        description="JSON list of retired keys still accepted (key rotation), oldest first",
    )
    user_token_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=1, description="lifetime of a user token by default"
    )
    admin_token_ttl_s: int = Field(default=3600, ge=1, description="lifetime of an admin token")
    max_token_ttl_s: int = Field(
        default=90 * 24 * 3600, ge=1, description="the longest lifetime a token can be given"
    )

    # --- ingest --------------------------------------------------------------------------
    max_events_per_request: int = Field(
        default=500, ge=1, le=100_000, description="events in one POST /v1/events"
    )
    max_body_bytes: int = Field(
        default=1 << 20, ge=1024, description="a larger request body is refused (413)"
    )
    stream_maxlen: int = Field(
        default=100_000, ge=1, description="entries per shard stream; beyond it ingest answers 429"
    )
    dedupe_window_s: int = Field(
        default=24 * 3600, ge=1, description="how long an event_id is remembered (retries)"
    )
    retry_after_s: int = Field(default=2, ge=1, description="Retry-After of a 429")
    # Per user token (admins are not limited), shared by every API process; 0 turns one off.
    # A person on the demo page sends a few events a second; these stop floods, not people.
    rate_events_per_s: float = Field(
        default=50.0, ge=0, allow_inf_nan=False, description="events per second per user token"
    )
    rate_events_burst: int = Field(
        default=1000, ge=1, description="events at once per user; a rate of 0 turns the limit off"
    )
    rate_rank_per_s: float = Field(
        default=10.0, ge=0, allow_inf_nan=False, description="rank calls per second per user"
    )
    rate_rank_burst: int = Field(default=50, ge=1, description="rank calls at once per user")

    # --- ranking -------------------------------------------------------------------------
    max_rank_items: int = Field(default=1000, ge=1, description="candidates per rank call")
    max_rank_cells: int = Field(
        default=20_000, ge=1, description="candidates x (context + item features) per rank call"
    )
    # One user's live prediction records; the oldest are dropped first (docs/OPERATIONS.md).
    prediction_max_per_user: int = Field(
        default=64, ge=1, description="a user's live prediction records"
    )
    prediction_max_bytes_per_user: int = Field(
        default=8 << 20, ge=1024, description="bytes of a user's live prediction records"
    )
    prediction_ttl_s: int = Field(
        default=3600, ge=1, le=30 * 24 * 3600, description="a prediction record expires after this"
    )
    base_cache_size: int = Field(default=4, ge=1, description="bases kept decoded per process")
    # Retention (aggregate/retention.py): 24 hourly rounds' worth of rollback, ~1.4 GB a day
    # of base bytes at a million items otherwise.
    base_keep_versions: int = Field(
        default=24, ge=0, le=100_000,
        description="base versions kept besides the current one and those in use; older ones "
        "are pruned after each promotion",
    )  # fmt: skip
    # Exploration in rank (model/policy.py): the operator's policy, and the limits within
    # which a request may choose its own (beyond them: 422).
    explore_policy: Literal["greedy", "epsilon", "softmax"] = Field(
        default="greedy", description="how rank explores when a request names no policy"
    )
    explore_epsilon: float = _share(0.1, "epsilon of an epsilon policy that names none")
    explore_temperature: float = _positive_finite(
        0.1, "temperature (on click probabilities) of a softmax policy that names none"
    )
    explore_max_epsilon: float = _share(0.2, "the largest epsilon a rank request may ask for")
    explore_min_temperature: float = _positive_finite(
        0.02, "the lowest softmax temperature a rank request may ask for"
    )
    # The dashboard's served-vs-greedy estimate (jobs/tasks.py, beat): its cost is bounded by
    # the newest decisions it reads, not by the log's size.
    ope_dashboard_last: int = Field(
        default=10_000, ge=1, le=1_000_000,
        description="newest top-slot events the dashboard's served-vs-greedy estimate reads",
    )  # fmt: skip
    ope_dashboard_every_s: float = Field(
        default=300.0, ge=0, allow_inf_nan=False,
        description="how often beat re-estimates served vs greedy for the dashboard; 0: never",
    )  # fmt: skip
    # Partial bases (model/rowset.py): a session fetches the buckets of the rows it scores.
    base_bucket_rows: int = Field(
        default=2, ge=1, le=4096, description="rows per bucket of a partial base (at most, avg)"
    )
    max_base_rows_features: int = Field(
        default=1000, ge=1, description="feature names per POST /v1/base/{version}/rows"
    )
    base_prewarm_every_s: float = Field(
        default=1.0, ge=0, allow_inf_nan=False,
        description="how often each API worker looks for a new current base to load and index "
        "before its first session asks; 0: never",
    )  # fmt: skip

    # --- the trainers -------------------------------------------------------------------
    trainer_lease_ttl_ms: int = Field(
        default=5000, ge=1000, le=600_000, description="a dead trainer's shards move after this"
    )

    # --- the clones' online learning -----------------------------------------------------
    clone_lr_multiple: float = Field(
        default=1.0, gt=0, description="clone lr = this x the base's training lr"
    )
    # The defaults are the ones the offline replay chose on MovieLens (BENCHMARKS.md).
    clone_l2: float = Field(default=0.2, ge=0, description="pull of the delta toward the base")
    clone_bias_lr: float | None = Field(
        default=0.2, gt=0, description="step of a user's own intercept; unset: the clone lr"
    )
    clone_max_rows: int = Field(
        default=DEFAULT_MAX_ROWS, ge=1, description="cap on a delta's rows (LRU evicted)"
    )
    gate_eta: float = Field(
        default=_GATE.eta, gt=0, description="Hedge rate of the clone/base gate"
    )
    gate_decay: float = Field(
        default=_GATE.decay, gt=0, le=1, description="the gate's forgetting of past losses"
    )
    gate_blend: bool = Field(
        default=_GATE.blend,
        description="serve the gate's mixture of clone and base (else the likelier of the two)",
    )

    # --- federated aggregation (fedlearn/aggregate/config.py reads these) ----------------
    aggregation_every_min: int = Field(
        default=60, ge=0, description="minutes between rounds; 0 turns them off"
    )
    # A name of fedlearn/aggregate/strategies' registry, the one list of them; checked when
    # the round's config is built (config.py sits below aggregate/ and does not import it).
    aggregation_strategy: str = Field(
        default="fedavg", description="how a round folds the users' changes (a strategy's name)"
    )
    aggregation_clip_norm: float = Field(
        default=5.0, ge=0, description="a user's change is clipped to this norm; 0: no clipping"
    )
    aggregation_noise_multiplier: float = Field(
        default=0.0, ge=0, description="Gaussian noise (DP), as a multiple of the clip norm"
    )
    aggregation_min_users: int = Field(
        default=2, ge=1, description="a round with fewer users publishes nothing"
    )
    aggregation_min_row_users: int = Field(
        default=1,
        ge=1,
        description=(
            "a row needs this many users to be folded; user= rows never are (1: a film one "
            "user rated reaches the base, as in one global model; clip_norm bounds it)"
        ),
    )
    aggregation_max_weight: int = Field(
        default=100, ge=1, description="cap on a user's weight (events) in a round"
    )
    aggregation_server_lr: float = Field(
        default=1.0, gt=0, description="step of the base toward the folded change"
    )
    aggregation_momentum: float = Field(default=0.9, ge=0, lt=1, description="fedavgm's momentum")
    aggregation_trim_beta: float = Field(
        default=0.1, ge=0, lt=0.5, description="trimmed_mean's share cut at each end"
    )
    aggregation_lock_ttl_s: int = Field(
        default=900, ge=1, description="one round at a time: the lock's lifetime"
    )
    aggregation_buckets: int = Field(
        default=8, ge=1, description="partial sums per round, summed in parallel"
    )
    aggregation_max_delta_bytes: int = Field(
        default=8 << 20, ge=64, description="a user's larger delta record is rejected"
    )
    aggregation_max_user_norm: float = _positive_finite(
        1000.0, "a user's change above this norm is rejected"
    )
    aggregation_max_row_norm: float = _positive_finite(
        100.0, "a candidate base with a larger row is not published"
    )
    aggregation_max_base_features: int = Field(
        default=2_000_000, ge=1, description="a candidate base with more rows is not published"
    )
    aggregation_shadow_events: int = Field(
        default=5000, ge=0, description="recent events a candidate base is scored on; 0: no check"
    )
    aggregation_shadow_margin: float = Field(
        default=0.01, ge=0, allow_inf_nan=False,
        description="a candidate whose log loss is worse by more is not promoted",
    )  # fmt: skip
    aggregation_stale_s: float = _positive_finite(
        30.0, "a round without heartbeat this long is retried"
    )
    aggregation_task_time_limit_s: int = Field(
        default=600, ge=10, description="hard time limit of a round's task (soft: 90 %)"
    )
    monthly_time_limit_s: int = Field(
        default=3000, ge=10, description="hard time limit of the monthly retrain (soft: 90 %)"
    )
    monthly_crontab: str = Field(
        default="0 3 1 * *", description="when the monthly retrain runs; empty: never"
    )
    monthly_eventlog_dir: Path | None = Field(
        default=None, description="the event log it reads; unset: DATA_DIR/eventlog"
    )

    # --- drift: detected in the trainers, acted on (fedlearn/trainer/drift.py) ------------
    drift_detection: bool = Field(
        default=True, description="trainers watch their signals with River's ADWIN"
    )
    drift_chunk_events: int = Field(
        default=32, ge=1, description="events averaged into one detector observation"
    )
    drift_delta: float = Field(
        default=1e-4, gt=0, lt=1, description="ADWIN's confidence; smaller: fewer false alarms"
    )
    drift_early_round: bool = Field(
        default=True, description="a drift event starts an aggregation round early"
    )
    drift_early_round_min_s: float = _positive_finite(
        600.0, "at most one drift-triggered round per this many seconds"
    )
    drift_retrain: Literal["off", "propose", "start"] = Field(
        default="propose", description="when drift persists: record a proposal, or retrain"
    )
    drift_retrain_events: int = Field(
        default=5, ge=1, description="drift events within the window that count as persistent"
    )
    drift_retrain_window_s: float = _positive_finite(
        86_400.0, "the window of persistent drift; one retrain action per window"
    )

    # --- HTTP ----------------------------------------------------------------------------
    api_host: str = Field(default="127.0.0.1", description="address the API listens on")
    api_port: int = Field(default=8000, ge=0, le=65535, description="port the API listens on")
    api_workers: int = Field(default=2, ge=1, le=64, description="gunicorn worker processes")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="JSON list of web origins whose pages may call the API "
        '(["https://shop.example"]; "*": any); empty: same origin only',
    )

    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="`fedlearn up`: first port of the trainers' and Celery's /metrics "
        "(trainer i: PORT+i, Celery: PORT+trainers); 0: free ports, listed in DATA_DIR",
    )

    # --- logs ----------------------------------------------------------------------------
    log_format: Literal["text", "json"] = Field(
        default="text", description="text for people, json (one object a line) for log shippers"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="the least severe level logged"
    )

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not a web origin: write scheme://host[:port] with no path "
                    f'or trailing slash, e.g. https://shop.example:8443, or "*"'
                )
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("clone_lr_multiple", "clone_l2", "clone_bias_lr", "gate_eta")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("explore_max_epsilon", "explore_min_temperature")
    @classmethod
    def _explore_default_within_limit(cls, limit: float, info: ValidationInfo) -> float:
        # The operator's own default must be a policy a request could also ask for.
        name = (
            "explore_epsilon" if info.field_name == "explore_max_epsilon" else "explore_temperature"
        )
        default = info.data.get(name)
        too_far = default is not None and (
            default > limit if name == "explore_epsilon" else default < limit
        )
        if too_far:
            raise ValueError(
                f"the limit is {'below' if name == 'explore_epsilon' else 'above'} "
                f"{env_name(name)}={default}; move one of them"
            )
        return limit

    # --- derived -------------------------------------------------------------------------

    @property
    def explore(self) -> Policy:
        """The operator's exploration policy: what rank follows when a request names none."""
        return Policy.of(self.explore_policy, self.explore_epsilon, self.explore_temperature)

    @property
    def gate(self) -> GateSettings:
        """The clone/base gate's settings, as the trainer's updates take them."""
        return GateSettings(decay=self.gate_decay, eta=self.gate_eta, blend=self.gate_blend)

    def signing_keys(self) -> list[str]:
        """Keys for itsdangerous, oldest first, the signing one last.

        Raises :class:`ConfigError` when auth is on and no key is set or stored.
        """
        current = self.secret_key.get_secret_value() if self.secret_key else None
        if current is None:
            current = read_secret_key(self.data_dir)
        if current is None:
            raise ConfigError(
                f"{ENV_PREFIX}SECRET_KEY is not set and {self.data_dir / SECRET_KEY_FILE} does "
                f"not exist, but auth is on; set {ENV_PREFIX}SECRET_KEY to a random string of "
                f"at least {MIN_SECRET_LEN} characters, run `fedlearn up` (it generates one), or "
                f"set {ENV_PREFIX}AUTH=off for local development"
            )
        if len(current) < MIN_SECRET_LEN:
            raise ConfigError(
                f"{ENV_PREFIX}SECRET_KEY is {len(current)} characters; use at least "
                f"{MIN_SECRET_LEN} random ones (python -c 'import secrets; "
                f"print(secrets.token_urlsafe(32))')"
            )
        return [key.get_secret_value() for key in self.previous_secret_keys] + [current]

    def clone_hyper(self, base_hyper: dict[str, Any]) -> dict[str, float]:
        """``lr``, ``l2``, ``bias_lr`` and ``max_rows`` of a clone of a base trained with
        ``base_hyper``."""
        base_lr = base_hyper.get("lr", DEFAULT_BASE_LR)
        if not isinstance(base_lr, int | float) or not base_lr > 0:
            base_lr = DEFAULT_BASE_LR
        lr = float(base_lr) * self.clone_lr_multiple
        bias_lr = lr if self.clone_bias_lr is None else self.clone_bias_lr
        return {"lr": lr, "l2": self.clone_l2, "bias_lr": bias_lr, "max_rows": self.clone_max_rows}


def setting_default(name: str) -> Any:
    """The default of setting ``name``: what code outside the service's settings (a dataclass,
    a CLI option) uses, so that each default is written here once."""
    return Settings.model_fields[name].get_default(call_default_factory=True)


def env_name(field: str) -> str:
    """The environment variable that setting ``field`` is read from."""
    return "REDIS_URL" if field == "redis_url" else f"{ENV_PREFIX}{field.upper()}"


def _describe(exc: ValidationError, overrides: dict[str, Any]) -> str:
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        if field in overrides:
            where, value = field, overrides[field]
        else:
            where = env_name(field)
            if field == "redis_url" and "FEDLEARN_REDIS_URL" in os.environ:
                where = "FEDLEARN_REDIS_URL"
            value = os.environ.get(where, error.get("input"))
        shown = "<hidden>" if "secret" in field else repr(value)
        message = error["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        lines.append(f"{where}={shown}: {message}")
    return "invalid settings: " + "; ".join(lines)


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables under which :func:`load_settings` in a child process (a gunicorn
    worker, a trainer started by ``fedlearn up``) rebuilds ``settings``."""
    env: dict[str, str] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, list):
            text = json.dumps(
                [v.get_secret_value() if isinstance(v, SecretStr) else v for v in value]
            )
        elif isinstance(value, bool):
            text = "on" if value else "off"
        else:
            text = str(value)
        # FEDLEARN_REDIS_URL, not REDIS_URL: it wins over a REDIS_URL the child may inherit.
        key = "FEDLEARN_REDIS_URL" if name == "redis_url" else env_name(name)
        env[key] = text
    return env


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with ``overrides`` (field names) taking precedence.

    Raises :class:`ConfigError` naming each bad variable and its value.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, overrides)) from None
    except SettingsError as exc:  # a list or dict variable that is not JSON
        match = re.search(r'field "(\w+)"', str(exc))
        field = match.group(1) if match else "?"
        name = env_name(field)
        shown = "<hidden>" if "secret" in field else repr(os.environ.get(name))
        raise ConfigError(
            f"invalid settings: {name}={shown}: not valid JSON; lists are written as JSON, "
            f'e.g. {name}=\'["first", "second"]\''
        ) from None


def read_secret_key(data_dir: str | os.PathLike[str]) -> str | None:
    """The key stored in ``<data_dir>/secret_key``, or ``None`` when there is none."""
    path = Path(data_dir) / SECRET_KEY_FILE
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def ensure_secret_key(data_dir: str | os.PathLike[str]) -> str:
    """The stored key, generating one (0600, written atomically) on first use."""
    existing = read_secret_key(data_dir)
    if existing is not None:
        return existing
    folder = Path(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{SECRET_KEY_FILE}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(key + "\n")
        # link, not replace: when two processes race, the first key stays and both use it.
        os.link(tmp, folder / SECRET_KEY_FILE)
    except FileExistsError:
        pass
    finally:
        Path(tmp).unlink(missing_ok=True)
    stored = read_secret_key(folder)
    assert stored is not None
    return stored
